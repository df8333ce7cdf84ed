"""The front-desk form's adapter: a walk-in or a call logged by staff, as stored JSON.

The page (`queues.views.intake`) stores what the person entered as one JSON object
(`CONTENT_TYPE`) before anything reads it, then this adapter turns it into a draft. A payload
that a supervisor corrects on the Failed intake page is read by the same code, so the checks
live here, in plain functions over dicts, and the page's form calls them too
(`missing_required`, `clean_birth_date`, `clean_callback_number`): the form and the stored
payload can never disagree about what a task type needs.

The payload (flat keys; the patient and detail keys are the `IntakeField` values)::

    {"version": 1, "channel": "form" | "phone", "submission_id": "<uuid>",
     "task_type": "<TaskType code>" | "", "subject": "...", "details": "...",
     "patient_mrn": "...", "patient_name": "...", "patient_birth_date": "YYYY-MM-DD",
     "callback_number": "...", "payer": "...", "referring_provider": "...",
     "urgency": 1-4 | null, "entered_by": "<username>", "site_id": <id> | null}
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date
from typing import Any

from django.utils import timezone

from accounts.models import Site
from queues.intake.draft import IntakeError, TaskDraft
from queues.models import Channel, IntakeField, TaskType

CONTENT_TYPE = "application/x-clinicdesk-form+json"
VERSION = 1
# Walk-ins are the clinic's own form channel; calls land with the phone system's.
CHANNELS = (Channel.FORM, Channel.PHONE)
SOURCE_SYSTEM = "front-desk"
EXTERNAL_ID_PREFIX = "desk-"

SUBJECT_MAX = 300
DETAILS_MAX = 20_000
MAX_LENGTHS = {
    IntakeField.PATIENT_MRN: 40,
    IntakeField.PATIENT_NAME: 200,
    IntakeField.CALLBACK_NUMBER: 40,
    IntakeField.PAYER: 120,
    IntakeField.REFERRING_PROVIDER: 200,
}
# Each field a task type may require: what is missing, and how the person at the desk fixes it.
NEEDS: dict[str, tuple[str, str]] = {
    IntakeField.PATIENT_MRN: (
        "the patient's MRN",
        "look it up in the EHR so that the team opens the right chart",
    ),
    IntakeField.PATIENT_NAME: ("the patient's name", "add the full name as on their ID"),
    IntakeField.PATIENT_BIRTH_DATE: (
        "the patient's date of birth",
        "add it to tell apart patients with the same name",
    ),
    IntakeField.CALLBACK_NUMBER: (
        "a callback number",
        "add a number where the caller can be reached today",
    ),
    IntakeField.PAYER: ("the payer", "add the patient's insurer"),
    IntakeField.REFERRING_PROVIDER: (
        "the referring provider",
        "add the practice or clinician who sent the patient",
    ),
}
DETAIL_LABELS = {
    IntakeField.CALLBACK_NUMBER: "Callback number",
    IntakeField.PAYER: "Payer",
    IntakeField.REFERRING_PROVIDER: "Referring provider",
}
PHONE_CHARACTERS = re.compile(r"^[0-9+().\-\s]+(?:\s*(?:x|ext\.?)\s*\d+)?$", re.IGNORECASE)


# --- checks shared with the page's form -------------------------------------------------------


def _a(name: str) -> str:
    """“A prior authorization request”, “An eligibility verification”; an acronym keeps its
    capitals."""
    lowered = name[:1].lower() + name[1:] if name[1:2].islower() else name
    article = "An" if lowered[:1].lower() in "aeiou" else "A"
    return f"{article} {lowered}"


def missing_required(task_type: TaskType | None, values: dict[str, Any]) -> dict[str, list[str]]:
    """Per field the type requires and the values lack: what to add and why."""
    if task_type is None:
        return {}
    errors = {}
    for name in task_type.required_fields:
        value = values.get(name)
        if value in (None, "") or (isinstance(value, str) and not value.strip()):
            what, fix = NEEDS.get(name, (name.replace("_", " "), "add it"))
            errors[name] = [f"{_a(task_type.name)} needs {what}: {fix}."]
    return errors


def clean_birth_date(value: date, *, today: date | None = None) -> date:
    today = today or timezone.localdate()
    if value > today:
        raise ValueError("The date of birth is in the future: check the year.")
    if value.year < 1900:
        raise ValueError("Enter the date of birth with a four-digit year, e.g. 1984-03-27.")
    return value


def clean_callback_number(value: str) -> str:
    value = value.strip()
    if value and (not PHONE_CHARACTERS.match(value) or len(re.sub(r"\D", "", value)) < 7):
        raise ValueError(
            "Enter a phone number with its area code, e.g. (555) 014-2288 or +1 555 014 2288."
        )
    return value


# --- the adapter -----------------------------------------------------------------------------


def parse(payload: bytes, inbound) -> TaskDraft:
    """One stored form submission → a draft, or IntakeError naming each field to fix."""
    data = _load(payload)
    errors: dict[str, list[str]] = {}

    def text(name: str, max_length: int) -> str:
        value = data.get(name, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            errors[name] = ["Give this as text."]
            return ""
        value = value.strip()
        if len(value) > max_length:
            errors[name] = [f"Keep it under {max_length} characters (it has {len(value)})."]
        return value

    channel = data.get("channel", Channel.FORM)
    if channel not in CHANNELS:
        errors["channel"] = [f"Use {' or '.join(CHANNELS)} (walk-in or call), not {channel!r}."]
    subject = text("subject", SUBJECT_MAX)
    if not subject and "subject" not in errors:
        errors["subject"] = ["Say in a few words what the person needs."]
    details = text("details", DETAILS_MAX)
    values = {name: text(name, length) for name, length in MAX_LENGTHS.items()}
    values[IntakeField.PATIENT_BIRTH_DATE] = _birth_date(data, errors)
    if values[IntakeField.CALLBACK_NUMBER] and IntakeField.CALLBACK_NUMBER not in errors:
        try:
            clean_callback_number(values[IntakeField.CALLBACK_NUMBER])
        except ValueError as error:
            errors[IntakeField.CALLBACK_NUMBER] = [str(error)]
    task_type = _task_type(data, errors)
    for name, messages in missing_required(task_type, values).items():
        errors.setdefault(name, messages)
    urgency = _urgency(data, errors)
    site_id = _site(data, errors)
    submission_id = _submission_id(data, errors)
    if errors:
        raise IntakeError({str(name): messages for name, messages in errors.items()})

    extras = {
        str(name): values[name]
        for name in (IntakeField.CALLBACK_NUMBER, IntakeField.PAYER, IntakeField.REFERRING_PROVIDER)
        if values[name]
    }
    metadata: dict[str, Any] = {"entered_by": str(data.get("entered_by", ""))[:150], **extras}
    if task_type is not None:
        metadata["chosen_task_type"] = task_type.code
    return TaskDraft(
        channel=channel,
        subject=subject,
        body=_body(details, extras),
        external_id=f"{EXTERNAL_ID_PREFIX}{submission_id}" if submission_id else "",
        patient_mrn=values[IntakeField.PATIENT_MRN],
        patient_name=values[IntakeField.PATIENT_NAME],
        patient_birth_date=values[IntakeField.PATIENT_BIRTH_DATE],
        # The rules decide the type and the route; a classification rule that names this
        # request type is how the person's choice is honoured (and explained).
        request_type=task_type.code if task_type is not None else "",
        urgency=urgency,
        received_at=inbound.received_at if inbound is not None else None,
        source_system=SOURCE_SYSTEM,
        site_id=site_id,
        metadata=metadata,
    )


def payload_for(cleaned: dict[str, Any], *, entered_by: str, site_id: int | None) -> bytes:
    """The stored form of a valid submission (what the page writes before anything reads it)."""
    task_type = cleaned.get("task_type")
    birth_date = cleaned.get(IntakeField.PATIENT_BIRTH_DATE)
    data = {
        "version": VERSION,
        "channel": cleaned["channel"],
        "submission_id": str(cleaned.get("submission_id") or uuid.uuid4()),
        "task_type": task_type.code if task_type is not None else "",
        "subject": cleaned["subject"],
        "details": cleaned.get("details", ""),
        **{str(name): cleaned.get(name, "") or "" for name in MAX_LENGTHS},
        str(IntakeField.PATIENT_BIRTH_DATE): birth_date.isoformat() if birth_date else "",
        "urgency": cleaned.get("urgency"),
        "entered_by": entered_by,
        "site_id": site_id,
    }
    return json.dumps(data, ensure_ascii=False, indent=2).encode()


def _load(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntakeError("The form payload is not UTF-8 text: re-enter it as text.") from None
    except json.JSONDecodeError as error:
        raise IntakeError(
            f"The form payload is not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno}): fix the quoting or commas there."
        ) from None
    if not isinstance(data, dict):
        raise IntakeError("The form payload must be one JSON object of named fields.")
    if data.get("version", VERSION) != VERSION:
        raise IntakeError(f"Form payload version {data.get('version')!r} is not read here.")
    return data


def _birth_date(data: dict, errors: dict) -> date | None:
    raw = data.get(IntakeField.PATIENT_BIRTH_DATE) or ""
    if not raw:
        return None
    try:
        value = date.fromisoformat(str(raw))
    except ValueError:
        errors[IntakeField.PATIENT_BIRTH_DATE] = [
            "Write the date of birth as YYYY-MM-DD, e.g. 1984-03-27."
        ]
        return None
    try:
        return clean_birth_date(value)
    except ValueError as error:
        errors[IntakeField.PATIENT_BIRTH_DATE] = [str(error)]
        return None


def _task_type(data: dict, errors: dict) -> TaskType | None:
    code = data.get("task_type") or ""
    if not code:
        return None
    task_type = TaskType.objects.filter(code=str(code), is_active=True).first()
    if task_type is None:
        errors["task_type"] = [
            f"No active task type {code!r}: choose one of the clinic's types, or leave it "
            "empty to let the rules decide."
        ]
    return task_type


def _urgency(data: dict, errors: dict) -> int | None:
    urgency = data.get("urgency")
    if urgency in (None, ""):
        return None
    if isinstance(urgency, bool) or not isinstance(urgency, int) or not 1 <= urgency <= 4:
        errors["urgency"] = ["Use 1 (urgent) to 4 (low), or leave it empty for the usual."]
        return None
    return urgency


def _site(data: dict, errors: dict) -> int | None:
    site_id = data.get("site_id")
    if site_id is None:
        return None
    if isinstance(site_id, bool) or not isinstance(site_id, int):
        errors["site_id"] = ["Give the site as its number, or null."]
        return None
    if not Site.objects.filter(pk=site_id).exists():
        errors["site_id"] = [f"No site {site_id}: use one of the clinic's sites, or null."]
        return None
    return site_id


def _submission_id(data: dict, errors: dict) -> str:
    raw = data.get("submission_id") or ""
    if not raw:
        return ""
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        errors["submission_id"] = ["Keep the submission id as it was, or remove it."]
        return ""


def _body(details: str, extras: dict[str, str]) -> str:
    """The details as typed, then the fields the task page has no place for, one a line."""
    lines = [f"{DETAIL_LABELS[name]}: {value}" for name, value in extras.items()]
    return "\n\n".join(part for part in (details, "\n".join(lines)) if part)
