"""POST /api/v1/intake/: a request becomes one routed task, every problem is named, and every
payload is kept, whatever became of it."""

from __future__ import annotations

import base64
import json
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from queues.intake import store
from queues.models import Attachment, InboundMessage, IntegrationClient, Task, TaskEvent
from queues.tests.test_task_page import build_clinic

pytestmark = pytest.mark.django_db

URL = "/api/v1/intake/"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


@pytest.fixture
def clinic():
    return build_clinic()


def make_client(name="ehr", channels=("api", "phone", "fax"), departments=()):
    client, issued = store.integration_client_create(
        name=name, channels=list(channels), departments=departments
    )
    return client, issued.token


def api(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def ehr(clinic):
    return make_client()


def payload(**overrides) -> dict:
    data = {
        "channel": "api",
        "external_id": "msg-1001",
        "subject": "Claim denied for the March visit",
        "body": "The payer denied the claim; please check the coding.",
        "patient": {"mrn": "MRN-204611", "name": "Jordan M. Rivera", "birth_date": "1984-03-12"},
        "request_type": "billing",
        "metadata": {"portal_thread": "t-88"},
    }
    data.update(overrides)
    return data


def post(token, data, **extra):
    return api(token).post(URL, data, format="json", **extra)


def test_a_request_becomes_a_routed_task(ehr, clinic):
    response = post(ehr[1], payload())
    assert response.status_code == 201, response.json()
    body = response.json()
    task = Task.objects.get(pk=body["id"])
    assert body == {
        "id": task.pk,
        "status": task.status,
        "outcome": "parsed",
        "queue": "billing",
        "task_type": "claim_denial",
        "priority": task.priority,
        "assignee": task.assignee.username if task.assignee else None,
        "duplicate_of": None,
        "url": f"http://testserver/api/v1/tasks/{task.pk}/",
        "web_url": f"http://testserver{reverse('queues:task', args=[task.pk])}",
    }
    assert (task.channel, task.external_id, task.source_system) == ("api", "msg-1001", "ehr")
    assert task.patient_birth_date == date(1984, 3, 12)
    assert task.metadata["portal_thread"] == "t-88"
    created = TaskEvent.objects.get(task=task, kind=TaskEvent.Kind.CREATED)
    assert created.actor_label == "client:ehr"
    inbound = InboundMessage.objects.get(task=task)
    assert inbound.status == InboundMessage.Status.PARSED
    assert inbound.client == ehr[0]
    assert json.loads(bytes(inbound.payload))["external_id"] == "msg-1001"
    assert "Authorization" not in inbound.headers


def test_a_resend_answers_200_with_the_same_task(ehr):
    first = post(ehr[1], payload())
    again = post(ehr[1], payload(subject="Claim denied (resent)"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["outcome"] == "resent"
    assert Task.objects.filter(external_id="msg-1001").count() == 1
    statuses = InboundMessage.objects.order_by("id").values_list("status", flat=True)
    assert list(statuses) == ["parsed", "resent"]


def test_the_same_external_id_on_another_channel_is_another_request(ehr):
    post(ehr[1], payload())
    voicemail = payload(
        channel="phone", voicemail={"caller_number": "+1 555 010 4477", "transcript": "Hi"}
    )
    response = post(ehr[1], voicemail)
    assert response.status_code == 201
    assert Task.objects.filter(external_id="msg-1001").count() == 2


def test_urgency_and_received_at_reach_the_task(ehr):
    received = timezone.now() - timedelta(hours=2)
    response = post(ehr[1], payload(urgency=1, received_at=received.isoformat()))
    task = Task.objects.get(pk=response.json()["id"])
    assert task.priority == 1
    assert task.received_at == received


# --- every field's problem, named, with the fix ---------------------------------------------

FIELD_ERRORS = [
    ({"channel": "pigeon"}, "channel", "Use one of"),
    ({"channel": None}, "channel", "null"),
    ({"external_id": ""}, "external_id", "blank"),
    ({"external_id": "x" * 201}, "external_id", "200"),
    ({"subject": ""}, "subject", "one-line subject"),
    ({"subject": "s" * 301}, "subject", "300"),
    ({"patient": "MRN-1"}, "patient", "dictionary"),
    ({"patient": {}}, "patient", "MRN, or their name and date of birth"),
    ({"patient": {"name": "Jo Rivera"}}, "patient", "MRN, or their name and date of birth"),
    ({"patient": {"mrn": "M" * 41}}, "patient.mrn", "40"),
    ({"patient": {"mrn": "M1", "birth_date": "12/03/1984"}}, "patient.birth_date", "YYYY-MM-DD"),
    ({"patient": {"mrn": "M1", "birth_date": "2999-01-01"}}, "patient.birth_date", "future"),
    ({"request_type": "r" * 61}, "request_type", "60"),
    ({"urgency": 0}, "urgency", "1"),
    ({"urgency": 5}, "urgency", "4"),
    ({"urgency": "soon"}, "urgency", "integer"),
    ({"received_at": "yesterday"}, "received_at", "format"),
    ({"received_at": "2999-01-01T00:00:00Z"}, "received_at", "future"),
    ({"metadata": ["a"]}, "metadata", "dictionary"),
    ({"metadata": {"blob": "x" * 20_000}}, "metadata", "16 KiB"),
    ({"metadata": {"voicemail": {"audio_url": "javascript:x"}}}, "metadata", "rename your key"),
    ({"attachments": {"filename": "a"}}, "attachments", "list"),
    ({"attachments": [{"content_type": "text/plain", "content_base64": "aGk="}]},
     "attachments.0.filename", "required"),
    ({"attachments": [{"filename": "a.txt", "content_type": "text", "content_base64": "aGk="}]},
     "attachments.0.content_type", "media type"),
    ({"attachments": [{"filename": "a.txt", "content_type": "text/plain",
                       "content_base64": "not base64!"}]},
     "attachments.0.content_base64", "base64"),
    ({"attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": ""}]},
     "attachments.0.content_base64", "blank"),
    ({"voicemail": {"caller_number": "+1 555"}}, "voicemail", "only for channel phone"),
    ({"fax": {"from_number": "+1 555"}}, "fax", "only for channel fax"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field", "says"), FIELD_ERRORS)
def test_each_field_error_is_named_with_its_fix(ehr, change, field, says):
    response = post(ehr[1], payload(**change))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [field], errors
    assert says in " ".join(errors[field])
    assert not Task.objects.exists()
    inbound = InboundMessage.objects.get(pk=response.json()["inbound_id"])
    assert inbound.status == InboundMessage.Status.FAILED
    assert inbound.error_fields == errors
    assert json.loads(bytes(inbound.payload)) == payload(**change)


def test_missing_fields_are_named_all_at_once(ehr):
    response = post(ehr[1], {"channel": "api", "patient": {"mrn": "M1", "birth_date": "x"}})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {
        "external_id",
        "subject",
        "patient.birth_date",
    }


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"channel": "api",', "not valid JSON"),
        (b"[1, 2]", "one JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_kept_and_refused(ehr, body, says):
    response = api(ehr[1]).post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert says in response.json()["errors"]["non_field_errors"][0]
    inbound = InboundMessage.objects.get(pk=response.json()["inbound_id"])
    assert (bytes(inbound.payload), inbound.status) == (body, "failed")


def test_another_content_type_is_kept_and_refused_with_415(ehr):
    response = api(ehr[1]).post(URL, b"subject=hi", content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    inbound = InboundMessage.objects.get()
    assert (bytes(inbound.payload), inbound.status) == (b"subject=hi", "failed")


def test_a_body_over_the_limit_is_refused_with_413(ehr, settings):
    settings.INTAKE_MAX_BODY_BYTES = 2048
    response = post(ehr[1], payload(body="x" * 4000))
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


# --- who may submit -------------------------------------------------------------------------


def test_no_token_is_401(clinic):
    response = api().post(URL, payload(), format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_an_unknown_token_is_401_and_submits_nothing(ehr):
    response = post(ehr[1] + "x", payload())
    assert response.status_code == 401
    assert response.json() == {"detail": "Unknown or revoked token."}
    assert not InboundMessage.objects.exists()


def test_a_revoked_token_is_401(ehr):
    IntegrationClient.objects.filter(pk=ehr[0].pk).update(is_active=False)
    assert post(ehr[1], payload()).status_code == 401


def test_each_client_submits_as_itself(ehr):
    pbx, pbx_token = make_client("pbx", channels=["phone"])
    voicemail = payload(
        channel="phone", voicemail={"caller_number": "+1 555 010 4477", "transcript": "Hi"}
    )
    response = post(pbx_token, voicemail)
    assert response.status_code == 201
    task = Task.objects.get(pk=response.json()["id"])
    assert task.source_system == "pbx"
    assert InboundMessage.objects.get(task=task).client == pbx


def test_a_channel_not_granted_is_403_naming_the_allowed_ones_and_kept(ehr):
    portal = payload(channel="portal")
    response = post(ehr[1], portal)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("This client may submit on api, fax, phone only")
    assert not Task.objects.exists()
    inbound = InboundMessage.objects.get()
    assert (inbound.status, inbound.channel, inbound.client) == ("failed", "portal", ehr[0])
    assert "channel" in inbound.error_fields
    assert json.loads(bytes(inbound.payload)) == portal


def test_staff_log_requests_with_the_form_not_the_api(clinic):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinic["frank"])
    response = client.post(URL, payload(), format="json")
    assert response.status_code == 403


# --- phone and fax --------------------------------------------------------------------------


def test_a_voicemail_becomes_a_task_with_its_transcript_and_recording(ehr):
    audio = b"ID3\x03\x00fake-mp3-frames" * 10
    response = post(
        ehr[1],
        {
            "channel": "phone",
            "external_id": "vm-5521",
            "patient": {"name": "John Park", "birth_date": "1979-11-02"},
            "voicemail": {
                "caller_number": "+1 555 010 4477",
                "transcript": "Hi, this is John Park, I need to move my Tuesday appointment.",
                "audio_url": "https://pbx.example.org/vm/5521.mp3",
                "audio_id": "5521",
                "duration_seconds": 31,
            },
            "attachments": [
                {
                    "filename": "5521.mp3",
                    "content_type": "audio/mpeg",
                    "content_base64": base64.b64encode(audio).decode(),
                }
            ],
        },
    )
    assert response.status_code == 201, response.json()
    task = Task.objects.get(pk=response.json()["id"])
    assert task.subject == "Voicemail from +1 555 010 4477"
    assert task.body.startswith("Hi, this is John Park")
    assert task.metadata["voicemail"] == {
        "caller_number": "+1 555 010 4477",
        "audio_url": "https://pbx.example.org/vm/5521.mp3",
        "audio_id": "5521",
        "duration_seconds": 31,
    }
    attachment = Attachment.objects.get(task=task)
    assert attachment.inbound == InboundMessage.objects.get(task=task)
    assert (attachment.filename, attachment.content_type, attachment.size) == (
        "5521.mp3",
        "audio/mpeg",
        len(audio),
    )
    with attachment.file.open("rb") as stored:
        assert stored.read() == audio


@pytest.mark.parametrize(
    ("voicemail", "field", "says"),
    [
        (None, "voicemail", "needs its voicemail"),
        ({"caller_number": "call me"}, "voicemail.caller_number", "phone number"),
        ({"caller_number": "+1 555 010 4477"}, "voicemail.transcript", "transcript"),
        (
            {"caller_number": "+1 555", "transcript": "x", "audio_url": "pbx/1"},
            "voicemail.audio_url",
            "URL",
        ),
    ],
)
def test_a_voicemail_without_what_it_needs_is_refused(ehr, voicemail, field, says):
    data = payload(channel="phone", subject="")
    if voicemail is not None:
        data["voicemail"] = voicemail
    response = post(ehr[1], data)
    assert response.status_code == 400
    assert says in " ".join(response.json()["errors"][field])


def test_a_voicemail_attachment_must_be_audio(ehr):
    data = payload(
        channel="phone",
        voicemail={"caller_number": "+1 555 010 4477", "transcript": "Hi"},
        attachments=[{"filename": "a.pdf", "content_type": "application/pdf",
                      "content_base64": base64.b64encode(PDF).decode()}],
    )  # fmt: skip
    response = post(ehr[1], data)
    assert response.json()["errors"] == {
        "attachments.0.content_type": [
            "A voicemail's attachment is its recording: send an audio/* file."
        ]
    }


def fax_payload(**overrides) -> dict:
    data = {
        "channel": "fax",
        "external_id": "fax-88120",
        "patient": {"mrn": "MRN-204611"},
        "fax": {
            "from_number": "+1 555 222 0199",
            "to_number": "+1 555 222 0100",
            "sender_name": "Lakeside Cardiology",
            "pages": 3,
            "cover_note": "Referral for echo, please schedule.",
        },
        "attachments": [
            {
                "filename": "referral.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(PDF).decode(),
            }
        ],
    }
    data.update(overrides)
    return data


def test_a_fax_becomes_a_task_with_its_pdf_and_cover_sheet(ehr):
    response = post(ehr[1], fax_payload())
    assert response.status_code == 201, response.json()
    task = Task.objects.get(pk=response.json()["id"])
    assert task.subject == "Fax from Lakeside Cardiology, 3 pages"
    assert task.body == "Referral for echo, please schedule."
    assert task.metadata["fax"]["from_number"] == "+1 555 222 0199"
    attachment = Attachment.objects.get(task=task)
    assert (attachment.content_type, attachment.size) == ("application/pdf", len(PDF))
    with attachment.file.open("rb") as stored:
        assert stored.read() == PDF


def test_a_fax_resent_stores_its_pdf_once(ehr):
    post(ehr[1], fax_payload())
    assert post(ehr[1], fax_payload()).status_code == 200
    assert Attachment.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"fax": None}, "fax", "cover sheet"),
        ({"attachments": []}, "attachments", "attach the PDF"),
        (
            {"attachments": [{"filename": "x.pdf", "content_type": "application/pdf",
                              "content_base64": base64.b64encode(b"GIF89a").decode()}]},
            "attachments.0.content_base64",
            "not a PDF",
        ),
        (
            {"attachments": [{"filename": "x.png", "content_type": "image/png",
                              "content_base64": base64.b64encode(b"png").decode()}]},
            "attachments.0.content_type",
            "application/pdf",
        ),
        ({"fax": {"pages": 0}}, "fax.from_number", "required"),
    ],
)  # fmt: skip
def test_a_fax_without_its_pdf_or_cover_sheet_is_refused(ehr, change, field, says):
    data = fax_payload(**change)
    data = {key: value for key, value in data.items() if value is not None}
    response = post(ehr[1], data)
    assert response.status_code == 400
    assert says in " ".join(response.json()["errors"][field]), response.json()
    assert not Attachment.objects.exists()


def test_an_attachment_over_the_size_limit_is_named(ehr, monkeypatch):
    monkeypatch.setattr("queues.intake.api.MAX_ATTACHMENT_BYTES", 16)
    response = post(ehr[1], fax_payload())
    assert response.status_code == 400
    assert "the limit is" in response.json()["errors"]["attachments.0.content_base64"][0]


def test_a_fax_may_come_as_a_multipart_upload(ehr):
    data = fax_payload()
    del data["attachments"]
    pdf = PDF + bytes(range(256))  # binary bytes, CR and LF included, survive as they are
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api(ehr[1]).post(
        URL,
        {
            "payload": json.dumps(data),
            "file": SimpleUploadedFile("scan.pdf", pdf, content_type="application/pdf"),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    task = Task.objects.get(pk=response.json()["id"])
    attachment = Attachment.objects.get(task=task)
    assert attachment.filename == "scan.pdf"
    with attachment.file.open("rb") as stored:
        assert stored.read() == pdf
    inbound = InboundMessage.objects.get(task=task)
    assert inbound.content_type.startswith("multipart/form-data; boundary=")


def test_a_multipart_upload_without_its_payload_part_is_named(ehr):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api(ehr[1]).post(
        URL,
        {"file": SimpleUploadedFile("scan.pdf", PDF, content_type="application/pdf")},
        format="multipart",
    )
    assert response.status_code == 400
    assert "payload" in response.json()["errors"]


def test_a_corrected_failed_fax_is_retried_by_the_same_adapter(ehr):
    from routing.intake import intake_process

    broken = fax_payload(patient={})
    response = post(ehr[1], broken)
    inbound = InboundMessage.objects.get(pk=response.json()["inbound_id"])
    fixed = json.dumps(fax_payload()).encode()
    store.inbound_correct(inbound=inbound, payload=fixed, user=ehr[0].user)
    result = intake_process(inbound=inbound, actor="system:test")
    assert result is not None and result.created
    assert Attachment.objects.get(task=result.task).inbound == inbound


def test_a_fax_pdf_never_shows_in_task_lists_or_details(ehr, clinic):
    task_id = post(ehr[1], fax_payload()).json()["id"]
    front_desk = clinic["review_queue"].department
    _, token = make_client("reader", channels=["api"], departments=[front_desk])
    listed = api(token).get("/api/v1/tasks/").json()["results"]
    assert [row["id"] for row in listed] == [task_id]
    assert "attachments" not in listed[0]
    detail = api(token).get(f"/api/v1/tasks/{task_id}/").json()
    assert [a["filename"] for a in detail["attachments"]] == ["referral.pdf"]
    encoded = base64.b64encode(PDF).decode()
    assert encoded not in json.dumps(listed) and encoded not in json.dumps(detail)


def test_without_active_rules_the_request_is_kept_and_answered_503(ehr, clinic):
    from routing.models import RuleSet

    RuleSet.objects.update(status=RuleSet.Status.DRAFT)
    response = post(ehr[1], payload())
    assert response.status_code == 503
    assert json.loads(bytes(InboundMessage.objects.get().payload))["external_id"] == "msg-1001"
    assert not Task.objects.exists()


def test_a_resend_is_answered_with_its_task_even_while_no_rules_are_active(ehr, clinic):
    from routing.models import RuleSet

    first = post(ehr[1], payload())
    RuleSet.objects.update(status=RuleSet.Status.DRAFT)

    again = post(ehr[1], payload())

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Task.objects.count() == 1


def test_the_task_page_shows_the_caller_and_the_recording(ehr, clinic, client):
    response = post(
        ehr[1],
        payload(
            channel="phone",
            subject="",
            voicemail={
                "caller_number": "+1 555 010 4477",
                "transcript": "Please call me back about parking.",
                "audio_url": "https://pbx.example.org/vm/5521.mp3",
                "duration_seconds": 31,
            },
        ),
    )
    task = Task.objects.get(pk=response.json()["id"])
    client.force_login(
        clinic["sam"] if task.queue.department.code == "billing" else clinic["frank"]
    )
    page = client.get(reverse("queues:task", args=[task.pk])).content.decode()
    assert "+1 555 010 4477" in page
    assert 'href="https://pbx.example.org/vm/5521.mp3"' in page
    assert "(31 s)" in page
