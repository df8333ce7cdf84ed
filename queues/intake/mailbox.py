"""Where inbound email is read from: .eml files, a Maildir, an mbox file, an IMAP mailbox.

Each source yields `MailItem`s: a label for the summary, the raw RFC 822 bytes exactly as
stored, and `done()`, called once the message is safely stored as an InboundMessage (as a
task or as a failed-intake row). Files, Maildirs and mboxes are only read: reading them again
is safe, because intake recognises a resend by its Message-ID (or the hash of its bytes). An
IMAP message is fetched with BODY.PEEK (it stays unseen) and flagged \\Seen, or moved to
another folder, only in `done()`: a crash in between means it is read again next time, and
recognised as a resend.
"""

from __future__ import annotations

import dataclasses
import imaplib
import mailbox
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _nothing() -> None:
    return None


@dataclasses.dataclass(frozen=True)
class MailItem:
    label: str
    raw: bytes
    done: Callable[[], None] = _nothing


def eml_items(paths: list[str | Path]) -> Iterator[MailItem]:
    for path in paths:
        yield MailItem(str(path), Path(path).read_bytes())


def maildir_items(path: str | Path) -> Iterator[MailItem]:
    box = mailbox.Maildir(str(path), factory=None, create=False)
    for key in sorted(box.keys()):
        with box.get_file(key) as handle:
            yield MailItem(f"{path}:{key}", handle.read())


def mbox_items(path: str | Path) -> Iterator[MailItem]:
    box = mailbox.mbox(str(path), factory=None, create=False)
    try:
        for n, key in enumerate(box.keys()):
            # get_bytes: the message without mbox's "From " separator line
            yield MailItem(f"{path}#{n + 1}", box.get_bytes(key))
    finally:
        box.close()


@dataclasses.dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    use_ssl: bool = True
    move_to: str = ""

    @classmethod
    def from_settings(cls) -> ImapConfig:
        from django.conf import settings

        return cls(
            host=settings.IMAP_HOST,
            port=settings.IMAP_PORT,
            user=settings.IMAP_USER,
            password=settings.IMAP_PASSWORD,
            folder=settings.IMAP_FOLDER,
            use_ssl=settings.IMAP_SSL,
            move_to=settings.IMAP_MOVE_TO,
        )


class ImapError(Exception):
    """The mailbox could not be read; the message says what to check."""


def _check(response: tuple, what: str) -> list:
    kind, data = response
    if kind != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
        raise ImapError(f"IMAP {what} failed: {detail or kind}")
    return data


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def imap_session(config: ImapConfig) -> Iterator[imaplib.IMAP4]:
    try:
        if config.use_ssl:
            connection = imaplib.IMAP4_SSL(
                config.host, config.port, ssl_context=ssl.create_default_context(), timeout=30
            )
        else:
            connection = imaplib.IMAP4(config.host, config.port, timeout=30)
    except (OSError, imaplib.IMAP4.error) as error:
        raise ImapError(f"Cannot reach {config.host}:{config.port}: {error}") from None
    try:
        try:
            connection.login(config.user, config.password)
        except imaplib.IMAP4.error as error:
            raise ImapError(f"IMAP login as {config.user!r} refused: {error}") from None
        _check(connection.select(_quoted(config.folder)), f"SELECT {config.folder}")
        yield connection
        connection.close()
    finally:
        with suppress(OSError, imaplib.IMAP4.error):
            connection.logout()


def imap_items(connection: imaplib.IMAP4, config: ImapConfig, limit: int) -> Iterator[MailItem]:
    """Unseen messages of the selected folder, oldest first, at most `limit`."""
    uids = _check(connection.uid("SEARCH", None, "UNSEEN"), "SEARCH UNSEEN")[0].split()
    for uid in uids[:limit]:
        data = _check(connection.uid("FETCH", uid, "(BODY.PEEK[])"), f"FETCH {uid.decode()}")
        raw = next((part[1] for part in data if isinstance(part, tuple)), None)
        if raw is None:
            continue  # expunged by another client meanwhile

        def done(uid: bytes = uid) -> None:
            if config.move_to:
                if b"MOVE" in b" ".join(_capabilities(connection)):
                    _check(connection.uid("MOVE", uid, _quoted(config.move_to)), "MOVE")
                    return
                _check(connection.uid("COPY", uid, _quoted(config.move_to)), "COPY")
                _check(connection.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "STORE")
                _check(connection.expunge(), "EXPUNGE")
            else:
                _check(connection.uid("STORE", uid, "+FLAGS", "(\\Seen)"), "STORE \\Seen")

        yield MailItem(f"imap:{config.folder}:{uid.decode()}", raw, done)


def _capabilities(connection: imaplib.IMAP4) -> list[bytes]:
    return [c.encode() if isinstance(c, str) else c for c in connection.capabilities]
