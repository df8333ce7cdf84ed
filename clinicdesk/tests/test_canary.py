"""The patient-data canary: a marker in every patient field of every way a request comes in,
driven end to end in-process — API intake (a message with a file, a voicemail, a payload that
fails), the FHIR and email webhooks, the front-desk form, routing, claim, hold, resume and
resolve on the pages, Failed intake's retry, an escalation sweep that notifies by email and by
webhook, every scheduled job, a 404, a 403 and a 500 — and then looked for everywhere the
clinic's data must not go: log lines, django-q2 queue, task and failure rows, notifications,
webhook bodies, emails and error pages.

The SQL log (`django.db.backends`) is left out on purpose: it quotes query parameters, and
the settings keep it at WARNING, where it never logs a statement (Django logs SQL only with
DEBUG on anyway).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import include, path
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.models import Task as QTask
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from accounts.tests.factories import StaffProfileFactory, UserFactory
from escalation.models import Notification
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from escalation.tests.test_notifications import Receiver
from queues.models import InboundMessage, Task
from queues.tests.inbound_support import build_intake_clinic, make_client, signed_post

pytestmark = pytest.mark.django_db

CANARY = "CANARY-7f3a"
BIRTH_DATE = "1903-07-14"
PHONE = "+1 555 013 7731"
# Every way the date of birth and the phone number could be written out.
SPELLINGS = [
    BIRTH_DATE,
    "07/14/1903",
    "14/07/1903",
    "July 14, 1903",
    "Jul. 14, 1903",
    "14 Jul 1903",
    "013 7731",
    "0137731",
]
WEBHOOK_SECRET = "canary-webhook-secret"


def canary(field: str) -> str:
    return f"{CANARY}-{field}"


def found(text: str) -> list[str]:
    """The canary's traces in a text, each with what follows it (names the leaking field)."""
    hits = re.findall(rf"{re.escape(CANARY)}[\w-]*", text, flags=re.I)
    return sorted(set(hits) | {s for s in SPELLINGS if s.lower() in text.lower()})


# --- capture ---------------------------------------------------------------------------------


class Capture(logging.Handler):
    """Every record of every logger, as a text: message, arguments and exception."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self.formatter_ = logging.Formatter()

    def emit(self, record):
        parts = [f"{record.name} {record.levelname}: {record.getMessage()}", repr(record.args)]
        if record.exc_info:
            parts.append(self.formatter_.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        self.texts.append("\n".join(parts))


@pytest.fixture
def logs():
    """The root logger at DEBUG, as LOG_LEVEL=DEBUG would set it in production. Loggers the
    settings (or Django) configure keep their own level, as they would there: Django's own at
    INFO, the SQL log at WARNING."""
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


# --- the test-only routes: a view that fails with a patient's request in hand -----------------


def failing_view(request):
    task = Task.objects.get(pk=int(request.POST["task"]))
    if task.patient_name:
        raise RuntimeError("The report could not be built.")
    return HttpResponse("unreachable")


urlpatterns = [
    path("canary-500/", failing_view),
    path("", include("clinicdesk.urls")),
]


# --- the requests ----------------------------------------------------------------------------


def api_intake(**fields) -> dict:
    return {
        "channel": "api",
        "subject": canary("api-subject"),
        "body": f"Please call {canary('api-body')} back on {PHONE}.",
        "patient": {"mrn": canary("api-mrn"), "name": canary("api-name"), "birth_date": BIRTH_DATE},
        "request_type": "referral",
        "metadata": {"portal_thread": canary("api-metadata"), "callback_number": PHONE},
        "received_at": (timezone.now() - timedelta(hours=3)).isoformat(),
        **fields,
    }


def fhir_task_resource() -> dict:
    return {
        "resourceType": "Task",
        "id": "canary-fhir-1",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"code": "referral", "display": "Process referral"}]},
        "description": canary("fhir-description"),
        "for": {"reference": "#p1"},
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [
                    {
                        "type": {"coding": [{"code": "MR"}]},
                        "system": "urn:clinic",
                        "value": canary("fhir-mrn"),
                    }
                ],
                "name": [{"given": [canary("fhir-given")], "family": canary("fhir-family")}],
                "birthDate": BIRTH_DATE,
                "telecom": [{"system": "phone", "value": PHONE}],
            }
        ],
        "requester": {"display": "Riverside Cardiology"},
        "authoredOn": "2026-03-01T08:00:00Z",
        "note": [{"text": canary("fhir-note")}],
    }


def email_message() -> bytes:
    attachment = base64.b64encode(canary("email-attachment-content").encode()).decode()
    return f"""From: Ana {CANARY}-email-name <{CANARY.lower()}-email@patient.example>
