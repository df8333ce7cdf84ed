"""Leaving a department takes effect at once: what the person held in its queues goes back to
the team (work in hand re-offered, held work kept on hold for the team), their capacity is
freed, the timeline says why and who, and their next request no longer reaches those tasks."""

import pytest
from django.urls import reverse

from accounts.models import StaffProfile
from accounts.services import staff_set_departments
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from accounts.tests.test_admin import staff_form
from queues import services as queues_services
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing import services
from routing.services import LEFT_DEPARTMENT
from routing.tests.factories import RuleSetFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    billing = DepartmentFactory(name="Billing", code="billing")
    records = DepartmentFactory(name="Medical records", code="records")
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    records_queue = QueueFactory(department=records, name="Records", code="records")
    RuleSetFactory()
    return {
        "billing": billing,
        "records": records,
        "billing_type": TaskTypeFactory(code="statement", default_queue=billing_queue),
        "records_type": TaskTypeFactory(code="records_request", default_queue=records_queue),
    }


def person(username, *departments, capacity=5):
    return StaffProfileFactory(
        user=UserFactory(username=username), departments=list(departments), capacity=capacity
    )


def claimed(task_type, profile, subject="Statement question"):
    task = TaskFactory(task_type=task_type, subject=subject)
    return queues_services.task_claim(task_id=task.pk, user=profile.user)


def test_leaving_hands_back_work_in_hand_and_held_work_and_frees_capacity(clinic):
    ana = person("ana", clinic["billing"], clinic["records"])
    in_hand = claimed(clinic["billing_type"], ana)
    held = claimed(clinic["billing_type"], ana, "Waiting for the payer")
    records = claimed(clinic["records_type"], ana, "Records for Dr. Ruiz")
    services.task_hold(task_id=held.pk, actor=ana.user, reason="Payer to call back")
    assert StaffProfile.objects.get(pk=ana.pk).active_load == 2

    staff_set_departments(profile=ana, departments=[clinic["records"]])

    in_hand.refresh_from_db()
    held.refresh_from_db()
    records.refresh_from_db()
    assert (in_hand.status, in_hand.assignee_id) == (Task.Status.QUEUED, None)
    assert (held.status, held.assignee_id, held.hold_reason) == (
        Task.Status.ON_HOLD,
        None,
        "Payer to call back",
    )
    assert records.assignee_id == ana.user_id  # still her department
    assert StaffProfile.objects.get(pk=ana.pk).active_load == 1
    event = in_hand.events.filter(kind=TaskEvent.Kind.RELEASED).get()
    assert (event.kind, event.from_user_id, event.reason) == (
        TaskEvent.Kind.RELEASED,
        ana.user_id,
        LEFT_DEPARTMENT,
    )


def test_work_handed_back_goes_to_a_colleague_and_a_held_task_resumes_to_the_queue(clinic):
    ana = person("ana", clinic["billing"])
    task = claimed(clinic["billing_type"], ana)
    held = claimed(clinic["billing_type"], ana, "Waiting for the payer")
    services.task_hold(task_id=held.pk, actor=ana.user, reason="Payer to call back")
    ben = person("ben", clinic["billing"])
    ben.refresh_from_db()

    ana.user.groups.remove(clinic["billing"].group)  # the user page's groups field

    task.refresh_from_db()
    assert task.assignee_id == ben.user_id
    services.task_resume(task_id=held.pk, actor=ben.user)
    held.refresh_from_db()
    assert held.assignee_id in (None, ben.user_id)
    assert held.assignee_id != ana.user_id


def test_removing_people_from_the_group_side_and_clearing_groups_hand_back_too(clinic):
    ana = person("ana", clinic["billing"])
    ben = person("ben", clinic["billing"], capacity=1)
    claimed(clinic["billing_type"], ana)
    claimed(clinic["billing_type"], ben)

    clinic["billing"].group.user_set.remove(ana.user)
    ben.user.groups.clear()

    assert not Task.objects.filter(assignee__isnull=False).exists()
    assert StaffProfile.objects.filter(active_load__gt=0).count() == 0


def test_the_next_request_after_leaving_no_longer_reaches_the_task(client, clinic):
    ana = person("ana", clinic["billing"])
    task = claimed(clinic["billing_type"], ana)
    client.force_login(ana.user)
    assert client.get(reverse("queues:task", args=[task.pk])).status_code == 200

    staff_set_departments(profile=ana, departments=[])

    assert client.get(reverse("queues:task", args=[task.pk])).status_code == 404


def test_the_manager_who_made_the_change_is_named_in_the_timeline(client, clinic):
    manager = UserFactory(username="mia", roles=["Manager"], is_staff=True)
    ana = person("ana", clinic["billing"])
    task = claimed(clinic["billing_type"], ana)
    client.force_login(manager)
    url = reverse("admin:accounts_staffprofile_change", args=[ana.pk])
    data = staff_form(ana, departments=[clinic["records"]])
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    event = task.events.filter(kind=TaskEvent.Kind.RELEASED).get()
    assert (event.kind, event.actor_id) == (TaskEvent.Kind.RELEASED, manager.pk)
