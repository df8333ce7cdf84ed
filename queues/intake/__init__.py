"""Channel adapters: raw payloads in, `TaskDraft`s out (see `draft.py`).

`parse(inbound)` picks the adapter by the stored payload's content type, so a failed message
can be parsed again after a supervisor corrects it, by the same code that first read it.
"""

from __future__ import annotations

from importlib import import_module

from queues.intake.draft import IntakeError, TaskDraft

# content type (without parameters) → "module:function(payload: bytes, inbound) -> TaskDraft"
ADAPTERS = {
    "application/json": "queues.intake.api:parse",
    "multipart/form-data": "queues.intake.api:parse_multipart",
    "application/fhir+json": "queues.intake.fhir:parse",
    "message/rfc822": "queues.intake.email:parse",
    "application/x-clinicdesk-form+json": "queues.intake.form:parse",
}


def parse(inbound) -> TaskDraft:
    """One stored payload → one draft, or IntakeError naming what to fix."""
    content_type = (inbound.content_type or "").split(";")[0].strip().lower()
    target = ADAPTERS.get(content_type)
    if target is None:
        raise IntakeError(
            {"content_type": [f"No adapter reads {content_type or 'an empty content type'}."]}
        )
    module, function = target.split(":")
    return getattr(import_module(module), function)(inbound.effective_payload, inbound)


__all__ = ["ADAPTERS", "IntakeError", "TaskDraft", "parse"]
