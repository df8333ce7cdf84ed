from datetime import date, timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import UserFactory
from escalation.models import BusinessCalendar, Escalation, EscalationStep, SlaPolicy
from escalation.tests.factories import (
    BusinessCalendarFactory,
    CalendarClosureFactory,
    EscalationStepFactory,
    SlaPolicyFactory,
)
from queues.tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(client):
    user = UserFactory(username="maria", roles=["Manager"], is_staff=True)
    client.force_login(user)
    return user


def fired(**kwargs) -> Escalation:
    now = timezone.now()
    return Escalation.objects.create(
        task=TaskFactory(), step=EscalationStepFactory(), level=1, due_at=now, fired_at=now
    )


def inline_management(prefix: str, total: int = 0) -> dict:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_a_manager_sees_every_escalation_page(client, manager):
    calendar = BusinessCalendarFactory()
    CalendarClosureFactory(calendar=calendar, date=date(2026, 12, 24))
    policy = SlaPolicyFactory(calendar=calendar)
    EscalationStepFactory(policy=policy)
    escalation = fired()

    for url in [
        reverse("admin:escalation_businesscalendar_changelist"),
        reverse("admin:escalation_businesscalendar_change", args=[calendar.pk]),
        reverse("admin:escalation_businesscalendar_add"),
        reverse("admin:escalation_slapolicy_changelist"),
        reverse("admin:escalation_slapolicy_change", args=[policy.pk]),
        reverse("admin:escalation_slapolicy_add"),
        reverse("admin:escalation_escalation_changelist"),
        reverse("admin:escalation_escalation_change", args=[escalation.pk]),
        reverse("admin:escalation_notification_changelist"),
    ]:
        assert client.get(url).status_code == 200, url


def test_a_manager_adds_a_calendar_and_bad_hours_are_refused(client, manager):
    url = reverse("admin:escalation_businesscalendar_add")
    data = {
        "name": "Front desk",
        "time_zone": "America/Chicago",
        "hours": '{"0": [["17:00", "08:00"]]}',
        "country": "US",
        "subdivision": "",
        **inline_management("closures"),
    }
    response = client.post(url, data)
    assert response.status_code == 200
    assert "must come before" in response.content.decode()

    data["hours"] = '{"0": [["08:00", "17:00"]]}'
    response = client.post(url, data)
    assert response.status_code == 302
    calendar = BusinessCalendar.objects.get(name="Front desk")
    assert LogEntry.objects.get_for_object(calendar).exists()


def test_a_manager_adds_a_policy_with_a_step(client, manager):
    data = {
        "name": "Portal messages",
        "is_active": "on",
        "order": "10",
        "priorities": "1,2",
        "first_claim_minutes": "60",
        "resolution_minutes": "",
        "calendar": "",
        **inline_management("steps", total=1),
        "steps-0-level": "1",
        "steps-0-target": "first_claim",
        "steps-0-when": "percent",
        "steps-0-percent": "75",
        "steps-0-minutes_after": "0",
        "steps-0-action": "notify_webhook",
        "steps-0-webhook_url": "https://hooks.example/x",
        "steps-0-webhook_secret": "shh-secret",
    }

    response = client.post(reverse("admin:escalation_slapolicy_add"), data)

    assert response.status_code == 302, response.content.decode()[:2000]
    policy = SlaPolicy.objects.get(name="Portal messages")
    assert policy.priorities == [1, 2]
    step = EscalationStep.objects.get(policy=policy)
    assert step.webhook_secret == "shh-secret"
    # The signing secret never reaches the audit log, not even in part.
    changes = repr(list(LogEntry.objects.values("changes")))
    assert "shh-secret" not in changes
    assert "shh" not in changes


def test_a_policy_saved_in_the_admin_replans_the_open_tasks(client, manager):
    from escalation import services

    waiting = TaskFactory(received_at=timezone.now())
    services.sweep()
    waiting.refresh_from_db()
    assert waiting.claim_due_at is None  # no policy yet
    data = {
        "name": "Everything: claimed within an hour",
        "is_active": "on",
        "order": "10",
        "priorities": "",
        "first_claim_minutes": "60",
        "resolution_minutes": "",
        "calendar": "",
        **inline_management("steps"),
    }

    response = client.post(reverse("admin:escalation_slapolicy_add"), data, follow=True)

    assert "1 open task will have their due times planned again" in response.content.decode()
    services.sweep()
    waiting.refresh_from_db()
    assert waiting.claim_due_at == waiting.received_at + timedelta(minutes=60)

    policy = SlaPolicy.objects.get(name=data["name"])
    switched_off = {key: value for key, value in data.items() if key != "is_active"}
    client.post(reverse("admin:escalation_slapolicy_change", args=[policy.pk]), switched_off)
    services.sweep()
    waiting.refresh_from_db()
    assert waiting.claim_due_at is None  # its policy is switched off


def test_acknowledge_action_records_who_and_when(client, manager):
    escalation = fired()

    response = client.post(
        reverse("admin:escalation_escalation_changelist"),
        {"action": "acknowledge", ACTION_CHECKBOX_NAME: [escalation.pk]},
    )

    assert response.status_code == 302
    escalation.refresh_from_db()
    assert escalation.acknowledged_by == manager
    assert escalation.acknowledged_at is not None


def test_escalations_and_notifications_are_read_only(client, manager):
    escalation = fired()
    response = client.get(reverse("admin:escalation_escalation_change", args=[escalation.pk]))
    assert b'name="level"' not in response.content
    assert client.get(reverse("admin:escalation_escalation_add")).status_code == 403
    assert client.get(reverse("admin:escalation_notification_add")).status_code == 403


def test_an_agent_cannot_open_the_sla_admin(client):
    client.force_login(UserFactory(username="alice", roles=["Agent"], is_staff=True))

    assert client.get(reverse("admin:escalation_slapolicy_changelist")).status_code == 403


def test_a_supervisor_given_admin_access_sees_only_their_departments_rows(client):
    """Supervisors are not admin users, but one marked staff by mistake must still not read
    other departments' escalations or staff in the admin."""
    from accounts.tests.factories import DepartmentFactory, StaffProfileFactory
    from queues.tests.factories import QueueFactory, TaskTypeFactory

    mine, other = DepartmentFactory(), DepartmentFactory()
    now = timezone.now()
    escalations = {}
    for department in (mine, other):
        task_type = TaskTypeFactory(default_queue=QueueFactory(department=department))
        escalations[department.pk] = Escalation.objects.create(
            task=TaskFactory(task_type=task_type),
            step=EscalationStepFactory(),
            level=1,
            due_at=now,
            fired_at=now,
        )
    colleague = StaffProfileFactory(user=UserFactory(username="cora"), departments=[mine])
    stranger = StaffProfileFactory(user=UserFactory(username="sven"), departments=[other])
    supervisor = UserFactory(username="sue", roles=["Supervisor"], is_staff=True)
    supervisor.groups.add(mine.group)
    client.force_login(supervisor)

    listed = client.get(reverse("admin:escalation_escalation_changelist"))
    assert list(listed.context["cl"].queryset) == [escalations[mine.pk]]
    foreign = escalations[other.pk]
    assert client.get(
        reverse("admin:escalation_escalation_change", args=[foreign.pk])
    ).status_code in (302, 404)
    staff = client.get(reverse("admin:accounts_staffprofile_changelist"))
    assert colleague in staff.context["cl"].queryset
    assert stranger not in staff.context["cl"].queryset
    skills = client.get(reverse("admin:accounts_staffskill_changelist"))
    assert skills.status_code == 200
