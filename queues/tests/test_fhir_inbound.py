"""POST /api/v1/inbound/fhir/: the five resource types, Bundles, OperationOutcomes, and the
token + signature that guard the endpoint."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from queues.models import Attachment, InboundMessage, Task
from queues.tests.inbound_support import build_intake_clinic, make_client, signed_post

pytestmark = pytest.mark.django_db

URL = "/api/v1/inbound/fhir/"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def clinic():
    return build_intake_clinic()


@pytest.fixture
def ehr(clinic):
    return make_client("ehr", channels=["fhir"], departments=[clinic["front_desk"]])


def post(issued, resource, **kwargs):
    body = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    kwargs.setdefault("content_type", "application/fhir+json")
    return signed_post(URL, body, issued, **kwargs)


def patient_ref(**extra):
    return {"reference": "Patient/pat-1", "display": "Jordan Rivera", **extra}


REFERRAL_CATEGORY = [{"coding": [{"system": "urn:clinic:category", "code": "referral"}]}]


def communication(rid="comm-1", **extra):
    return {
        "resourceType": "Communication",
        "id": rid,
        "status": "completed",
        "category": REFERRAL_CATEGORY,
        "priority": "urgent",
        "subject": patient_ref(identifier={"system": "urn:mrn", "value": "MRN-204611"}),
        "sender": {"display": "Dr. Okafor, Riverside Cardiology"},
        "sent": "2026-03-02T09:15:00-05:00",
        "payload": [{"contentString": "Referral for cardiology consult.\nPlease schedule."}],
        **extra,
    }


def communication_request(rid="creq-1", **extra):
    return {
        "resourceType": "CommunicationRequest",
        "id": rid,
        "status": "active",
        "priority": "stat",
        "subject": patient_ref(),
        "requester": {"display": "Lab system"},
        "authoredOn": "2026-03-02T10:00:00Z",
        "reasonCode": [{"text": "Critical potassium result: call the patient"}],
        "payload": [{"contentString": "K+ 6.8 mmol/L; call the patient today."}],
        **extra,
    }


def fhir_task(rid="task-1", **extra):
    return {
        "resourceType": "Task",
        "id": rid,
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"code": "referral", "display": "Process referral"}]},
        "description": "Process the incoming referral packet",
        "for": {"reference": "#p1"},
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [
                    {"system": "urn:other", "value": "X-1"},
                    {
                        "type": {"coding": [{"code": "MR"}]},
                        "system": "urn:clinic",
                        "value": "MRN-555",
                    },
                ],
                "name": [{"given": ["Ana"], "family": "Lima"}],
                "birthDate": "1990-04-05",
            }
        ],
        "requester": {"display": "Riverside Cardiology"},
        "authoredOn": "2026-03-01T08:00:00Z",
        "note": [{"text": "Fax cover sheet in the EHR"}],
        **extra,
    }


def service_request(rid="sr-1", **extra):
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "priority": "asap",
        "category": REFERRAL_CATEGORY,
        "code": {"text": "Referral to cardiology"},
        "subject": patient_ref(),
        "requester": {"display": "Dr. Okafor"},
        "patientInstruction": "Bring your medication list",
        "authoredOn": "2026-03-01T12:00:00Z",
        **extra,
    }


def document_reference(rid="doc-1", **extra):
    return {
        "resourceType": "DocumentReference",
        "id": rid,
        "status": "current",
        "type": {"text": "Referral letter"},
        "category": REFERRAL_CATEGORY,
        "subject": patient_ref(),
        "author": [{"display": "Riverside Cardiology"}],
        "date": "2026-03-01T12:00:00Z",
        "description": "Signed referral letter",
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "title": "referral.pdf",
                    "data": base64.b64encode(PDF).decode(),
                }
            }
        ],
        **extra,
    }


def outcome_of(response) -> dict:
    body = response.json()
    OperationOutcome.model_validate(body)  # a valid R4 resource, not just OperationOutcome-ish
    return body


def expressions(outcome: dict) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


# --- one resource of each type -------------------------------------------------------------


def test_a_communication_becomes_a_routed_task_with_its_patient_and_priority(clinic, ehr):
    client, issued = ehr
    response = post(issued, communication())
    assert response.status_code == 201, response.content
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["outcome"] == "parsed"
    assert answer["queue"] == "front-desk"
    assert answer["task_type"] == "referral"
    assert answer["priority"] == 2  # "urgent"
    assert response.headers["Location"] == answer["url"]
    task = Task.objects.get(pk=answer["id"])
    assert task.channel == "fhir"
    assert task.external_id == "Communication/comm-1"
    assert task.patient_mrn == "MRN-204611"
    assert task.patient_name == "Jordan Rivera"
    assert task.request_type == "referral"
    assert "Referral for cardiology consult." in task.body
    assert task.subject == "Referral for cardiology consult."
    assert task.received_at.isoformat() == "2026-03-02T14:15:00+00:00"
    assert task.metadata["fhir"]["sender"] == "Dr. Okafor, Riverside Cardiology"
    inbound = InboundMessage.objects.get(task=task)
    assert inbound.client == client
    assert inbound.status == "parsed"
    assert task.events.first().actor_label == "client:ehr"


def test_a_communication_request_maps_stat_to_p1_and_its_reason_to_the_subject(clinic, ehr):
    _, issued = ehr
    response = post(issued, communication_request())
    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["id"])
    assert task.priority == 1
    assert task.subject == "Critical potassium result: call the patient"
    assert "K+ 6.8 mmol/L" in task.body
    assert task.patient_mrn == "pat-1"  # only the reference's id is known


def test_a_task_reads_its_contained_patient(clinic, ehr):
    _, issued = ehr
    response = post(issued, fhir_task())
    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["id"])
    assert (task.patient_mrn, task.patient_name) == ("MRN-555", "Ana Lima")
    assert task.patient_birth_date.isoformat() == "1990-04-05"
    assert task.subject == "Process referral"
    assert task.request_type == "referral"
    assert "Note: Fax cover sheet in the EHR" in task.body


def test_a_task_status_from_the_whole_value_set_is_accepted(clinic, ehr):
    # The model's metadata lists only the first four task statuses; "in-progress" is valid R4.
    _, issued = ehr
    response = post(issued, fhir_task(status="in-progress"))
    assert response.status_code == 201, response.content


def test_a_service_request_maps_asap_and_the_instruction(clinic, ehr):
    _, issued = ehr
    response = post(issued, service_request())
    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["id"])
    assert task.priority == 1
    assert task.subject == "Referral to cardiology"
    assert "Patient instruction: Bring your medication list" in task.body
    assert task.task_type.code == "referral"


def test_a_document_reference_keeps_its_inline_pdf_as_an_attachment(clinic, ehr):
    _, issued = ehr
    response = post(issued, document_reference())
    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["id"])
    attachment = Attachment.objects.get(task=task)
    assert (attachment.filename, attachment.content_type) == ("referral.pdf", "application/pdf")
    with attachment.file.open("rb") as stored:
        assert stored.read() == PDF
    assert attachment.inbound.task == task


def test_plain_application_json_is_read_as_fhir_too(clinic, ehr):
    _, issued = ehr
    response = post(issued, communication(), content_type="application/json")
    assert response.status_code == 201


# --- invalid resources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expression", "code"),
    [
        (communication(status="sent-ish"), "Communication.status", "value"),
        (communication(payload=[{}]), "Communication.payload[0]", "value"),
        (
            communication(payload=[{"contentText": "x"}]),
            "Communication.payload[0].contentText",
            "structure",
        ),
        (communication_request(status=None), "CommunicationRequest.status", "required"),
        (fhir_task(intent="whenever"), "Task.intent", "value"),
        (fhir_task(status="sometime"), "Task.status", "value"),
        (fhir_task(authoredOn="2026-03-01T08:00:00"), "Task.authoredOn", "value"),
        (service_request(subject=5), "ServiceRequest.subject", None),
        (service_request(intent=None), "ServiceRequest.intent", "required"),
        (
            document_reference(
                content=[{"attachment": {"contentType": "application/pdf", "data": "not base64!"}}]
            ),
            "DocumentReference.content[0].attachment.data",
            "value",
        ),
        (document_reference(content=None), "DocumentReference.content", "required"),
    ],
)
def test_an_invalid_resource_is_kept_and_answered_with_an_operation_outcome(
    clinic, ehr, resource, expression, code
):
    resource = {k: v for k, v in resource.items() if v is not None}
    _, issued = ehr
    response = post(issued, resource)
    assert response.status_code == 400, response.content
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    outcome = outcome_of(response)
    assert expression in expressions(outcome)
    issue = next(i for i in outcome["issue"] if expression in i.get("expression", []))
    assert issue["severity"] == "error" and issue["diagnostics"]
    if code:
        assert issue["code"] == code
    assert not Task.objects.exists()
    inbound = InboundMessage.objects.get()
    assert inbound.status == "failed"
    assert expression in inbound.error_fields


def test_an_unknown_element_is_named(clinic, ehr):
    _, issued = ehr
    response = post(issued, communication(urgency="high"))
    assert response.status_code == 400
    outcome = outcome_of(response)
    assert outcome["issue"][0]["expression"] == ["Communication.urgency"]
    assert outcome["issue"][0]["code"] == "structure"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"resourceType": "Communication", ', "structure"),
        (b"[1, 2]", "structure"),
        (json.dumps({"resourceType": "Patient", "id": "x"}).encode(), "not-supported"),
        (json.dumps({"status": "completed"}).encode(), "required"),
    ],
)
def test_what_is_not_a_supported_resource_is_refused_and_kept(clinic, ehr, body, code):
    _, issued = ehr
    response = post(issued, body)
    assert response.status_code == 400
    outcome = outcome_of(response)
    assert outcome["issue"][0]["code"] == code
    assert bytes(InboundMessage.objects.get().payload) == body


def test_a_corrected_payload_retries_into_a_task(clinic, ehr):
    from routing.intake import intake_process

    _, issued = ehr
    post(issued, communication(status="sent-ish"))
    inbound = InboundMessage.objects.get()
    inbound.corrected_payload = json.dumps(communication()).encode()
    inbound.save()
    result = intake_process(inbound=inbound, actor="system:test")
    assert result.task.external_id == "Communication/comm-1"


# --- resends and replies -------------------------------------------------------------------


def test_a_resend_of_the_same_resource_answers_200_with_the_same_task(clinic, ehr):
    _, issued = ehr
    first = post(issued, communication())
    again = post(issued, communication())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["outcome"] == "resent"
    assert Task.objects.count() == 1
    assert InboundMessage.objects.filter(status="resent").count() == 1


def test_a_communication_in_response_to_another_joins_its_task(clinic, ehr):
    _, issued = ehr
    first = post(issued, communication())
    reply = communication(
        "comm-2",
        inResponseTo=[{"reference": "Communication/comm-1"}],
        payload=[{"contentString": "The patient prefers mornings."}],
    )
    response = post(issued, reply)
    assert response.status_code == 200
    assert response.json()["id"] == first.json()["id"]
    assert response.json()["outcome"] == "reply"
    assert Task.objects.count() == 1


# --- Bundles -------------------------------------------------------------------------------


def bundle(*resources, kind="batch", extra_entries=()):
    entries = [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)]
    return {"resourceType": "Bundle", "type": kind, "entry": [*entries, *extra_entries]}


def test_a_bundle_stores_each_entry_on_its_own_and_answers_per_entry(clinic, ehr):
    _, issued = ehr
    payload = bundle(
        communication(),
        fhir_task(intent="whenever"),
        service_request(),
        {"resourceType": "Observation", "id": "o1", "status": "final"},
        document_reference(),
        extra_entries=[
            {"fullUrl": "urn:uuid:empty"},
            {"resource": communication("comm-9"), "request": {"method": "DELETE"}},
        ],
    )
    response = post(issued, payload)
    assert response.status_code == 200, response.content
    answer = response.json()
    Bundle.model_validate(answer)
    assert answer["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == [
        "201 Created",
        "400 Bad Request",
        "201 Created",
        "400 Bad Request",
        "201 Created",
        "400 Bad Request",
        "400 Bad Request",
    ]
    tasks = Task.objects.order_by("id")
    assert [e["response"].get("location") for e in answer["entry"]] == [
        f"Task/{tasks[0].pk}",
        None,
        f"Task/{tasks[1].pk}",
        None,
        f"Task/{tasks[2].pk}",
        None,
        None,
    ]
    bad = answer["entry"][1]["response"]["outcome"]
    assert expressions(bad) == ["Task.intent"]
    assert answer["entry"][3]["response"]["outcome"]["issue"][0]["code"] == "not-supported"
    assert expressions(answer["entry"][5]["response"]["outcome"]) == ["Bundle.entry[5].resource"]
    deleting = answer["entry"][6]["response"]["outcome"]["issue"][0]
    assert (deleting["code"], deleting["expression"]) == (
        "not-supported",
        ["Bundle.entry[6].request.method"],
    )

    parent = InboundMessage.objects.get(parent=None)
    assert json.loads(bytes(parent.payload)) == payload
    parts = parent.parts.order_by("id")
    assert [p.status for p in parts] == [
        "parsed",
        "failed",
        "parsed",
        "failed",
        "parsed",
        "failed",
        "failed",
    ]
    # an entry without a resource is kept as sent, for a supervisor to read and correct
    assert json.loads(bytes(parts[5].payload)) == {"fullUrl": "urn:uuid:empty"}
    assert Attachment.objects.get().task == tasks[2]


def test_a_resent_bundle_answers_200_per_entry_and_creates_nothing(clinic, ehr):
    _, issued = ehr
    payload = bundle(communication(), service_request(), kind="transaction")
    first = post(issued, payload).json()
    again = post(issued, payload).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK", "200 OK"]
    assert [e["response"]["location"] for e in again["entry"]] == [
        e["response"]["location"] for e in first["entry"]
    ]
    assert Task.objects.count() == 2


def test_a_failed_entry_is_retried_alone(clinic, ehr):
    from routing.intake import intake_process

    _, issued = ehr
    post(issued, bundle(communication(), fhir_task(intent="whenever")))
    failed = InboundMessage.objects.get(status="failed")
    assert failed.parent is not None
    fixed = json.loads(bytes(failed.payload))
    fixed["intent"] = "order"
    failed.corrected_payload = json.dumps(fixed).encode()
    failed.save()
    result = intake_process(inbound=failed, actor="system:test")
    assert result.task.external_id == "Task/task-1"
    assert Task.objects.count() == 2


def test_a_patient_entry_is_context_that_travels_with_the_entries_pointing_at_it(clinic, ehr):
    _, issued = ehr
    patient = {
        "resourceType": "Patient",
        "id": "pat-9",
        "identifier": [{"system": "urn:clinic:mrn", "value": "MRN-909"}],
        "name": [{"text": "Sam Okoye"}],
        "birthDate": "1975-01-02",
    }
    request = service_request(subject={"reference": "urn:uuid:0"})
    payload = bundle(patient, request, kind="collection")
    response = post(issued, payload)
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[1]["response"]["status"] == "201 Created"
    task = Task.objects.get()
    assert (task.patient_mrn, task.patient_name) == ("MRN-909", "Sam Okoye")
    # the stored entry names its patient by itself: a retry needs nothing else
    stored = json.loads(bytes(InboundMessage.objects.get(task=task).payload))
    assert stored["subject"]["reference"] == "#bundle-patient"


@pytest.mark.parametrize(
    ("payload", "expression"),
    [
        ({"resourceType": "Bundle", "type": "searchset", "entry": []}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "batch"}, "Bundle.entry"),
        ({"resourceType": "Bundle", "type": "batch", "entry": {}}, "Bundle.entry"),
    ],
)
def test_a_bundle_that_cannot_be_read_is_refused_whole_and_kept(clinic, ehr, payload, expression):
    _, issued = ehr
    response = post(issued, payload)
    assert response.status_code == 400
    assert expression in expressions(outcome_of(response))
    assert InboundMessage.objects.get().status == "failed"


# --- who may call --------------------------------------------------------------------------


def test_a_bad_signature_is_refused_logged_and_stores_nothing(clinic, ehr, caplog):
    _, issued = ehr
    body = json.dumps(communication()).encode()
    with caplog.at_level(logging.WARNING, logger="clinicdesk.security"):
        response = signed_post(
            URL, body, issued, content_type="application/fhir+json", signature="sha256=" + "0" * 64
        )
    assert response.status_code == 401
    assert outcome_of(response)["issue"][0]["code"] == "login"
    assert "does not match" in response.json()["issue"][0]["diagnostics"]
    assert "webhook signature refused: client=ehr" in caplog.text
    assert not Task.objects.exists()
    assert not InboundMessage.objects.exists()


def test_a_body_changed_after_signing_is_refused(clinic, ehr):
    from queues.intake import credentials

    _, issued = ehr
    ts = int(time.time())
    signature = credentials.sign(issued.signing_key, ts, json.dumps(communication()).encode())
    tampered = json.dumps(communication(priority="stat")).encode()
    response = signed_post(
        URL,
        tampered,
        issued,
        content_type="application/fhir+json",
        timestamp=ts,
        signature=signature,
    )
    assert response.status_code == 401
    assert not Task.objects.exists()


def test_missing_signature_headers_are_refused(clinic, ehr):
    _, issued = ehr
    response = post(issued, communication(), headers=False)
    assert response.status_code == 401
    assert "X-ClinicDesk-Timestamp" in response.json()["issue"][0]["diagnostics"]
    assert not Task.objects.exists() and not InboundMessage.objects.exists()


@pytest.mark.parametrize("offset", [-360, 360])
def test_a_timestamp_six_minutes_off_is_refused(clinic, ehr, offset):
    _, issued = ehr
    response = post(issued, communication(), timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert "5 minutes" in response.json()["issue"][0]["diagnostics"]
    assert not Task.objects.exists()


def test_a_replayed_request_within_the_window_gives_the_same_task(clinic, ehr):
    _, issued = ehr
    ts = int(time.time()) - 60
    first = post(issued, communication(), timestamp=ts)
    replay = post(issued, communication(), timestamp=ts)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["id"] == first.json()["id"]
    assert Task.objects.count() == 1


def test_no_token_or_an_unknown_token_is_401(clinic, ehr):
    from rest_framework.test import APIClient

    body = json.dumps(communication()).encode()
    response = APIClient().post(URL, data=body, content_type="application/fhir+json")
    assert response.status_code == 401
    response = APIClient().post(
        URL, data=body, content_type="application/fhir+json", HTTP_AUTHORIZATION="Token nope"
    )
    assert response.status_code == 401
    assert not InboundMessage.objects.exists()


def test_a_client_without_the_fhir_channel_is_403(clinic):
    _, issued = make_client("mailer", channels=["email"])
    response = post(issued, communication())
    assert response.status_code == 403
    assert outcome_of(response)["issue"][0]["code"] == "forbidden"
    kept = InboundMessage.objects.get()  # signed by a known client: kept, refused
    assert (kept.status, list(kept.error_fields)) == ("failed", ["channel"])
    assert not Task.objects.exists()


def test_another_content_type_is_415(clinic, ehr):
    _, issued = ehr
    response = post(issued, b"<Communication/>", content_type="application/fhir+xml")
    assert response.status_code == 415
    assert outcome_of(response)["issue"][0]["code"] == "not-supported"
    kept = InboundMessage.objects.get()
    assert (bytes(kept.payload), kept.status) == (b"<Communication/>", "failed")
    assert "application/fhir+json" in kept.error_fields["content_type"][0]
