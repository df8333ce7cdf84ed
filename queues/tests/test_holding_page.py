import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db


HOLDING = reverse("queues:holding")


@pytest.fixture
def check_in():
    return QueueFactory(department=DepartmentFactory(name="Front desk"), name="Check-in")


def person(username, departments=(), roles=("Agent",)):
    return StaffProfileFactory(
        user=UserFactory(username=username, first_name=username.title(), roles=list(roles)),
        departments=list(departments),
    ).user


@pytest.fixture
def alice(billing):
    return person("alice", [billing])


@pytest.fixture
def dave(billing):
    return person("dave", [billing])


def held(queue, count=1, *, hours=1, **kwargs):
    kwargs.setdefault("follow_up_at", timezone.now() + timedelta(hours=hours))
    kwargs.setdefault("hold_reason", "Waiting for the payer")
    return TaskFactory.create_batch(
        count,
        task_type=TaskTypeFactory(default_queue=queue),
        queue=queue,
        status="on_hold",
        **kwargs,
    )


def listed(response):
    return [int(pk) for pk in re.findall(r'data-task-id="(\d+)"', response.content.decode())]


def test_holding_lists_tasks_on_hold_that_i_may_see_soonest_follow_up_first(
    client, alice, dave, claims, check_in
):
    later = held(claims, hours=30, assignee=dave, hold_reason="Payer to call back")[0]
    overdue = held(claims, hours=-2, assignee=alice, hold_reason="Patient to send a card")[0]
    no_time = held(claims, follow_up_at=None, hold_reason="Referral letter")[0]
    soon = held(claims, hours=2, subject="Records from the hospital")[0]
    mine_elsewhere = held(check_in, assignee=alice, hours=5, subject="Mine at the front desk")[0]
    held(check_in, subject="Front desk business", hours=1)
    TaskFactory(task_type=TaskTypeFactory(default_queue=claims), queue=claims, status="queued")
    client.force_login(alice)

    response = client.get(HOLDING)

    assert response.status_code == 200
    assert listed(response) == [overdue.pk, soon.pk, mine_elsewhere.pk, later.pk, no_time.pk]
    page = response.content.decode()
    assert "Payer to call back" in page and "Patient to send a card" in page
    assert "Front desk business" not in page
    assert page.count('class="is-overdue"') == 1
    assert re.search(rf'data-task-id="{overdue.pk}" class="is-overdue"', page)
    assert "Follow-up due" in page
    assert response.context["counts"] == {"total": 5, "due": 1, "mine": 2}


def test_holding_filters_mine_due_and_by_queue(client, alice, claims, statements):
    mine = held(claims, assignee=alice)[0]
    due = held(statements, hours=-1)[0]
    other = held(statements, hours=3)[0]
    client.force_login(alice)

    def only(query):
        return set(listed(client.get(f"{HOLDING}?{query}")))

    assert only("") == {mine.pk, due.pk, other.pk}
    assert only("whose=mine") == {mine.pk}
    assert only("whose=overdue") == {due.pk}
    assert only(f"queue={statements.pk}") == {due.pk, other.pk}
    assert only("queue=banana&whose=everything") == {mine.pk, due.pk, other.pk}


@pytest.mark.parametrize("count", [3, 40])
def test_holding_query_count_does_not_grow(
    client, alice, dave, claims, statements, django_assert_num_queries, count
):
    held(claims, count, assignee=dave)
    held(statements, count, hours=-1)
    client.force_login(alice)

    # session, user, queues to filter by, the counts, the tasks; session saved (3)
    with django_assert_num_queries(8):
        response = client.get(HOLDING)

    assert len(listed(response)) == 2 * count


def test_compliance_sees_every_queue_on_hold(client, claims, check_in):
    held(claims, subject="Billing waits")
    held(check_in, subject="Front desk waits")
    client.force_login(person("carol", roles=["Compliance"]))

    page = client.get(HOLDING).content.decode()

    assert "Billing waits" in page and "Front desk waits" in page
