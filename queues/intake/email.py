"""Email adapter: one RFC 822 message → one TaskDraft.

Read with the standard library's `email` package under `email.policy.default` (the modern
policy: RFC 2047 headers and RFC 2231 filenames decoded, structured address and date
headers). Real mail is often broken; this module reads what it can and never lets the
parser's surprises escape: a message with a bad boundary, bad base64 or an unknown charset
still becomes a task with the text that could be read. Only a payload that is not an email
at all (no headers) is refused, with an IntakeError.

- body: the text/plain part, else the HTML part converted to text; the HTML itself, cleaned
  by nh3 (no scripts, styles, event handlers or remote images), is kept in
  `metadata["html_body"]` for the task page, which shows it in a sandboxed frame;
- every other leaf part (and a forwarded message, as a whole `.eml`) is an attachment;
- Message-ID → external_id (a hash of the raw bytes when there is none, so a resend of the
  same bytes is still recognised); In-Reply-To and References → `in_reply_to`;
- a patient only when the subject or body names an MRN ("MRN 12345", "MRN: RFP123456").
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.errors import StartBoundaryNotFoundDefect
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any

import nh3

from queues.intake.draft import AttachmentDraft, IntakeError, TaskDraft
from queues.models import Channel

MAX_BODY_CHARS = 100_000
MAX_HTML_CHARS = 200_000
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
# Remote images are tracking pixels as often as not: a staff member opening a task must not
# tell the sender so. Inline (cid:) images arrive as attachments instead.
HTML_TAGS = set(nh3.ALLOWED_TAGS) - {"img", "area", "map"}

MRN_RE = re.compile(
    r"\b(?:MRN|medical\s+record\s+(?:number|no\.?|#))\s*[:#-]?\s*([A-Z0-9][A-Z0-9-]{2,38})\b",
    re.IGNORECASE,
)
MESSAGE_ID_RE = re.compile(r"<([^<>\s]+)>")


# --- headers -------------------------------------------------------------------------------


def _header(message: EmailMessage, name: str) -> str:
    """A header's decoded text, or its raw text when the modern parser chokes on it."""
    try:
        value = message.get(name)
        return "" if value is None else str(value).strip()
    except Exception:  # the header parser has known crashes on malformed input
        return _raw_header(message, name)


def _message_ids(value: str) -> list[str]:
    found = MESSAGE_ID_RE.findall(value)
    if not found and value.strip():
        found = [value.strip().strip("<>")]
    return [f for f in found if f]


def _raw_header(message: EmailMessage, name: str) -> str:
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            return re.sub(r"\s+", " ", str(raw)).strip()
    return ""


def _sender(message: EmailMessage) -> tuple[str, str]:
    """(display name, address) of the From header, as far as it can be read."""
    with contextlib.suppress(Exception):  # the address parser has known crashes
        addresses = message["From"].addresses if message["From"] is not None else ()
        if addresses and addresses[0].addr_spec not in ("", "<>"):
            return addresses[0].display_name, addresses[0].addr_spec
    pairs = [(n, a) for n, a in getaddresses([_raw_header(message, "From")]) if "@" in a]
    return pairs[0] if pairs else ("", "")


def _date(message: EmailMessage) -> datetime | None:
    text = _header(message, "Date")
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- parts ---------------------------------------------------------------------------------


def _decoded(part: EmailMessage) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        raw = part.get_payload()
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else b""
    return data


def _text(part: EmailMessage) -> str:
    """A text part's content; an unknown or wrong charset falls back to UTF-8, then Latin-1."""
    # LookupError for an unknown charset, and the parser's own surprises
    with contextlib.suppress(Exception):
        content = part.get_content()
        if isinstance(content, str):
            return content
    data = _decoded(part)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    """The leaf parts in order; a forwarded message (message/rfc822) counts as one leaf."""
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        yield part
        return
    children = part.get_payload()
    if not isinstance(children, list):  # a multipart whose boundary was never found
        yield part
        return
    for child in children:
        yield from _leaves(child)


def _walk(message: EmailMessage) -> list[EmailMessage]:
    try:
        return list(message.walk())
    except Exception:
        return [message]


def _body_parts(message: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    """(text/plain part, text/html part) of the message's body, either may be None."""
    plain = html = None
    with contextlib.suppress(Exception):
        plain = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
    if plain is None and html is None:
        # A broken multipart: take the first inline text leaf that get_body() could not see.
        for leaf in _leaves(message):
            if leaf.get_content_maintype() == "text" and not _is_attachment(leaf):
                if leaf.get_content_subtype() == "html":
                    html = html or leaf
                else:
                    plain = plain or leaf
    if plain is None and html is None and isinstance(message.get_payload(), str):
        plain = message  # a multipart that could not be split: its raw text, as it is
    return plain, html


def _filename(part: EmailMessage) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return (name or "").strip()


def _is_attachment(part: EmailMessage) -> bool:
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    return disposition == "attachment" or bool(_filename(part))


def _attachments(
    message: EmailMessage, body_parts: tuple[EmailMessage | None, ...]
) -> list[AttachmentDraft]:
    drafts = []
    for leaf in _leaves(message):
        if leaf is message and not leaf.is_multipart():
            continue  # a single-part message is its own body
        if any(leaf is part for part in body_parts if part is not None):
            continue
        if leaf.get_content_maintype() == "multipart":
            continue  # an unreadable multipart: its text was taken as the body
        if leaf.get_content_type() == "message/rfc822":
            inner = leaf.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else None
            content = inner.as_bytes() if inner is not None else _decoded(leaf)
            subject = _header(inner, "Subject") if inner is not None else ""
            name = _filename(leaf) or f"{(subject or 'forwarded message')[:80]}.eml"
            drafts.append(AttachmentDraft(name, "message/rfc822", content))
            continue
        if leaf.get_content_maintype() == "text" and not _is_attachment(leaf):
            continue  # another inline text alternative of the body
        content = _decoded(leaf)
        if len(content) > MAX_ATTACHMENT_BYTES:
            raise IntakeError(
                {
                    "attachments": [
                        f"{_filename(leaf) or 'An attachment'} is larger than "
                        f"{MAX_ATTACHMENT_BYTES // 1024 // 1024} MB: send it another way."
                    ]
                }
            )
        name = _filename(leaf) or f"attachment-{len(drafts) + 1}"
        drafts.append(AttachmentDraft(name, leaf.get_content_type(), content))
    return drafts


# --- HTML ----------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}
        | {"pre", "table", "ul", "ol", "hr", "section", "article"}
    )
    SKIPPED = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
        text = "".join(parser.chunks)
    except Exception:  # HTMLParser is lenient; this is the last resort
        text = unescape(re.sub(r"<[^>]*>", " ", html))
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_clean(html: str) -> str:
    """HTML safe to show: nh3 (ammonia) with the default allow-list less images."""
    return nh3.clean(
        html[:MAX_HTML_CHARS], tags=HTML_TAGS, clean_content_tags={"script", "style", "title"}
    ).strip()


