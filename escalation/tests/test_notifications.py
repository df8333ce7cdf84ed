import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.models import Task as QTask
from django_q.signing import SignedPackage

from accounts.tests.factories import DepartmentFactory, UserFactory
from escalation import jobs, notifications, services
from escalation.models import Notification
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests"
MARKER = "Zqxjv7Marker"


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers with the queued status codes (200 after)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[tuple] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.requests.append((self.headers, self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def fired_webhook(url: str, **task_fields) -> Notification:
    policy = SlaPolicyFactory(first_claim_minutes=60)
    EscalationStepFactory(
        policy=policy, level=1, action="notify_webhook", webhook_url=url, webhook_secret=SECRET
    )
    TaskFactory(received_at=timezone.now() - timedelta(minutes=90), **task_fields)
    assert services.sweep() == 1
    return Notification.objects.get()


def test_webhook_is_signed_with_hmac_over_timestamp_and_body():
    with Receiver() as receiver:
        notification = fired_webhook(receiver.url)
        assert notifications.send_due() == 1

    ((headers, body),) = receiver.requests
    timestamp = headers["X-ClinicDesk-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["X-ClinicDesk-Signature"] == "sha256=" + expected.hexdigest()
    payload = json.loads(body)
    assert payload["text"].startswith(f"Task #{notification.body['task']}")
    assert payload["link"].endswith(f"/tasks/{notification.body['task']}/")
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 1)
    assert notification.sent_at is not None


def test_failed_send_is_retried_after_a_backoff_and_never_duplicated():
    with Receiver(statuses=[500]) as receiver:
        notification = fired_webhook(receiver.url)
        now = timezone.now()

        assert notifications.send_due(now=now) == 0
        notification.refresh_from_db()
        assert (notification.status, notification.attempts) == ("pending", 1)
        assert "500" in notification.last_error
        # Not again before its backoff has passed.
        assert notifications.send_due(now=now + timedelta(seconds=30)) == 0

        assert notifications.send_due(now=now + timedelta(minutes=2)) == 1
        assert notifications.send_due(now=now + timedelta(hours=2)) == 0

    assert len(receiver.requests) == 2
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 2)


def test_a_send_that_keeps_failing_ends_failed():
    with Receiver(statuses=[500] * 10) as receiver:
        notification = fired_webhook(receiver.url)
        now = timezone.now()
        for hour in range(notifications.MAX_ATTEMPTS + 2):
            notifications.send_due(now=now + timedelta(hours=hour))

    assert len(receiver.requests) == notifications.MAX_ATTEMPTS
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", notifications.MAX_ATTEMPTS)


def test_a_claimed_row_is_not_sent_by_a_second_sender():
    notification = fired_webhook("http://127.0.0.1:9/unused")
    now = timezone.now()

    assert notifications._claim(now).pk == notification.pk
    assert notifications._claim(now) is None


def test_supervisors_of_the_queue_and_an_address_are_emailed(settings):
    department = DepartmentFactory()
    queue = QueueFactory(department=department)
    supervisor = UserFactory(username="sam", email="sam@clinic.example", roles=["Supervisor"])
    supervisor.groups.add(department.group)
    UserFactory(username="other-sup", roles=["Supervisor"])  # another department's
    policy = SlaPolicyFactory(first_claim_minutes=60)
    EscalationStepFactory(policy=policy, level=1, action="notify_supervisor")
    EscalationStepFactory(policy=policy, level=2, action="notify_address", address="ops@x.example")
    TaskFactory(queue=queue, received_at=timezone.now() - timedelta(minutes=61))

    assert services.sweep() == 2
    assert notifications.send_due() == 2

    assert sorted(m.to[0] for m in mail.outbox) == ["ops@x.example", "sam@clinic.example"]


def test_no_patient_data_in_any_notification_or_job(django_capture_on_commit_callbacks):
    department = DepartmentFactory()
    queue = QueueFactory(department=department)
    supervisor = UserFactory(username="sam", email="sam@clinic.example", roles=["Supervisor"])
    supervisor.groups.add(department.group)
    policy = SlaPolicyFactory(first_claim_minutes=60)
    EscalationStepFactory(policy=policy, level=1, action="notify_supervisor")
    EscalationStepFactory(policy=policy, level=2, action="notify_address", address="ops@x.example")
    EscalationStepFactory(
        policy=policy,
        level=3,
        action="notify_webhook",
        webhook_url="http://127.0.0.1:9/closed",
        webhook_secret=SECRET,
    )
    task_type = TaskTypeFactory(default_queue=queue)
    TaskFactory(
        task_type=task_type,
        queue=queue,
        received_at=timezone.now() - timedelta(minutes=61),
        patient_name=f"Ada {MARKER}",
        patient_mrn=f"M{MARKER}",
        subject=f"Results for {MARKER}",
        body=f"Please call {MARKER} back",
        metadata={"note": MARKER},
    )
    call_command("setup_schedules", verbosity=0)

    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.sweep_job() == 3
    jobs.send_notifications_job()

    rows = list(Notification.objects.values())
    assert len(rows) == 3
    assert all(set(row["body"]) == set(notifications.BODY_KEYS) for row in rows)
    assert MARKER not in repr(rows)
    assert all(MARKER not in m.subject + m.body for m in mail.outbox)
    assert len(mail.outbox) == 2
    queued = list(OrmQ.objects.all())
    assert queued, "sweep_job enqueues the sender"
    assert all(MARKER not in repr(SignedPackage.loads(q.payload)) for q in queued)
    assert MARKER not in repr(list(QTask.objects.values()))
    assert MARKER not in repr(list(Schedule.objects.values()))
    assert {"escalation-sweep", "escalation-send-notifications"} <= set(
        Schedule.objects.values_list("name", flat=True)
    )


def test_setup_schedules_declares_the_escalation_jobs_once():
    call_command("setup_schedules", verbosity=0)
    call_command("setup_schedules", verbosity=0)

    funcs = list(Schedule.objects.values_list("func", flat=True))
    assert funcs.count("escalation.jobs.sweep_job") == 1
    assert funcs.count("escalation.jobs.send_notifications_job") == 1
    assert funcs.count("routing.jobs.resume_due_follow_ups") == 1
