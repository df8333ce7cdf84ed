"""The intake API's adapter: a JSON request (or a multipart fax upload) → a TaskDraft.

One format serves every channel another system posts on: `api`, `portal`, `phone` (a voicemail:
caller number, transcript, a reference to the audio, optionally the audio itself) and `fax` (a
PDF with its cover-sheet fields). Validation names every field's problem at once, with dotted
names for nested fields (`patient.birth_date`, `attachments.0.content_base64`), so that a
sender fixes a payload in one round trip.

The adapter reads stored bytes, never a request: it is also what re-reads a supervisor's
corrected payload when a failed message is retried.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

from django.utils import timezone
from rest_framework import serializers
from rest_framework.settings import api_settings

from queues.intake import store
from queues.intake.draft import AttachmentDraft, IntakeError, TaskDraft
from queues.models import Channel

# The channels this format takes. The front-desk form is staff's own page; FHIR and email
# have their own endpoints (`/api/v1/inbound/…`) but a gateway may also send them here as JSON.
API_CHANNELS = [c for c in Channel.values if c != Channel.FORM]
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = store.MAX_ATTACHMENT_BYTES
MAX_METADATA_BYTES = 16 * 1024
PDF_MAGIC = b"%PDF-"
# A clock a few minutes ahead at the sender is normal; a date in the future is a mistake.
RECEIVED_AT_SKEW = timedelta(minutes=5)
# Metadata keys filled from the request's own fields (and shown on the task page as such).
RESERVED_METADATA = frozenset({"voicemail", "fax", "urgency", "thread_key"})


class PatientSerializer(serializers.Serializer):
    mrn = serializers.CharField(
        max_length=40,
        required=False,
        allow_blank=True,
        help_text="The patient's medical record number at the clinic.",
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    birth_date = serializers.DateField(
        required=False,
        allow_null=True,
        input_formats=["iso-8601"],
        help_text="YYYY-MM-DD.",
        error_messages={"invalid": "Enter the date of birth as YYYY-MM-DD, e.g. 1984-03-07."},
    )

    def validate_birth_date(self, value):
        if value and value > timezone.localdate():
            raise serializers.ValidationError(
                "The date of birth is in the future; send it as YYYY-MM-DD."
            )
        return value

    def validate(self, data):
        if not data.get("mrn") and not (data.get("name") and data.get("birth_date")):
            raise serializers.ValidationError(
                "Identify the patient: send their MRN, or their name and date of birth."
            )
        return data


class AttachmentSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    content_type = serializers.CharField(
        max_length=100, help_text="The file's media type, e.g. application/pdf or audio/mpeg."
    )
    content_base64 = serializers.CharField(
        help_text=f"The file's bytes, base64 encoded (at most {MAX_ATTACHMENT_BYTES // 2**20} MiB "
        "decoded).",
        trim_whitespace=True,
    )

    def validate_content_type(self, value: str) -> str:
        value = value.strip().lower()
        if "/" not in value:
            raise serializers.ValidationError(
                "Give a media type such as application/pdf or audio/mpeg."
            )
        return value

    def validate_content_base64(self, value: str) -> bytes:
        try:
            content = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError(
                "This is not valid base64: encode the file's bytes with standard base64 "
                "(A-Z, a-z, 0-9, + and /, padded with =)."
            ) from None
        if not content:
            raise serializers.ValidationError("The file is empty; attach its content.")
        if len(content) > MAX_ATTACHMENT_BYTES:
            raise serializers.ValidationError(
                f"The file is {len(content) / 2**20:.1f} MiB; the limit is "
                f"{MAX_ATTACHMENT_BYTES // 2**20} MiB a file."
            )
        return content


class VoicemailSerializer(serializers.Serializer):
    caller_number = serializers.RegexField(
        r"^\+?[0-9 ().\-]{3,30}$",
        max_length=30,
        help_text="The number that called, e.g. +1 555 010 4477.",
        error_messages={
            "invalid": "Give the caller's phone number: digits, spaces, ( ) . - and a leading +."
        },
    )
    transcript = serializers.CharField(
        required=False, allow_blank=True, help_text="The speech-to-text of the message."
    )
    audio_url = serializers.URLField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Where the phone system keeps the recording.",
    )
    audio_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="The phone system's id of the recording.",
    )
    duration_seconds = serializers.IntegerField(required=False, min_value=0, max_value=86_400)


class FaxSerializer(serializers.Serializer):
    from_number = serializers.CharField(
        max_length=60, help_text="The sender's fax number or name from the cover sheet."
    )
    to_number = serializers.CharField(max_length=60, required=False, allow_blank=True)
    sender_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    pages = serializers.IntegerField(required=False, min_value=1, max_value=2000)
    cover_note = serializers.CharField(max_length=4000, required=False, allow_blank=True)


class IntakeSerializer(serializers.Serializer):
    """What `POST /api/v1/intake/` takes."""

    channel = serializers.ChoiceField(
        choices=API_CHANNELS,
        help_text="How the request reached the sender: api, portal, phone (voicemail), fax, …",
        error_messages={"invalid_choice": f"Use one of {', '.join(API_CHANNELS)}."},
    )
    external_id = serializers.CharField(
        max_length=200,
        help_text="Your id of this request, unique per channel: a resend with the same id "
        "returns the same task and never creates a second one.",
    )
    subject = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        help_text="One line. Required, except for a voicemail or a fax, which get one from "
        "their caller or sender.",
    )
    body = serializers.CharField(required=False, allow_blank=True, max_length=100_000)
    patient = PatientSerializer(help_text="MRN, or name and date of birth.")
    request_type = serializers.CharField(
        max_length=60,
        required=False,
        allow_blank=True,
        help_text="Your name of the kind of request (e.g. refill, referral); it helps routing.",
    )
    urgency = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=4,
        help_text="1 (urgent) to 4 (low): a hint the routing rules may raise the priority to.",
    )
    received_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When you received it (ISO 8601 with a time zone); defaults to now.",
    )
    metadata = serializers.DictField(
        required=False, help_text="Your own fields, kept with the task (at most 16 KiB)."
    )
    attachments = AttachmentSerializer(many=True, required=False)
    voicemail = VoicemailSerializer(required=False, help_text="Required when channel is phone.")
    fax = FaxSerializer(required=False, help_text="Required when channel is fax.")

    def validate_received_at(self, value):
        if value and value > timezone.now() + RECEIVED_AT_SKEW:
            raise serializers.ValidationError(
                "received_at is in the future; send when you received it, with its time zone."
            )
        return value

    def validate_metadata(self, value: dict) -> dict:
        reserved = sorted(RESERVED_METADATA & set(value))
        if reserved:
            raise serializers.ValidationError(
                f"{', '.join(reserved)} {'is' if len(reserved) == 1 else 'are'} set by ClinicDesk "
                "from the request's own fields (voicemail, fax, urgency); rename your key."
            )
        encoded = json.dumps(value, default=str)
        if "\\u0000" in encoded:
            raise serializers.ValidationError("Remove the NUL characters (\\u0000) from metadata.")
        if len(encoded) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(
                f"Keep metadata under {MAX_METADATA_BYTES // 1024} KiB; send files as attachments."
            )
        return value

    def validate_attachments(self, value: list) -> list:
        if len(value) > MAX_ATTACHMENTS:
            raise serializers.ValidationError(
                f"Send at most {MAX_ATTACHMENTS} attachments in one request."
            )
        return value


def _decoded(value: Any) -> bytes | None:
    try:
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def cross_field_errors(data: dict, known: dict[str, list[str]]) -> dict[str, list[str]]:
    """What a channel needs beyond each field being well formed. Checked on the request as
    sent, so that these problems are named together with the fields' own (`known`)."""
    errors: dict[str, list[str]] = {}
    channel = data.get("channel")
    attachments = data.get("attachments")
    attachments = (
        [a for a in attachments if isinstance(a, dict)] if isinstance(attachments, list) else []
    )

    def add(field: str, message: str) -> None:
        if field not in known:
            errors.setdefault(field, []).append(message)

    if channel == Channel.PHONE:
        voicemail = data.get("voicemail")
        if voicemail is None:
            add(
                "voicemail",
                "A phone request needs its voicemail: caller_number, and transcript or "
                "audio_url / audio_id.",
            )
        elif isinstance(voicemail, dict):
            has_audio = voicemail.get("audio_url") or voicemail.get("audio_id")
            if not (voicemail.get("transcript") or has_audio or attachments):
                add(
                    "voicemail.transcript",
                    "Send the transcript, a reference to the recording (audio_url or "
                    "audio_id), or the audio as an attachment.",
                )
        for n, attachment in enumerate(attachments):
            content_type = str(attachment.get("content_type") or "").strip().lower()
            if content_type and not content_type.startswith("audio/"):
                add(
                    f"attachments.{n}.content_type",
                    "A voicemail's attachment is its recording: send an audio/* file.",
                )
    elif channel == Channel.FAX:
        if data.get("fax") is None:
            add("fax", "A fax needs its cover sheet: at least from_number.")
        if not attachments:
            add("attachments", "A fax needs its pages: attach the PDF.")
        for n, attachment in enumerate(attachments):
            content_type = str(attachment.get("content_type") or "").strip().lower()
            if content_type and content_type != "application/pdf":
                add(f"attachments.{n}.content_type", "A fax is sent as a PDF: use application/pdf.")
            elif f"attachments.{n}.content_base64" not in known:
                content = _decoded(attachment.get("content_base64", ""))
                if content and not content.startswith(PDF_MAGIC):
                    add(
                        f"attachments.{n}.content_base64",
                        "This is not a PDF (it does not start with %PDF-): send the fax's PDF.",
                    )
    elif channel in API_CHANNELS:
        for name, only_for in (("voicemail", Channel.PHONE), ("fax", Channel.FAX)):
            if data.get(name) is not None:
                add(name, f"{name} is only for channel {only_for}; leave it out.")
    if not data.get("subject") and channel not in (Channel.PHONE, Channel.FAX):
        add("subject", "Give the request a one-line subject.")
    return errors


