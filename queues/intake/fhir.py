"""FHIR R4 adapter: one EHR resource → one TaskDraft; Bundles split into their entries.

Resources are validated by `fhir.resources` (its `R4B` models: R4's technical correction,
the same JSON for these five resources), never by hand: a payload that the models refuse
becomes an IntakeError whose keys are FHIRPath expressions (`Communication.payload[0]`), so
the OperationOutcome answered to the sender names the element to fix.

Mapping (every supported type):

| TaskDraft          | from                                                                   |
| ------------------ | ---------------------------------------------------------------------- |
| external_id        | `<resourceType>/<id>` (else the first identifier, else a content hash) |
| subject            | topic / code / type / reason, else the first line of the text          |
| body               | payload strings, description, patient instruction, reasons, notes      |
| patient            | subject (`for` on Task): identifier → MRN, display → name; a contained |
|                    | Patient (`#id`) gives MRN, name and birth date; `Patient/<id>` → MRN   |
| request_type       | category (Task: code), the first coding's code, else its text          |
| urgency            | priority: stat, asap → P1; urgent → P2; routine → P3                   |
| received_at        | sent / authoredOn / date                                               |
| in_reply_to        | Communication.inResponseTo (a reply joins the task it answers)         |
| thread_key         | basedOn / partOf                                                       |
| attachments        | inline (base64 `data`) attachments of payloads and DocumentReference   |
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import re
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from queues.intake.draft import AttachmentDraft, IntakeError, TaskDraft
from queues.models import Channel

SUPPORTED = (
    "Communication",
    "CommunicationRequest",
    "Task",
    "ServiceRequest",
    "DocumentReference",
)
BUNDLE_TYPES = ("batch", "transaction", "collection", "message")
# Entries of a Bundle that carry context for the others, not work of their own.
CONTEXT_TYPES = ("Patient", "MessageHeader")

# FHIR request priority → ClinicDesk priority (P1 urgent … P4 low).
URGENCY = {"stat": 1, "asap": 1, "urgent": 2, "routine": 3}

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
MRN_TYPE_CODES = ("MR", "MRN")


# --- reading and validating ----------------------------------------------------------------


def load_json(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or IntakeError saying why it is not one."""
    try:
        data = json.loads(payload)
    except UnicodeDecodeError:
        raise IntakeError("The body is not UTF-8 text: send FHIR JSON encoded as UTF-8.") from None
    except json.JSONDecodeError as error:
        raise IntakeError(
            f"The body is not JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
            "send one FHIR resource or a Bundle as application/fhir+json."
        ) from None
    if not isinstance(data, dict):
        raise IntakeError("The body must be a JSON object: one FHIR resource or a Bundle.")
    return data


def _resource_type(data: dict[str, Any]) -> str:
    kind = data.get("resourceType")
    if not kind or not isinstance(kind, str):
        raise IntakeError({"resourceType": ["Required: say which FHIR resource this is."]})
    if kind == "Bundle":
        raise IntakeError(
            {
                "Bundle": [
                    "A Bundle is split into its entries when it arrives: post the corrected "
                    "Bundle again, or correct and retry the failed entry itself."
                ]
            }
        )
    if kind not in SUPPORTED:
        raise IntakeError(
            {
                "resourceType": [
                    f"Not supported: {kind} does not become a task. "
                    f"Send one of {', '.join(SUPPORTED)}, or a Bundle of them."
                ]
            }
        )
    return kind


def _path(kind: str, location: tuple) -> str:
    """A pydantic error location as a FHIRPath expression: `Task.input[0].value`."""
    path = kind
    for part in location:
        if part == "root":  # the library's marker for "the element itself"
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def _message(error: dict[str, Any]) -> str:
    kind, text = error["type"], error["msg"]
    if kind in ("missing", "model_field_validation.missing"):
        return "Required: this element must be present."
    if kind == "extra_forbidden":
        return "Unknown element: FHIR R4 has no such element here; remove it or fix its name."
    if kind == "base64_decode":
        return f"Not valid base64 ({error.get('ctx', {}).get('error', text)})."
    return re.sub(r"^Value error, ", "", text).strip()