To: intake@clinic.example
Subject: Referral {canary("email-subject")}
Date: Tue, 03 Mar 2026 11:02:13 +0000
Message-ID: <{CANARY.lower()}-email-1@patient.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="canary-boundary"

--canary-boundary
Content-Type: text/plain; charset=us-ascii

Referral for {canary("email-body")}, born {BIRTH_DATE}, call {PHONE}.

--canary-boundary
Content-Type: text/plain; name="{canary("email-file")}.txt"
Content-Disposition: attachment; filename="{canary("email-file")}.txt"
Content-Transfer-Encoding: base64

{attachment}
--canary-boundary--
""".replace("\n", "\r\n").encode()


def act(client: Client, task: Task, action: str, **data):
    task.refresh_from_db()
    response = client.post(
        f"/tasks/{task.pk}/{action}/", {"expected_version": task.version, **data}
    )
    assert response.status_code == 302, (action, response.status_code)
    messages = [str(m) for m in response.wsgi_request._messages]
    assert not any("not" in m and "possible" in m for m in messages), messages
    return response


def run_queued_jobs() -> list[str]:
    """What the broker holds (decoded), then each job run as a worker would, synchronously."""
    seen = []
    for queued in OrmQ.objects.all():
        package = SignedPackage.loads(queued.payload)
        seen.append(repr(package))
        async_task(package["func"], *package["args"], sync=True, **package["kwargs"])
        queued.delete()
    return seen


def run_every_schedule() -> None:
    call_command("setup_schedules", verbosity=0)
    for schedule in Schedule.objects.all():
        async_task(schedule.func, sync=True, task_name=f"canary-{schedule.name}")


# --- the test --------------------------------------------------------------------------------


@override_settings(ROOT_URLCONF=__name__, DEBUG=False, SITE_URL="https://desk.clinic.example")
def test_no_patient_data_leaves_through_logs_jobs_notifications_or_error_pages(
    logs, django_capture_on_commit_callbacks, settings
):
    clinic = build_intake_clinic()
    front_desk, billing = clinic["front_desk"], clinic["billing"]
    frank = clinic["frank"]
    supervisor = StaffProfileFactory(
        user=UserFactory(username="sam", email="sam@clinic.example", roles=["Supervisor"]),
        departments=[front_desk, billing],
    ).user
    compliance = UserFactory(username="carol", roles=["Compliance"])
    _, ehr_issued = make_client(
        "canary-ehr", channels=["api", "phone", "fhir", "email"], departments=[front_desk]
    )
    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=120)
    EscalationStepFactory(policy=policy, level=1, action="notify_supervisor")
    EscalationStepFactory(
        policy=policy, level=2, action="notify_address", address="ops@clinic.example"
    )
    error_pages: list[str] = []
    api = Client(HTTP_AUTHORIZATION=f"Token {ehr_issued.token}")

    with Receiver() as receiver:
        EscalationStepFactory(
            policy=policy,
            level=3,
            action="notify_webhook",
            webhook_url=receiver.url,
            webhook_secret=WEBHOOK_SECRET,
        )
        with django_capture_on_commit_callbacks(execute=True):
            # --- intake: the API (with a file), a voicemail, a failure; FHIR; email; the form
            file = base64.b64encode(canary("api-attachment-content").encode()).decode()
            sent = api_intake(
                external_id=canary("api-id"),
                attachments=[
                    {
                        "filename": f"{canary('api-file')}.txt",
                        "content_type": "text/plain",
                        "content_base64": file,
                    }
                ],
            )
            response = api.post("/api/v1/intake/", sent, content_type="application/json")
            assert response.status_code == 201, response.content
            api_task = Task.objects.get(pk=response.json()["id"])

            voicemail = api_intake(
                channel="phone",
                external_id="canary-vm-1",
                voicemail={"caller_number": PHONE, "transcript": canary("voicemail-transcript")},
            )
            response = api.post("/api/v1/intake/", voicemail, content_type="application/json")
            assert response.status_code == 201, response.content

            broken = api_intake(
                external_id="canary-broken-1",
                patient={"name": canary("broken-name"), "birth_date": canary("broken-date")},
            )
            response = api.post("/api/v1/intake/", broken, content_type="application/json")
            assert response.status_code == 400
            failed = InboundMessage.objects.get(pk=response.json()["inbound_id"])

            body = json.dumps(fhir_task_resource()).encode()
            response = signed_post(
                "/api/v1/inbound/fhir/", body, ehr_issued, content_type="application/fhir+json"
            )
            assert response.status_code in (200, 201), response.content
            bad_task = fhir_task_resource()
            bad_task["id"] = "canary-fhir-2"
            bad_task["contained"][0]["birthDate"] = canary("fhir-bad-date")
            bad = json.dumps(bad_task).encode()
            response = signed_post(
                "/api/v1/inbound/fhir/", bad, ehr_issued, content_type="application/fhir+json"
            )
            assert response.status_code == 400

            response = signed_post(
                "/api/v1/inbound/email/", email_message(), ehr_issued, content_type="message/rfc822"
            )
            assert response.status_code in (200, 201), response.content

            desk = Client()
            desk.force_login(frank)
            response = desk.post(
                "/intake/new/",
                {
                    "channel": "phone",
                    "task_type": "referral",
                    "subject": canary("form-subject"),
                    "details": canary("form-details"),
                    "patient_mrn": canary("form-mrn"),
                    "patient_name": canary("form-name"),
                    "patient_birth_date": BIRTH_DATE,
                    "callback_number": PHONE,
                    "urgency": "3",
                },
            )
            assert response.status_code in (200, 302), response.status_code

            # --- the pages: claim, hold, resume, resolve; Failed intake's retry
            api_task.refresh_from_db()
            assert api_task.queue == clinic["front_queue"]
            page = desk.get(f"/tasks/{api_task.pk}/")
            # Where the patient's data belongs, the search finds it: the task page shows it.
            assert canary("api-name") in found(page.content.decode()), "the search is blind"
            if api_task.status == Task.Status.QUEUED:
                act(desk, api_task, "claim")
            api_task.refresh_from_db()
            if api_task.status == Task.Status.ASSIGNED:
                act(desk, api_task, "start")
            later = timezone.localtime() + timedelta(days=1)
            act(
                desk,
                api_task,
                "hold",
                reason="Waiting for the referral letter",
                follow_up_at=later.strftime("%Y-%m-%dT%H:%M"),
            )
            act(desk, api_task, "resume")
            act(desk, api_task, "resolve", outcome="Done")

            overseer = Client()
            overseer.force_login(supervisor)
            assert overseer.get("/intake/failed/").status_code == 200
            assert overseer.get(f"/intake/failed/{failed.pk}/").status_code == 200
            assert overseer.post(f"/intake/failed/{failed.pk}/retry/").status_code == 302

            # --- escalation: the sweep fires the steps of every task past its targets
            run_every_schedule()
        queued = run_queued_jobs()
        run_every_schedule()

        # --- a 404, a 403 and a 500
        someone_else = Client()
        someone_else.force_login(clinic["alice"])
        for url in (f"/tasks/{api_task.pk}/", f"/api/v1/tasks/{api_task.pk}/"):
            response = someone_else.get(url)
            assert response.status_code == 404
            error_pages.append(response.content.decode())
        reviewer = Client()
        reviewer.force_login(compliance)
        response = reviewer.post(f"/tasks/{api_task.pk}/comment/", {"text": "x"})
        assert response.status_code == 403
        error_pages.append(response.content.decode())
        crashing = Client(raise_request_exception=False)
        crashing.force_login(frank)
        response = crashing.post(
            "/canary-500/", {"task": api_task.pk, "patient_name": canary("error-post")}
        )
        assert response.status_code == 500
        error_pages.append(response.content.decode())
        webhook_bodies = [body.decode(errors="replace") for _, body in receiver.requests]

    notifications = list(Notification.objects.values())
    assert notifications, "the sweep notified nobody: the canary saw no notification"
    assert receiver.requests, "no webhook was sent"
    assert mail.outbox, "no email was sent"
    assert QTask.objects.exists(), "no job ran"
    assert Task.objects.filter(patient_name__icontains=CANARY).count() >= 4

    places = {
        "log records": logs.texts,
        "jobs waiting in the broker": queued,
        "job rows (success and failure)": [repr(row) for row in QTask.objects.values()],
        "queued job rows": [repr(SignedPackage.loads(q.payload)) for q in OrmQ.objects.all()],
        "notifications": [repr(row) for row in notifications],
        "webhook bodies": webhook_bodies,
        "emails": [
            repr((m.subject, m.body, m.to, m.extra_headers, m.attachments))
            + repr(getattr(m, "alternatives", ()))
            for m in mail.outbox
        ],
        "error pages": error_pages,
    }
    leaks = {
        where: sorted({hit for text in texts for hit in found(text)})
        for where, texts in places.items()
    }
    leaks = {where: hits for where, hits in leaks.items() if hits}
    assert not leaks, f"patient data found in: {leaks}"
