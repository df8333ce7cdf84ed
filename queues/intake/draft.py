"""What every channel adapter produces: a TaskDraft, or an IntakeError that names the fields.

Adapters (`api`, `fhir`, `email`, `form`) turn a raw payload into drafts and know nothing of
rules or dedup; `routing.intake` takes a draft from there to a routed task.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any


class IntakeError(Exception):
    """A payload that cannot become a task, with what to fix per field.

    `errors` maps a field name (dotted for nested fields, `non_field_errors` for the whole
    payload) to messages a sender can act on.
    """

    def __init__(self, errors: dict[str, list[str]] | str):
        if isinstance(errors, str):
            errors = {"non_field_errors": [errors]}
        self.errors = errors
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        return "; ".join(
            f"{field}: {' '.join(messages)}" if field != "non_field_errors" else " ".join(messages)
            for field, messages in self.errors.items()
        )


@dataclasses.dataclass(frozen=True)
class AttachmentDraft:
    filename: str
    content_type: str
    content: bytes


@dataclasses.dataclass
class TaskDraft:
    """One request, parsed and validated, not yet a task."""

    channel: str
    subject: str
    body: str = ""
    external_id: str = ""
    patient_mrn: str = ""
    patient_name: str = ""
    patient_birth_date: date | None = None
    request_type: str = ""
    urgency: int | None = None
    received_at: datetime | None = None
    source_system: str = ""
    site_id: int | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    attachments: list[AttachmentDraft] = dataclasses.field(default_factory=list)
    # Message ids this one answers (email In-Reply-To / References): a reply joins its task.
    in_reply_to: list[str] = dataclasses.field(default_factory=list)
    # A channel's own thread (an email conversation, a FHIR basedOn chain), for dedup by thread.
    thread_key: str = ""

    def without_nul(self) -> TaskDraft:
        """The draft with NUL characters removed: PostgreSQL text cannot hold them, and broken
        input (a mangled email, a bad FHIR payload) does carry them."""

        def clean(value):
            if isinstance(value, str):
                return value.replace("\x00", "")
            if isinstance(value, dict):
                return {clean(k): clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        for field in (
            "subject",
            "body",
            "external_id",
            "patient_mrn",
            "patient_name",
            "request_type",
            "source_system",
            "thread_key",
            "metadata",
            "in_reply_to",
        ):
            setattr(self, field, clean(getattr(self, field)))
        self.attachments = [
            dataclasses.replace(a, filename=clean(a.filename), content_type=clean(a.content_type))
            for a in self.attachments
        ]
        return self

    def task_fields(self) -> dict[str, Any]:
        """The keyword arguments of `queues.services.task_create`."""
        metadata = dict(self.metadata)
        if self.urgency is not None:
            metadata["urgency"] = self.urgency
        if self.thread_key:
            metadata["thread_key"] = self.thread_key
        return {
            "channel": self.channel,
            "subject": self.subject,
            "body": self.body,
            "external_id": self.external_id,
            "site_id": self.site_id,
            "patient_mrn": self.patient_mrn,
            "patient_name": self.patient_name,
            "patient_birth_date": self.patient_birth_date,
            "request_type": self.request_type,
            "source_system": self.source_system,
            "tags": list(self.tags),
            "metadata": metadata,
            "received_at": self.received_at,
        }