# --- the adapter ---------------------------------------------------------------------------


def _mrn(*texts: str) -> str:
    for text in texts:
        for match in MRN_RE.finditer(text or ""):
            value = match.group(1).strip("-")
            if any(c.isdigit() for c in value):
                return value[:40]
    return ""


def _external_id(message_id: str, payload: bytes) -> str:
    if message_id:
        return message_id[:200]
    return f"sha256:{hashlib.sha256(payload).hexdigest()}"


BOUNDARY_LINE_RE = re.compile(rb"^--([^\s]{1,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)


def _repair_boundary(message: EmailMessage, payload: bytes) -> EmailMessage:
    """A multipart whose declared boundary never occurs (a gateway rewrote one of them) is
    read again with the boundary its body actually uses, when there is one."""
    if message.get_content_maintype() != "multipart" or isinstance(message.get_payload(), list):
        return message
    _, separator, body = payload.partition(b"\n\n")
    if not separator:
        _, separator, body = payload.partition(b"\r\n\r\n")
    found = BOUNDARY_LINE_RE.search(body)
    if not found:
        return message
    try:
        message.set_boundary(found.group(1).decode("ascii"))
        headers = message.as_bytes().partition(b"\n\n")[0]
        repaired = BytesParser(policy=policy.default).parsebytes(headers + separator + body)
    except Exception:
        return message
    if not isinstance(repaired.get_payload(), list):
        return message
    repaired.defects.append(StartBoundaryNotFoundDefect("boundary repaired"))
    return repaired


def read_message(payload: bytes) -> EmailMessage:
    if not payload.strip():
        raise IntakeError("The message is empty: send the whole RFC 822 message.")
    message = BytesParser(policy=policy.default).parsebytes(payload)
    message = _repair_boundary(message, payload)
    names = {name.lower() for name, _ in message.raw_items()}
    if not names & {"from", "subject", "date", "message-id"}:
        raise IntakeError(
            "Not an email message: it has no From, Subject, Date or Message-ID header. "
            "Send the raw RFC 822 message (headers, a blank line, then the body)."
        )
    return message


def parse(payload: bytes, inbound) -> TaskDraft:
    message = read_message(payload)
    name, address = _sender(message)
    sender = f"{name} <{address}>" if name and address else (address or name)
    plain, html = _body_parts(message)
    body = _text(plain) if plain is not None else ""
    html_source = _text(html) if html is not None else ""
    if not body.strip() and html_source:
        body = html_to_text(html_source)
    body = body.replace("\r\n", "\n").strip()[:MAX_BODY_CHARS]

    subject = _header(message, "Subject")
    if not subject:
        subject = f"(no subject) from {name or address or 'an unknown sender'}"
    ids = _message_ids(_header(message, "Message-ID"))
    message_id = ids[0] if ids else ""
    replied = _message_ids(_header(message, "In-Reply-To"))
    references = _message_ids(_header(message, "References"))
    # The message answered first, then the thread from its newest message back to its root.
    in_reply_to = list(dict.fromkeys([*replied, *reversed(references)]))
    thread_root = (references or replied or [message_id])[0]

    metadata: dict[str, Any] = {
        "email": {
            k: v
            for k, v in {
                "from": sender or _raw_header(message, "From"),
                "to": _header(message, "To"),
                "cc": _header(message, "Cc"),
                "date": _header(message, "Date"),
                "message_id": message_id,
            }.items()
            if v
        }
    }
    if html_source:
        cleaned = html_clean(html_source)
        if cleaned:
            metadata["html_body"] = cleaned
    attachments = _attachments(message, (plain, html))
    # After the attachments were decoded: bad base64 is noted while decoding.
    defects = sorted({type(d).__name__ for part in _walk(message) for d in part.defects})
    if defects:
        metadata["email"]["defects"] = defects  # what the parser had to guess about

    return (
        TaskDraft(
            channel=Channel.EMAIL,
            subject=re.sub(r"\s+", " ", subject)[:300],
            body=body,
            external_id=_external_id(message_id, payload),
            patient_mrn=_mrn(subject, body),
            received_at=_date(message),
            source_system=(address.rpartition("@")[2] if "@" in address else "")[:80],
            metadata=metadata,
            attachments=attachments,
            in_reply_to=in_reply_to,
            thread_key=thread_root[:200] if thread_root else "",
        )
    ).without_nul()
