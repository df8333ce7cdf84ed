"""`manage.py ingest_email` over .eml files, a Maildir, an mbox and an IMAP mailbox (a small
IMAP4rev1 server in this process), and the poll-imap job and its schedule."""

from __future__ import annotations

import io
import mailbox
import re
import socketserver
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from queues import jobs
from queues.models import InboundMessage, Task
from queues.tests.inbound_support import build_intake_clinic

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).parent / "email_corpus"
SOME = [
    "01_multipart_alternative.eml",
    "02_attachments_pdf_image.eml",
    "07_no_subject.eml",
    "13_reply.eml",
    "16_not_an_email.eml",
]


@pytest.fixture
def clinic():
    return build_intake_clinic()


def ingest(*args) -> str:
    out = io.StringIO()
    call_command("ingest_email", *args, stdout=out)
    return out.getvalue()


def counts(output: str) -> dict[str, int]:
    found = {}
    for key, words in (
        ("created", "new tasks"),
        ("resent", "seen before"),
        ("replies", "replies added"),
        ("duplicates", "linked to an open task"),
        ("failed", "failed"),
    ):
        found[key] = int(re.search(rf"^\s*(\d+) {words}", output, re.MULTILINE).group(1))
    return found


def test_eml_files_become_tasks_and_a_second_run_creates_nothing(clinic):
    paths = [str(CORPUS / name) for name in SOME]
    first = ingest("--eml", *paths)
    assert counts(first) == {"created": 3, "resent": 0, "replies": 1, "duplicates": 0, "failed": 1}
    failed = InboundMessage.objects.get(status="failed")
    assert f"failed, on the Failed intake page (inbound {failed.pk})" in first
    assert Task.objects.count() == 3

    second = ingest("--eml", *paths)
    # The reply was recorded once: its resend adds nothing; the non-email fails again.
    assert counts(second)["created"] == 0
    assert Task.objects.count() == 3
    assert (
        Task.objects.get(external_id="CAF=referral-0001@riverside-cardio.example")
        .events.filter(kind="commented")
        .count()
        == 1
    )


def test_a_maildir_is_read_in_order(clinic, tmp_path):
    box = mailbox.Maildir(tmp_path / "intake", create=True)
    for name in SOME:
        box.add((CORPUS / name).read_bytes())
    output = ingest("--maildir", str(tmp_path / "intake"))
    assert counts(output)["created"] + counts(output)["replies"] == 4
    assert counts(output)["failed"] == 1
    assert Task.objects.count() == 3


def test_an_mbox_is_read_without_its_separator_lines(clinic, tmp_path):
    path = tmp_path / "archive.mbox"
    box = mailbox.mbox(path, create=True)
    for name in ("01_multipart_alternative.eml", "05_quoted_printable.eml", "06_base64_body.eml"):
        box.add((CORPUS / name).read_bytes())
    box.close()
    output = ingest("--mbox", str(path))
    assert counts(output)["created"] == 3
    assert {t.subject for t in Task.objects.all()} == {
        "Referral for MRN 204611 - cardiology consult",
        "Voicemail transcript",
        "Address change",
    }
    raw = bytes(InboundMessage.objects.get(task__subject="Address change").payload)
    assert not raw.startswith(b"From ")


def test_bad_arguments_are_refused_with_what_to_give(clinic, tmp_path):
    with pytest.raises(CommandError, match="Say what to read"):
        ingest()
    with pytest.raises(CommandError, match="No such file"):
        ingest("--eml", str(tmp_path / "missing.eml"))
    with pytest.raises(CommandError, match="is not a Maildir"):
        ingest("--maildir", str(tmp_path))
    with pytest.raises(CommandError, match="--imap needs IMAP_HOST"):
        ingest("--imap")


# --- IMAP ----------------------------------------------------------------------------------


class FakeMailbox:
    """What the in-process IMAP server serves: messages by UID, their flags, moves."""

    def __init__(self, messages: list[bytes]):
        self.messages = {uid: raw for uid, raw in enumerate(messages, start=1)}
        self.flags: dict[int, set[str]] = {uid: set() for uid in self.messages}
        self.moved: dict[int, str] = {}
        self.logins: list[tuple[str, str]] = []


