"""POST /api/v1/inbound/email/: a raw RFC 822 message from a mail gateway, token and signature
checked like the FHIR webhook; answered like the intake API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from queues.models import Attachment, InboundMessage, Task
from queues.tests.inbound_support import build_intake_clinic, make_client, signed_post

pytestmark = pytest.mark.django_db

URL = "/api/v1/inbound/email/"
CORPUS = Path(__file__).parent / "email_corpus"


@pytest.fixture
def clinic():
    return build_intake_clinic()


@pytest.fixture
def gateway(clinic):
    return make_client("mail-gateway", channels=["email"], departments=[clinic["billing"]])


def post(issued, name_or_raw, **kwargs):
    raw = name_or_raw if isinstance(name_or_raw, bytes) else (CORPUS / name_or_raw).read_bytes()
    kwargs.setdefault("content_type", "message/rfc822")
    return signed_post(URL, raw, issued, **kwargs)


def test_a_message_becomes_a_task_and_a_resend_answers_with_it(clinic, gateway):
    client, issued = gateway
    first = post(issued, "02_attachments_pdf_image.eml")
    assert first.status_code == 201, first.content
    answer = first.json()
    assert (answer["outcome"], answer["queue"], answer["task_type"]) == (
        "parsed",
        "billing",
        "claim_denial",
    )
    task = Task.objects.get(pk=answer["id"])
    assert task.channel == "email" and task.external_id == "eob-77812@payer.example"
    assert Attachment.objects.filter(task=task).count() == 2
    assert task.events.first().actor_label == "client:mail-gateway"
    assert InboundMessage.objects.get(task=task).client == client

    again = post(issued, "02_attachments_pdf_image.eml")
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["outcome"]) == (task.pk, "resent")
    assert Task.objects.count() == 1


def test_a_reply_is_answered_200_with_the_task_it_joined(clinic, gateway):
    _, issued = gateway
    original = post(issued, "01_multipart_alternative.eml").json()
    reply = post(issued, "13_reply.eml")
    assert reply.status_code == 200
    assert (reply.json()["id"], reply.json()["outcome"]) == (original["id"], "reply")


def test_what_is_not_an_email_is_400_and_kept(clinic, gateway):
    _, issued = gateway
    response = post(issued, "16_not_an_email.eml")
    assert response.status_code == 400
    body = response.json()
    assert "Not an email message" in body["errors"]["non_field_errors"][0]
    inbound = InboundMessage.objects.get(pk=body["inbound_id"])
    assert inbound.status == "failed" and inbound.channel == "email"


def test_a_bad_signature_is_401_and_stores_nothing(clinic, gateway):
    _, issued = gateway
    response = post(issued, "01_multipart_alternative.eml", signature="sha256=" + "ab" * 32)
    assert response.status_code == 401
    assert "does not match" in response.json()["detail"]
    assert not InboundMessage.objects.exists() and not Task.objects.exists()


def test_an_old_timestamp_is_401(clinic, gateway):
    _, issued = gateway
    response = post(issued, "01_multipart_alternative.eml", timestamp=int(time.time()) - 400)
    assert response.status_code == 401
    assert not Task.objects.exists()


def test_a_client_without_the_email_channel_is_403(clinic):
    _, issued = make_client("ehr-only", channels=["fhir"])
    response = post(issued, "01_multipart_alternative.eml")
    assert response.status_code == 403
    assert InboundMessage.objects.get().status == "failed"
    assert not Task.objects.exists()


def test_another_content_type_is_415(clinic, gateway):
    _, issued = gateway
    response = post(issued, "01_multipart_alternative.eml", content_type="text/plain")
    assert response.status_code == 415
    assert "message/rfc822" in response.json()["detail"]