# --- parsing -------------------------------------------------------------------------------


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure → {"patient.birth_date": ["…"], …}."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                name = prefix
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in flatten_errors(value, name).items():
                flat.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            flat[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for n, item in enumerate(detail):
                if item:
                    for field, messages in flatten_errors(item, f"{prefix}.{n}").items():
                        flat.setdefault(field, []).extend(messages)
    else:
        flat[prefix or "non_field_errors"] = [str(detail)]
    return flat


def load_json(payload: bytes) -> dict:
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntakeError("The body is not UTF-8 text: send JSON encoded as UTF-8.") from None
    except json.JSONDecodeError as error:
        raise IntakeError(
            f"The body is not valid JSON ({error.msg} at line {error.lineno}, column "
            f"{error.colno}): send one JSON object."
        ) from None
    if not isinstance(data, dict):
        raise IntakeError("Send one JSON object, {…}, with channel, external_id and patient.")
    return data


def draft_from_data(data: dict, inbound=None) -> TaskDraft:
    """Validate a decoded request and map it to a draft; IntakeError names every problem."""
    serializer = IntakeSerializer(data=data)
    valid = serializer.is_valid()
    errors = {} if valid else flatten_errors(serializer.errors)
    for field, messages in cross_field_errors(data, errors).items():
        errors.setdefault(field, []).extend(messages)
    if errors:
        raise IntakeError(errors)
    valid = serializer.validated_data
    patient = valid["patient"]
    metadata = dict(valid.get("metadata") or {})
    subject = valid.get("subject") or ""
    body = valid.get("body") or ""
    if voicemail := valid.get("voicemail"):
        metadata["voicemail"] = {k: v for k, v in voicemail.items() if k != "transcript" and v}
        transcript = voicemail.get("transcript") or ""
        body = "\n\n".join(part for part in (transcript, body) if part)
        subject = subject or f"Voicemail from {voicemail['caller_number']}"
    if fax := valid.get("fax"):
        metadata["fax"] = {k: v for k, v in fax.items() if v not in ("", None)}
        body = "\n\n".join(part for part in (fax.get("cover_note", ""), body) if part)
        pages = f", {fax['pages']} page{'s' if fax['pages'] != 1 else ''}" if "pages" in fax else ""
        subject = subject or f"Fax from {fax.get('sender_name') or fax['from_number']}{pages}"
    client = getattr(inbound, "client", None) if inbound is not None else None
    return TaskDraft(
        channel=valid["channel"],
        subject=subject[:300],
        body=body,
        external_id=valid["external_id"],
        patient_mrn=patient.get("mrn", ""),
        patient_name=patient.get("name", ""),
        patient_birth_date=patient.get("birth_date"),
        request_type=valid.get("request_type", ""),
        urgency=valid.get("urgency"),
        received_at=valid.get("received_at"),
        source_system=client.name if client is not None else "",
        metadata=metadata,
        attachments=[
            AttachmentDraft(
                filename=a["filename"], content_type=a["content_type"], content=a["content_base64"]
            )
            for a in valid.get("attachments") or []
        ],
    )


def parse(payload: bytes, inbound) -> TaskDraft:
    """An `application/json` intake request → a draft."""
    return draft_from_data(load_json(payload), inbound)


def multipart_request(payload: bytes, content_type: str) -> tuple[dict, Any]:
    """(the decoded `payload` part, the `file` part or None) of a multipart/form-data body."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + payload
    )
    if not message.is_multipart():
        raise IntakeError(
            "The multipart body could not be read: send multipart/form-data with its boundary."
        )
    parts: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name in ("payload", "file") and name not in parts:
            parts[name] = part
    if "payload" not in parts:
        raise IntakeError(
            {"payload": ["Send the request's JSON fields as a form part named payload."]}
        )
    return load_json(parts["payload"].get_payload(decode=True) or b""), parts.get("file")


def parse_multipart(payload: bytes, inbound) -> TaskDraft:
    """A `multipart/form-data` upload: the JSON request as the `payload` part and the file
    (a fax's PDF, a voicemail's audio) as the `file` part, sent without base64."""
    data, file_part = multipart_request(payload, getattr(inbound, "content_type", "") or "")
    if file_part is not None:
        content = file_part.get_payload(decode=True) or b""
        attachments = data.setdefault("attachments", [])
        if not isinstance(attachments, list):
            raise IntakeError({"attachments": ["Send attachments as a list, or leave it out."]})
        attachments.append(
            {
                "filename": file_part.get_filename() or "upload",
                "content_type": file_part.get_content_type(),
                "content_base64": base64.b64encode(content).decode(),
            }
        )
    return draft_from_data(data, inbound)