class _ImapHandler(socketserver.StreamRequestHandler):
    """IMAP4rev1, as much as imaplib and ingest_email use: CAPABILITY, LOGIN, SELECT,
    UID SEARCH UNSEEN, UID FETCH (BODY.PEEK[]), UID STORE, UID MOVE, CLOSE, LOGOUT."""

    def send(self, line: str | bytes) -> None:
        self.wfile.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")

    def handle(self) -> None:
        box: FakeMailbox = self.server.box
        self.send("* OK fake IMAP ready")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            tag, command, *rest = line.decode().rstrip("\r\n").split(" ", 2)
            args = rest[0] if rest else ""
            command = command.upper()
            if command == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1 MOVE")
            elif command == "LOGIN":
                user, password = (a.strip('"') for a in args.split(" ", 1))
                box.logins.append((user, password))
                if password != "secret":
                    self.send(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")
                    continue
            elif command == "SELECT":
                self.send(f"* {len(box.messages)} EXISTS")
                self.send("* FLAGS (\\Seen \\Deleted)")
                self.send(f"{tag} OK [READ-WRITE] SELECT completed")
                continue
            elif command == "UID":
                self.uid(tag, args, box)
                continue
            elif command == "LOGOUT":
                self.send("* BYE logging out")
                self.send(f"{tag} OK LOGOUT completed")
                return
            self.send(f"{tag} OK {command} completed")

    def uid(self, tag: str, args: str, box: FakeMailbox) -> None:
        verb, _, rest = args.partition(" ")
        verb = verb.upper()
        if verb == "SEARCH":
            unseen = [
                str(uid)
                for uid in sorted(box.messages)
                if "\\Seen" not in box.flags[uid] and uid not in box.moved
            ]
            self.send("* SEARCH " + " ".join(unseen))
        elif verb == "FETCH":
            uid = int(rest.split(" ")[0])
            raw = box.messages[uid]
            self.send(f"* {uid} FETCH (UID {uid} BODY[] {{{len(raw)}}}".encode() + b"\r\n" + raw)
            self.send(")")
        elif verb == "STORE":
            uid = int(rest.split(" ")[0])
            box.flags[uid] |= set(re.findall(r"\\\w+", rest))
            self.send(f"* {uid} FETCH (UID {uid} FLAGS ({' '.join(sorted(box.flags[uid]))}))")
        elif verb == "MOVE":
            uid, folder = rest.split(" ", 1)
            box.moved[int(uid)] = folder.strip('"')
        self.send(f"{tag} OK UID {verb} completed")


@pytest.fixture
def imap_server(settings):
    messages = [(CORPUS / name).read_bytes() for name in SOME]
    box = FakeMailbox(messages)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ImapHandler)
    server.daemon_threads = True
    server.box = box
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.IMAP_HOST = "127.0.0.1"
    settings.IMAP_PORT = server.server_address[1]
    settings.IMAP_SSL = False
    settings.IMAP_USER = "intake@clinic.example"
    settings.IMAP_PASSWORD = "secret"
    settings.IMAP_FOLDER = "INBOX"
    settings.IMAP_MOVE_TO = ""
    yield box
    server.shutdown()
    server.server_close()


def test_imap_reads_the_unseen_messages_and_flags_them_seen(clinic, imap_server):
    output = ingest("--imap")
    assert counts(output)["created"] == 3 and counts(output)["failed"] == 1
    assert imap_server.logins == [("intake@clinic.example", "secret")]
    # Every message was stored (as a task or a failed row), so every one is marked read.
    assert all("\\Seen" in flags for flags in imap_server.flags.values())
    # The next poll finds nothing new.
    assert counts(ingest("--imap"))["created"] == 0
    assert InboundMessage.objects.count() == len(SOME)


def test_imap_can_move_messages_instead(clinic, imap_server, settings):
    settings.IMAP_MOVE_TO = "Processed"
    ingest("--imap", "--limit", "2")
    assert imap_server.moved == {1: "Processed", 2: "Processed"}
    assert Task.objects.count() == 2


def test_a_refused_imap_login_is_a_clear_error(clinic, imap_server, settings):
    settings.IMAP_PASSWORD = "wrong"
    with pytest.raises(CommandError, match=r"IMAP login as 'intake@clinic\.example' refused"):
        ingest("--imap")
    assert not InboundMessage.objects.exists()


def test_the_poll_job_reads_the_mailbox_and_returns_counts_only(clinic, imap_server):
    result = jobs.poll_imap()
    failed = InboundMessage.objects.get(status="failed")
    assert result == {
        "created": 3,
        "resent": 0,
        "replies": 1,
        "duplicates": 0,
        "failed": 1,
        "errors": 0,
        "failed_inbound_ids": [failed.pk],
    }


def test_the_poll_job_does_nothing_without_a_mailbox(clinic, settings):
    settings.IMAP_HOST = ""
    assert jobs.poll_imap() == {"skipped": "IMAP_HOST is not set"}


def test_the_poll_schedule_exists_only_where_imap_is_configured(settings):
    settings.IMAP_HOST = "imap.clinic.example"
    call_command("setup_schedules", stdout=io.StringIO())
    schedule = Schedule.objects.get(name="poll-imap")
    assert schedule.func == "queues.jobs.poll_imap"
    settings.IMAP_HOST = ""
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    assert not Schedule.objects.filter(name="poll-imap").exists()
    assert "Removed schedule poll-imap" in out.getvalue()
