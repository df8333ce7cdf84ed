"""Real-world message shapes (queues/tests/email_corpus/) through email intake: each becomes a
task or a failed-intake row, never an unhandled error, and reads the way a person expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues.intake import email as email_adapter
from queues.models import Attachment, InboundMessage, Task
from queues.tests.inbound_support import build_intake_clinic
from routing.intake import intake_receive

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).parent / "email_corpus"
FILES = sorted(CORPUS.glob("*.eml"))


@pytest.fixture
def clinic():
    return build_intake_clinic()


def receive(name: str):
    raw = (CORPUS / name).read_bytes()
    return intake_receive(
        channel="email", payload=raw, content_type="message/rfc822", actor="system:email"
    )


def task_of(name: str) -> Task:
    inbound, result = receive(name)
    assert result is not None, inbound.error_fields
    return result.task


def attachments(task: Task) -> list[tuple[str, str, int]]:
    return [(a.filename, a.content_type, a.size) for a in Attachment.objects.filter(task=task)]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_message_becomes_a_task_or_a_failed_row(clinic, path):
    inbound, result = receive(path.name)
    inbound.refresh_from_db()
    assert bytes(inbound.payload) == path.read_bytes()  # kept exactly as it came
    if result is None:
        assert inbound.status == "failed" and inbound.error
    else:
        assert inbound.status in ("parsed", "duplicate", "reply", "resent")
        assert inbound.task == result.task


def test_multipart_alternative_prefers_the_plain_text_and_keeps_clean_html(clinic):
    task = task_of("01_multipart_alternative.eml")
    assert task.subject == "Referral for MRN 204611 - cardiology consult"
    assert task.body.startswith("Hello,\n\nPlease schedule a cardiology consult")
    assert "<" not in task.body
    assert task.metadata["html_body"].startswith("<div><p>Hello,</p>")
    assert task.patient_mrn == "204611"
    assert task.external_id == "CAF=referral-0001@riverside-cardio.example"
    assert task.metadata["email"]["from"] == (
        "Dr. Amara Okafor <referrals@riverside-cardio.example>"
    )
    assert task.received_at.isoformat() == "2026-03-02T14:15:00+00:00"
    assert task.task_type.code == "referral"


def test_pdf_and_image_attachments_are_stored_with_the_task(clinic):
    task = task_of("02_attachments_pdf_image.eml")
    stored = attachments(task)
    assert [(name, kind) for name, kind, _ in stored] == [
        ("EOB-77812.pdf", "application/pdf"),
        ("card.png", "image/png"),
    ]
    pdf = Attachment.objects.get(task=task, filename="EOB-77812.pdf")
    with pdf.file.open("rb") as handle:
        assert handle.read().startswith(b"%PDF-1.4")
    assert task.task_type.code == "claim_denial"


@pytest.mark.parametrize(
    ("name", "subject", "sender"),
    [
        (
            "03_rfc2047_utf8_b.eml",
            "Rückruf bitte \u2013 Termin verschieben",
            "José Müller <jose.muller@mail.example>",
        ),
        (
            "04_rfc2047_utf8_q.eml",
            "Demande de dossier médical — urgent",
            "Renée François <renee@mail.example>",
        ),
    ],
)
def test_encoded_headers_are_decoded(clinic, name, subject, sender):
    task = task_of(name)
    assert task.subject == subject
    assert task.metadata["email"]["from"] == sender


def test_quoted_printable_and_base64_bodies_are_decoded(clinic):
    qp = task_of("05_quoted_printable.eml")
    assert "Caller: Zoë Martin" in qp.body
    assert "refill for her blood pressure medication" in qp.body  # soft line breaks joined
    assert "Café = pharmacy" in qp.body
    b64 = task_of("06_base64_body.eml")
    assert b64.body == "Please update my address to 12 Elm Street.\nMy insurance card changed too."


def test_a_missing_subject_gets_one_naming_the_sender(clinic):
    assert task_of("07_no_subject.eml").subject == "(no subject) from Pat Lee"


def test_a_missing_message_id_gets_a_stable_one_so_a_resend_is_recognised(clinic):
    first = task_of("08_no_message_id.eml")
    assert first.external_id.startswith("sha256:")
    _, again = receive("08_no_message_id.eml")
    assert again.outcome == "resent" and again.task == first
    assert Task.objects.count() == 1


def test_html_only_mail_is_read_as_text_and_its_html_cleaned(clinic):
    task = task_of("09_html_only_script.eml")
    assert "I need a refill of my inhaler & a new spacer." in task.body
    assert "document.cookie" not in task.body
    html = task.metadata["html_body"]
    for unsafe in ("<script", "onload", "onclick", "javascript:", "<img", "tracker.example"):
        assert unsafe not in html
    assert "<iframe" not in html and "<style" not in html
    assert '<a href="https://portal.example/msg/9"' in html


def test_a_wrong_boundary_is_repaired_and_the_text_kept(clinic):
    task = task_of("10_broken_boundary.eml")
    assert task.body == "Scanned referral for a sleep study."
    assert "StartBoundaryNotFoundDefect" in task.metadata["email"]["defects"]


def test_bad_base64_in_an_attachment_still_gives_a_task_and_notes_the_defect(clinic):
    task = task_of("11_bad_base64.eml")
    assert task.body == "Results attached."
    assert [name for name, _, _ in attachments(task)] == ["results.pdf"]
    assert "InvalidBase64CharactersDefect" in task.metadata["email"]["defects"]


def test_an_unknown_charset_falls_back_to_a_readable_decoding(clinic):
    task = task_of("12_unknown_charset.eml")
    assert task.body == "The reminder for Mr. Müller could not be delivered."


def test_a_reply_joins_its_task_as_a_comment(clinic):
    original = task_of("01_multipart_alternative.eml")
    inbound, result = receive("13_reply.eml")
    assert result.outcome == "reply"
    assert result.task == original
    assert Task.objects.count() == 1
    assert inbound.task == original
    comment = original.events.filter(kind="commented").get()
    assert "The patient prefers morning appointments." in comment.reason


def test_a_reply_to_a_resolved_task_reopens_it(clinic):
    from routing import services as routing_services

    original = task_of("01_multipart_alternative.eml")
    assert original.assignee is not None  # pushed to the front desk's agent
    routing_services.task_resolve(task_id=original.pk, actor=original.assignee, outcome="Done")
    _, result = receive("13_reply.eml")
    assert result.outcome == "reply"
    original.refresh_from_db()
    assert original.is_open
    assert original.reopen_count == 1


def test_a_reply_whose_original_is_unknown_becomes_a_task(clinic):
    task = task_of("13_reply.eml")
    assert task.subject.startswith("Re: Referral")


def test_a_forwarded_message_is_kept_whole_as_an_eml_attachment(clinic):
    task = task_of("14_forwarded_message.eml")
    assert task.body == "Forwarding the discharge summary for the referral."
    ((name, kind, _),) = attachments(task)
    assert (name, kind) == ("Discharge summary.eml", "message/rfc822")


def test_rfc2231_file_names_are_decoded(clinic):
    task = task_of("15_rfc2231_filename.eml")
    assert [name for name, _, _ in attachments(task)] == ["Befünd März.pdf"]


def test_what_is_not_an_email_is_kept_as_failed_intake(clinic):
    inbound, result = receive("16_not_an_email.eml")
    assert result is None
    inbound.refresh_from_db()
    assert inbound.status == "failed"
    assert "Not an email message" in inbound.error
    assert not Task.objects.exists()


def test_latin1_and_nested_outlook_messages(clinic):
    assert task_of("17_latin1_body.eml").body == (
        "Le patient souhaite déplacer son rendez-vous à jeudi."
    )
    outlook = task_of("18_outlook_related.eml")
    assert outlook.patient_mrn == "RFP482211"
    assert outlook.body.startswith("Hi team,\n\nThe MRI for MRN: RFP482211")
    assert sorted(name for name, _, _ in attachments(outlook)) == ["logo.png", "order.pdf"]


def test_an_empty_body_and_garbled_headers_still_give_tasks(clinic):
    assert task_of("19_empty_body.eml").subject == "Call me"
    garbled = task_of("20_garbled_headers.eml")
    assert "request for a callback" in garbled.body
    assert garbled.received_at is None
    assert garbled.external_id == "no-angle-brackets@weird.example"


@pytest.mark.parametrize(
    ("text", "mrn"),
    [
        ("Referral for MRN 12345", "12345"),
        ("re: mrn: RFP482211 question", "RFP482211"),
        ("Patient MRN#A-77812 called", "A-77812"),
        ("Medical record number 555123", "555123"),
        ("The MRN is missing", ""),
        ("MRNs are confusing", ""),
    ],
)
def test_an_mrn_is_taken_from_the_subject_only_when_one_is_named(text, mrn):
    raw = f"From: a@b.example\nSubject: {text}\n\nHello\n".encode()
    assert email_adapter.parse(raw, None).patient_mrn == mrn


def test_nul_characters_never_reach_the_database(clinic):
    raw = b"From: a@b.example\nSubject: Bad\x00bytes\nMessage-ID: <nul@b.example>\n\nHi\x00there\n"
    _, result = intake_receive(
        channel="email", payload=raw, content_type="message/rfc822", actor="system:email"
    )
    assert (result.task.subject, result.task.body) == ("Badbytes", "Hithere")
    assert InboundMessage.objects.get().status == "parsed"