def _validation_errors(kind: str, error: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for item in error.errors():
        errors.setdefault(_path(kind, item["loc"]), []).append(_message(item))
    return errors


# Value sets the models' metadata cuts short with "+" (their generator keeps the first few
# codes only): the whole required binding from the R4 specification.
FULL_VALUE_SETS: dict[tuple[str, str], list[str]] = {
    ("Task", "status"): [
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    ],
}


def _check_codes(kind: str, resource: Any) -> dict[str, list[str]]:
    """The library reads `code` elements as plain strings; check the required ones against
    their value sets, which the models carry in their field metadata."""
    errors: dict[str, list[str]] = {}
    for name, field in type(resource).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        allowed = FULL_VALUE_SETS.get((kind, name)) or extra.get("enum_values")
        value = getattr(resource, name, None)
        if not allowed or "+" in allowed or value is None or not isinstance(value, str):
            continue
        if value not in allowed:
            errors[f"{kind}.{name}"] = [f"Unknown code {value!r}: use one of {', '.join(allowed)}."]
    return errors


def validate(data: dict[str, Any]) -> Any:
    """One supported resource as its `fhir.resources` model, or IntakeError naming elements."""
    kind = _resource_type(data)
    model = get_fhir_model_class(kind)
    try:
        resource = model.model_validate(data)
    except ValidationError as error:
        raise IntakeError(_validation_errors(kind, error)) from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        # The library's own checks (a contained resource without a proper resourceType, …)
        # can fail before pydantic reports: still the sender's payload that is wrong.
        raise IntakeError(
            {kind: [f"Not a valid FHIR R4 {kind} ({type(error).__name__}: {error})."]}
        ) from None
    errors = _check_codes(kind, resource)
    if errors:
        raise IntakeError(errors)
    return resource


# --- mapping -------------------------------------------------------------------------------


def _concept_text(concept: Any) -> str:
    if concept is None:
        return ""
    if concept.text:
        return concept.text.strip()
    for coding in concept.coding or ():
        if coding.display or coding.code:
            return (coding.display or coding.code).strip()
    return ""


def _concept_code(concept: Any) -> str:
    if concept is None:
        return ""
    for coding in concept.coding or ():
        if coding.code:
            return coding.code
    return concept.text or ""


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")[:60]


def _reference_text(reference: Any) -> str:
    if reference is None:
        return ""
    if reference.display:
        return reference.display.strip()
    if reference.identifier is not None and reference.identifier.value:
        return reference.identifier.value
    return reference.reference or ""


def _first_line(text: str, limit: int = 120) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _mrn(identifiers: list[Any] | None) -> str:
    values = [i for i in identifiers or () if i.value]
    for identifier in values:
        codes = {c.code for c in (identifier.type.coding or ())} if identifier.type else set()
        if codes & set(MRN_TYPE_CODES) or "mrn" in (identifier.system or "").lower():
            return identifier.value
    return values[0].value if values else ""


def _human_name(names: list[Any] | None) -> str:
    for name in names or ():
        if name.text:
            return name.text.strip()
        parts = [*(name.given or ()), name.family or ""]
        text = " ".join(p for p in parts if p).strip()
        if text:
            return text
    return ""


@dataclasses.dataclass(frozen=True)
class Patient:
    mrn: str = ""
    name: str = ""
    birth_date: date | None = None


def _patient(resource: Any, reference: Any) -> Patient:
    contained = [c for c in resource.contained or () if c.get_resource_type() == "Patient"]
    target = None
    mrn = name = ""
    if reference is not None:
        name = (reference.display or "").strip()
        if reference.identifier is not None:
            mrn = reference.identifier.value or ""
        ref = reference.reference or ""
        if ref.startswith("#"):
            target = next((c for c in contained if c.id == ref[1:]), None)
        elif ref.startswith("Patient/") and not mrn:
            mrn = ref.split("/")[1]
    elif len(contained) == 1:
        target = contained[0]
    birth_date = None
    if target is not None:
        mrn = mrn or _mrn(target.identifier)
        name = name or _human_name(target.name)
        birth_date = target.birthDate if isinstance(target.birthDate, date) else None
    return Patient(mrn=mrn[:40], name=name[:200], birth_date=birth_date)


def _moment(value: Any) -> datetime | None:
    # FHIR dateTimes with a time always carry a zone; a partial date ("2024-05") stays a str.
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _attachment_drafts(kind: str, rid: str, attachments: list[tuple[str, Any]]) -> tuple:
    drafts, mentions, errors = [], [], {}
    for path, attachment in attachments:
        if attachment is None:
            errors[path] = ["Required: this element must be present."]
            continue
        label = attachment.title or ""
        if attachment.data is None:
            if attachment.url:
                mentions.append(f"Attachment {label or attachment.url}: {attachment.url}")
            continue
        content = bytes(attachment.data)
        if len(content) > MAX_ATTACHMENT_BYTES:
            errors[f"{path}.data"] = [
                f"Too large ({len(content) // 1024 // 1024} MB): the limit is "
                f"{MAX_ATTACHMENT_BYTES // 1024 // 1024} MB; send a url instead."
            ]
            continue
        content_type = (attachment.contentType or "application/octet-stream").split(";")[0]
        filename = label or (
            f"{kind}-{rid or 'attachment'}-{len(drafts) + 1}"
            + (mimetypes.guess_extension(content_type) or ".bin")
        )
        drafts.append(AttachmentDraft(filename, content_type, content))
    if errors:
        raise IntakeError(errors)
    return drafts, mentions


def _texts(items: Any, attribute: str = "text") -> list[str]:
    return [getattr(item, attribute).strip() for item in items or () if getattr(item, attribute)]


def _external_id(kind: str, resource: Any, payload: bytes) -> str:
    if resource.id:
        return f"{kind}/{resource.id}"
    identifiers = getattr(resource, "identifier", None)
    if isinstance(identifiers, list):
        identifiers = identifiers[0] if identifiers else None
    if identifiers is not None and identifiers.value:
        return f"{kind}?identifier={identifiers.system or ''}|{identifiers.value}"[:200]
    # Without an id an exact resend is still recognised by its bytes.
    return f"{kind}#sha256:{hashlib.sha256(payload).hexdigest()}"


def draft_from_resource(resource: Any, *, payload: bytes, source_system: str = "") -> TaskDraft:
    """A validated resource (one of SUPPORTED) as a TaskDraft."""
    kind = resource.get_resource_type()
    rid = resource.id or ""
    texts: list[str] = []
    titles: list[str] = []
    attachments: list[tuple[str, Any]] = []
    category = None

    payloads = getattr(resource, "payload", None) or ()
    for n, part in enumerate(payloads):
        if part.contentString:
            texts.append(part.contentString.strip())
        if part.contentAttachment is not None:
            attachments.append((f"{kind}.payload[{n}].contentAttachment", part.contentAttachment))
        if part.contentReference is not None:
            texts.append(f"See {_reference_text(part.contentReference)}")

    if kind == "Communication":
        sender = resource.sender
        subject_ref = resource.subject
        titles += [_concept_text(resource.topic)]
        moment = resource.sent or resource.received
    elif kind == "CommunicationRequest":
        sender = resource.requester or resource.sender
        subject_ref = resource.subject
        moment = resource.authoredOn
    elif kind == "Task":
        sender = resource.requester
        subject_ref = resource.for_fhir
        titles += [_concept_text(resource.code)]
        category = resource.code
        if resource.description:
            texts.append(resource.description.strip())
        moment = resource.authoredOn
    elif kind == "ServiceRequest":
        sender = resource.requester
        subject_ref = resource.subject
        titles += [_concept_text(resource.code)]
        if resource.code is not None:
            texts.append(f"Requested: {_concept_text(resource.code)}")
        if resource.patientInstruction:
            texts.append(f"Patient instruction: {resource.patientInstruction.strip()}")
        moment = resource.authoredOn
    else:  # DocumentReference
        sender = (resource.author or [None])[0] or resource.custodian
        subject_ref = resource.subject
        titles += [_concept_text(resource.type), resource.description or ""]
        if resource.description:
            texts.append(resource.description.strip())
        for n, content in enumerate(resource.content or ()):
            attachments.append((f"{kind}.content[{n}].attachment", content.attachment))
        moment = resource.date
        category = (resource.category or [None])[0] or resource.type

    if category is None:
        category = (getattr(resource, "category", None) or [None])[0]
    reasons = [_concept_text(c) for c in getattr(resource, "reasonCode", None) or ()]
    reasons = [r for r in reasons if r]
    titles += reasons
    if reasons:
        texts.append("Reason: " + "; ".join(reasons))
    texts += [f"Note: {n}" for n in _texts(getattr(resource, "note", None))]

    drafts, mentions = _attachment_drafts(kind, rid, attachments)
    texts += mentions
    body = "\n\n".join(t for t in texts if t)
    sender_text = _reference_text(sender)
    subject = next((t for t in titles if t), "") or _first_line(body)
    if not subject:
        subject = f"{kind} from {sender_text}" if sender_text else f"{kind} {rid}".strip()
    patient = _patient(resource, subject_ref)
    priority = getattr(resource, "priority", None)
    threads = [
        r.reference
        for r in (getattr(resource, "basedOn", None) or [])
        + (getattr(resource, "partOf", None) or [])
        if r.reference
    ]
    replies = [r.reference for r in getattr(resource, "inResponseTo", None) or () if r.reference]
    metadata = {
        "fhir": {
            k: v
            for k, v in {
                "resource_type": kind,
                "id": rid,
                "status": getattr(resource, "status", "") or "",
                "priority": priority or "",
                "category": _concept_text(category),
                "sender": sender_text,
            }.items()
            if v
        }
    }
    return (
        TaskDraft(
            channel=Channel.FHIR,
            subject=subject[:300],
            body=body,
            external_id=_external_id(kind, resource, payload)[:200],
            patient_mrn=patient.mrn,
            patient_name=patient.name,
            patient_birth_date=patient.birth_date,
            request_type=_slug(_concept_code(category)),
            urgency=URGENCY.get(priority or ""),
            received_at=_moment(moment),
            source_system=source_system[:80],
            metadata=metadata,
            attachments=drafts,
            in_reply_to=replies,
            thread_key=threads[0][:200] if threads else "",
        )
    ).without_nul()


def parse(payload: bytes, inbound) -> TaskDraft:
    """One FHIR resource (the adapter registered for application/fhir+json)."""
    resource = validate(load_json(payload))
    client = getattr(inbound, "client", None) if inbound is not None else None
    return draft_from_resource(
        resource, payload=payload, source_system=client.name if client is not None else ""
    )


# --- Bundles -------------------------------------------------------------------------------


@dataclasses.dataclass
class BundleEntry:
    """One entry of a Bundle: the resource's own JSON to store and process, or why not."""

    index: int
    resource_type: str = ""
    payload: bytes = b""
    context: bool = False  # a Patient or MessageHeader: read for the others, no task
    error: IntakeError | None = None


def is_bundle(data: dict[str, Any]) -> bool:
    return data.get("resourceType") == "Bundle"


def _check_envelope(data: dict[str, Any]) -> list[Any]:
    errors: dict[str, list[str]] = {}
    kind = data.get("type")
    if kind not in BUNDLE_TYPES:
        errors["Bundle.type"] = [
            f"{'Required' if kind is None else f'Not supported: {kind!r}'}: "
            f"use one of {', '.join(BUNDLE_TYPES)}."
        ]
    entries = data.get("entry")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        errors["Bundle.entry"] = ["Must be a list of entries."]
    elif not entries:
        errors["Bundle.entry"] = ["The Bundle has no entries: nothing to do."]
    if errors:
        raise IntakeError(errors)
    return entries


def _inline_patients(resource: dict[str, Any], patients: dict[str, dict[str, Any]]) -> None:
    """Make an entry self-contained: a subject that points at a Patient entry of the Bundle
    (by its fullUrl) gets that Patient as a contained resource, so the entry alone, stored
    and retried on its own, still names its patient."""
    key = "for" if resource.get("resourceType") == "Task" else "subject"
    subject = resource.get(key)
    if not isinstance(subject, dict):
        return
    reference = subject.get("reference")
    patient = patients.get(reference) if isinstance(reference, str) else None
    if patient is None:
        return
    contained = dict(patient, id="bundle-patient")
    resource["contained"] = [*resource.get("contained", []), contained]
    resource[key] = dict(subject, reference="#bundle-patient")


def bundle_split(data: dict[str, Any]) -> list[BundleEntry]:
    """The entries of a Bundle, each its own payload; IntakeError when the envelope is bad."""
    entries = _check_envelope(data)
    patients: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            if isinstance(entry.get("fullUrl"), str):
                patients[entry["fullUrl"]] = resource
            if isinstance(resource.get("id"), str):
                patients[f"Patient/{resource['id']}"] = resource
    split = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        method = str(request.get("method") or "") if isinstance(request, dict) else ""
        error = None
        if not isinstance(resource, dict):
            error = {
                f"Bundle.entry[{index}].resource": ["Required: each entry carries a resource."]
            }
        elif method and method.upper() not in ("POST", "PUT"):
            error = {
                f"Bundle.entry[{index}].request.method": [
                    f"Not supported: {method}. An entry brings a new or updated resource "
                    "(POST or PUT); ClinicDesk does not read, patch or delete through FHIR."
                ]
            }
        if error is not None:
            # Kept as sent, so a supervisor can read it and correct it into a resource.
            payload = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
            split.append(BundleEntry(index, payload=payload, error=IntakeError(error)))
            continue
        kind = str(resource.get("resourceType") or "")
        if kind in CONTEXT_TYPES:
            split.append(BundleEntry(index, kind, context=True))
            continue
        resource = dict(resource)
        _inline_patients(resource, patients)
        payload = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
        split.append(BundleEntry(index, kind, payload=payload))
    return split


# --- answers -------------------------------------------------------------------------------


def _issue_code(message: str) -> str:
    lowered = message.lower()
    if lowered.startswith("required"):
        return "required"
    if lowered.startswith("not supported"):
        return "not-supported"
    if lowered.startswith("unknown element"):
        return "structure"
    if "json" in lowered or "utf-8" in lowered:
        return "structure"
    return "value"


def operation_outcome(errors: dict[str, list[str]], *, severity: str = "error") -> dict:
    """An OperationOutcome resource with one issue per message; `expression` names the
    element (FHIRPath) unless the message is about the payload as a whole."""
    issues = []
    for field, messages in errors.items():
        for message in messages:
            issue: dict[str, Any] = {
                "severity": severity,
                "code": _issue_code(message) if severity == "error" else "informational",
                "diagnostics": message,
            }
            if field != "non_field_errors":
                issue["expression"] = [field]
            issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def information(message: str) -> dict:
    return operation_outcome({"non_field_errors": [message]}, severity="information")
