"""Emergency access ("break the glass"): an agent reads a task outside their departments after
giving a reason; read-only, for a limited time, recorded in the audit and emailed to
compliance. Without a grant, another department's task is still a plain 404."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from clinicdesk.audit.emergency import emergency_alert_job
from clinicdesk.audit.models import AuditEvent
from queues import selectors
from queues.models import Attachment, EmergencyAccess, Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db

REASON = "Patient on the phone about a denied claim; billing line is down"
PATIENT = "Jordan Rivera-Emergencytest"


def member(department, username, *, roles=("Agent",)):
    return StaffProfileFactory(
        user=UserFactory(username=username, roles=list(roles)), departments=[department]
    ).user


@pytest.fixture
def clinic():
    """Billing (alice, agent; sam, supervisor) owns the task; frank and vera (supervisor) work
    the front desk; carol reads for compliance, max manages; olga is a compliance reviewer
    who left."""
    billing = DepartmentFactory(name="Billing", code="billing")
    front_desk = DepartmentFactory(name="Front desk", code="front-desk")
    claims = QueueFactory(department=billing, name="Claims", code="claims")
    QueueFactory(department=front_desk, name="Front desk", code="front-desk")
    task_type = TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=claims)
    task = TaskFactory(task_type=task_type, queue=claims, patient_name=PATIENT)
    olga = UserFactory(username="olga", roles=["Compliance"])
    olga.is_active = False
    olga.save()
    return {
        "task": task,
        "alice": member(billing, "alice"),
        "sam": member(billing, "sam", roles=("Supervisor",)),
        "frank": member(front_desk, "frank"),
        "vera": member(front_desk, "vera", roles=("Supervisor",)),
        "carol": UserFactory(username="carol", roles=["Compliance"]),
        "max": UserFactory(username="max", roles=["Manager"]),
    }


def text_of(response) -> str:
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(text))


def break_glass(client, number, reason=REASON):
    return client.post(
        reverse("queues:emergency_access"), {"task_number": number, "reason": reason}
    )


def task_url(task: Task) -> str:
    return reverse("queues:task", args=[task.pk])


def emergency_reads(task: Task):
    return LogEntry.objects.filter(
        action=LogEntry.Action.ACCESS, object_id=task.pk, additional_data__via="emergency"
    )


# --- Without a grant ---------------------------------------------------------------------------


def test_another_departments_task_is_still_404_and_the_page_offers_emergency_access(client, clinic):
    task = clinic["task"]
    client.force_login(clinic["frank"])
    session = client.session
    session["nav_roles"] = ["Agent"]  # as signing in sets it
    session.save()

    response = client.get(task_url(task))

    assert response.status_code == 404
    assert PATIENT not in response.content.decode()
    link = f"{reverse('queues:emergency_access')}?task={task.pk}"
    assert link in response.content.decode()
    # The same link for a number no task has: the 404 does not tell them apart.
    missing = client.get(reverse("queues:task", args=[task.pk + 1000]))
    assert f"?task={task.pk + 1000}" in missing.content.decode()
    assert client.get(reverse("queues:task_timeline", args=[task.pk])).status_code == 404
    assert not EmergencyAccess.objects.exists()


def test_a_reason_is_required_and_nothing_is_recorded_without_one(client, clinic):
    client.force_login(clinic["frank"])

    response = break_glass(client, clinic["task"].pk, reason="need it")

    assert response.status_code == 400
    assert "Say why you need this task now, in at least 15 characters" in text_of(response)
    assert not EmergencyAccess.objects.exists()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.EMERGENCY).exists()
    assert client.get(task_url(clinic["task"])).status_code == 404


# --- The grant ---------------------------------------------------------------------------------


def test_an_agent_breaks_the_glass_and_reads_the_task_with_a_banner(
    client, clinic, settings, django_capture_on_commit_callbacks
):
    settings.EMERGENCY_ACCESS_HOURS = 2
    task, frank = clinic["task"], clinic["frank"]
    client.force_login(frank)
    assert client.get(reverse("queues:emergency_access"), {"task": task.pk}).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = break_glass(client, task.pk, reason=f"  {REASON}\n ")

    assert response.status_code == 302 and response.url == task_url(task)
    grant = EmergencyAccess.objects.get()
    assert (grant.user, grant.task, grant.reason) == (frank, task, REASON)
    assert grant.expires_at - grant.granted_at == timedelta(hours=2)
    assert grant.ip == "127.0.0.1"
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.EMERGENCY)
    assert event.user == frank
    assert event.detail["task_id"] == task.pk and event.detail["reason"] == REASON
    assert event.detail["expires_at"] == grant.expires_at.isoformat()
    # The alert is queued with the grant's id only: nothing a person typed goes to the queue.
    (queued,) = OrmQ.objects.all()
    job = SignedPackage.loads(queued.payload)
    assert job["func"] == "clinicdesk.audit.emergency.emergency_alert_job"
    assert job["args"] == (grant.pk,)

    page = client.get(task_url(task))

    assert page.status_code == 200
    until = timezone.localtime(grant.expires_at).strftime("%H:%M")
    assert f"Emergency access — until {until} — recorded." in text_of(page)
    assert PATIENT in text_of(page)
    assert client.get(reverse("queues:task_timeline", args=[task.pk])).status_code == 200
    (read,) = emergency_reads(task)
    assert read.actor == frank
    assert read.additional_data == {
        "via": "emergency",
        "read": "page",
        "grant": grant.pk,
        "actor": "frank",
    }
    # Lists stay as they were: the task is in none of frank's.
    assert not Task.objects.visible_to(frank).filter(pk=task.pk).exists()


def test_emergency_access_is_read_only(client, clinic):
    task, frank = clinic["task"], clinic["frank"]
    client.force_login(frank)
    break_glass(client, task.pk)

    page = client.get(task_url(task))
    assert "Emergency access is read-only" in text_of(page)
    assert 'class="action-bar"' not in page.content.decode()
    response = client.post(
        reverse("queues:task_action", args=[task.pk, "comment"]),
        {"expected_version": task.version, "text": "I am only reading"},
    )
    assert response.status_code == 403
    with pytest.raises(PermissionDenied, match="Emergency access is read-only"):
        selectors.get_task_for_user_rw(frank, task.pk)
    # The API reads through `visible_to` alone: a grant opens the page, not the API.
    assert client.get(reverse("api:task-detail", args=[task.pk])).status_code == 404
    task.refresh_from_db()
    assert not task.events.filter(kind="commented").exists()


def test_the_files_download_under_the_grant_and_each_download_is_recorded(client, clinic):
    task, frank = clinic["task"], clinic["frank"]
    attachment = Attachment(task=task, filename="eob.pdf", content_type="application/pdf")
    attachment.size, attachment.sha256 = 9, "0" * 64
    attachment.file.save("eob", ContentFile(b"%PDF-1.4\n"), save=True)
    url = reverse("queues:task_attachment", args=[task.pk, attachment.pk])
    client.force_login(frank)
    assert client.get(url).status_code == 404

    break_glass(client, task.pk)
    response = client.get(url)

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"%PDF-1.4\n"
    assert [r.additional_data["read"] for r in emergency_reads(task)] == ["attachment"]


def test_after_expiry_the_task_is_404_again(client, clinic):
    task, frank = clinic["task"], clinic["frank"]
    client.force_login(frank)
    break_glass(client, task.pk)
    assert client.get(task_url(task)).status_code == 200

    # Ending a grant sooner is the one change its row accepts.
    EmergencyAccess.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert client.get(task_url(task)).status_code == 404
    assert client.get(reverse("queues:task_timeline", args=[task.pk])).status_code == 404
    with pytest.raises(Http404):
        selectors.get_task_for_user_rw(frank, task.pk)
    assert "Your emergency access now" not in text_of(
        client.get(reverse("queues:emergency_access"))
    )


def test_a_grant_cannot_be_rewritten_extended_or_deleted(client, clinic):
    client.force_login(clinic["frank"])
    break_glass(client, clinic["task"].pk)
    grants = EmergencyAccess.objects.all()
    later = grants.get().expires_at + timedelta(hours=1)
    for change in (
        lambda: grants.update(reason="Nothing to see here, just checking"),
        lambda: grants.update(expires_at=later),
        lambda: grants.delete(),
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            change()
    assert grants.get().reason == REASON


def test_a_number_no_task_has_is_recorded_and_answered_only_after_the_reason(client, clinic):
    missing = clinic["task"].pk + 1000
    client.force_login(clinic["frank"])

    response = break_glass(client, missing)

    assert response.status_code == 302 and response.url == reverse("queues:emergency_access")
    grant = EmergencyAccess.objects.get()
    assert (grant.task, grant.task_number, grant.reason) == (None, missing, REASON)
    assert not grant.is_active()
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.EMERGENCY)
    assert event.detail["task_id"] == missing and event.detail["task_found"] is False
    followed = client.get(response.url)
    assert f"No task has the number {missing}." in text_of(followed)


def test_a_supervisor_of_another_department_may_break_the_glass_too(client, clinic):
    client.force_login(clinic["vera"])
    assert client.get(task_url(clinic["task"])).status_code == 404
    assert break_glass(client, clinic["task"].pk).status_code == 302
    assert client.get(task_url(clinic["task"])).status_code == 200
    assert EmergencyAccess.objects.get().user == clinic["vera"]


def test_a_task_one_can_already_see_needs_no_glass_broken(client, clinic):
    client.force_login(clinic["alice"])
    response = break_glass(client, clinic["task"].pk)
    assert response.status_code == 302 and response.url == task_url(clinic["task"])
    assert not EmergencyAccess.objects.exists()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.EMERGENCY).exists()


@pytest.mark.parametrize("username", ["carol", "max"])
def test_compliance_and_managers_need_no_emergency_access(client, clinic, username):
    client.force_login(clinic[username])
    assert client.get(reverse("queues:emergency_access")).status_code == 403
    assert break_glass(client, clinic["task"].pk).status_code == 403
    assert not EmergencyAccess.objects.exists()


# --- The alert ---------------------------------------------------------------------------------


def test_compliance_is_emailed_once_with_no_reason_and_no_patient(client, clinic, settings):
    settings.SITE_URL = "https://desk.clinic.example"
    task = clinic["task"]
    client.force_login(clinic["frank"])
    break_glass(client, task.pk)
    grant = EmergencyAccess.objects.get()

    assert emergency_alert_job(grant.pk) == 1
    assert emergency_alert_job(grant.pk) == 0  # q2 delivers at least once: sent once

    (message,) = mail.outbox
    assert message.to == ["carol@clinic.example"]  # not olga (left), nor the manager
    assert message.subject == f"ClinicDesk: emergency access to task #{task.pk} by frank"
    assert f"task #{task.pk}" in message.body
    assert "https://desk.clinic.example/audit/emergency/" in message.body
    assert REASON not in message.body and PATIENT not in message.body
    assert task.subject not in message.body
    grant.refresh_from_db()
    assert grant.alerted_at is not None


# --- The audit ---------------------------------------------------------------------------------


def test_the_tasks_audit_history_flags_the_emergency_reads(client, clinic):
    task = clinic["task"]
    client.force_login(clinic["frank"])
    break_glass(client, task.pk)
    client.get(task_url(task))
    client.force_login(clinic["carol"])

    response = client.get(reverse("audit:task", args=[task.pk]))

    content = response.content.decode()
    assert content.count("data-emergency") == 1
    assert "Emergency access Read outside the reader's departments" in text_of(response)


def test_the_emergency_access_page_lists_requests_for_compliance_and_managers(
    client, clinic, django_assert_num_queries
):
    task = clinic["task"]
    client.force_login(clinic["frank"])
    break_glass(client, task.pk)
    break_glass(client, task.pk + 1000, reason="Second call, typed the number from a fax")
    EmergencyAccess.objects.filter(task=None).update(alerted_at=timezone.now())
    url = reverse("audit:emergency")

    for username in ("alice", "sam", "frank"):
        client.force_login(clinic[username])
        assert client.get(url).status_code == 403
    client.force_login(clinic["max"])
    assert client.get(url).status_code == 200
    assert client.post(url).status_code == 403
    client.force_login(clinic["carol"])
    # session, user, permissions (the user's and their groups'), count, page; activity (3)
    with django_assert_num_queries(9):
        response = client.get(url)

    text = text_of(response)
    assert "Active until" in text and REASON in text
    assert f"#{task.pk + 1000} no such task" in text
    assert PATIENT not in text
    active = client.get(url, {"active": "1"}).content.decode()
    assert active.count("data-grant=") == 1
