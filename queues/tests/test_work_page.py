import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from accounts.models import StaffProfile
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.models import Queue, Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing.tests.factories import RuleSetFactory

pytestmark = pytest.mark.django_db


MY_WORK = reverse("queues:my_work")
NEXT_TASK = reverse("queues:next_task")
AVAILABILITY = reverse("queues:availability")


@pytest.fixture
def front_desk():
    return DepartmentFactory(name="Front desk", code="front-desk")


@pytest.fixture
def check_in(front_desk):
    return QueueFactory(department=front_desk, name="Check-in", code="check-in")


@pytest.fixture
def alice(billing):
    """A billing agent."""
    return StaffProfileFactory(
        user=UserFactory(username="alice", first_name="Alice", last_name="Moreno", roles=["Agent"]),
        departments=[billing],
        capacity=5,
    ).user


@pytest.fixture
def bob(front_desk):
    """A front-desk agent."""
    return StaffProfileFactory(
        user=UserFactory(username="bob", first_name="Bob", roles=["Agent"]),
        departments=[front_desk],
    ).user


@pytest.fixture
def carol():
    """A compliance reviewer: reads every queue, changes nothing."""
    return StaffProfileFactory(
        user=UserFactory(username="carol", first_name="Carol", roles=["Compliance"]),
        availability=StaffProfile.Availability.OFFLINE,
    ).user


def task_in(queue, **kwargs):
    return TaskFactory(task_type=TaskTypeFactory(default_queue=queue), queue=queue, **kwargs)


def mine(user, queue, count, status=Task.Status.IN_PROGRESS, **kwargs):
    task_type = TaskTypeFactory(default_queue=queue)
    return TaskFactory.create_batch(
        count, task_type=task_type, queue=queue, assignee=user, status=status, **kwargs
    )


def texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(MY_WORK)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_my_work_lists_my_tasks_most_urgent_first_with_held_ones_apart(
    client, alice, bob, claims, check_in
):
    routine = task_in(
        claims, subject="Routine statement", priority=3, status="assigned", assignee=alice
    )
    urgent = task_in(
        claims, subject="Urgent denial", priority=1, status="in_progress", assignee=alice
    )
    later = timezone.now() + timedelta(days=2)
    soon = timezone.now() + timedelta(hours=2)
    held_later = task_in(
        claims,
        subject="Waiting on payer",
        status="on_hold",
        assignee=alice,
        follow_up_at=later,
        hold_reason="Payer callback",
    )
    held_soon = task_in(
        claims,
        subject="Waiting on patient",
        status="on_hold",
        assignee=alice,
        follow_up_at=soon,
        hold_reason="Patient to send card",
    )
    task_in(claims, subject="Nobody has it yet", status="queued")
    task_in(check_in, subject="Bob's check-in", status="in_progress", assignee=bob)
    task_in(claims, subject="Already resolved", status="resolved", assignee=alice)
    client.force_login(alice)

    response = client.get(MY_WORK)

    assert response.status_code == 200
    assert response.context["active"] == [urgent, routine]
    assert response.context["held"] == [held_soon, held_later]
    page = response.content.decode()
    for subject in ("Urgent denial", "Routine statement", "Waiting on payer", "Payer callback"):
        assert subject in page
    for subject in ("Nobody has it yet", "Bob&#x27;s check-in", "Already resolved"):
        assert subject not in page
    assert page.index("Urgent denial") < page.index("Routine statement")
    assert 'aria-current="page">My work' in page


def test_my_work_shows_my_load_against_my_capacity_and_the_waiting_work(client, alice, claims):
    mine(alice, claims, 3)
    StaffProfile.objects.filter(user=alice).update(active_load=3)
    task_in(claims, status="queued", priority=1)
    task_in(claims, status="queued", priority=3)
    client.force_login(alice)

    page = client.get(MY_WORK).content.decode()
    assert re.search(r'value="available"[^>]*aria-pressed="true"', page)
    assert re.search(r'value="away"[^>]*aria-pressed="false"', page)

    assert '3 <span class="stat__unit">of 5 units in use</span>' in page
    assert 'max="5"' in page and 'value="3"' in page
    assert "Room for 2 more units." in page
    assert response_waiting(page) == "2"
    assert "1 urgent (P1)" in page


def response_waiting(page):
    after = page.split("Waiting in my queues</span>", 1)[1]
    return after.split('<span class="stat__value">', 1)[1].split("<", 1)[0]


# session, user, staff profile, my tasks, what waits in my queues; a page (not a poll) also
# saves the session's activity time: savepoint, update, release.
PAGE_QUERIES = 8
POLL_QUERIES = 5


@pytest.mark.parametrize(
    ("headers", "queries"),
    [({}, PAGE_QUERIES), ({"HTTP_HX_REQUEST": "true", "HTTP_X_IDLE_POLL": "1"}, POLL_QUERIES)],
    ids=["page", "fragment"],
)
@pytest.mark.parametrize("count", [3, 40])
def test_my_work_query_count_does_not_grow_with_my_tasks(
    client, alice, claims, django_assert_num_queries, headers, queries, count
):
    follow_up = timezone.now() + timedelta(hours=1)
    mine(alice, claims, count)
    mine(alice, claims, count, status="on_hold", follow_up_at=follow_up)
    client.force_login(alice)

    with django_assert_num_queries(queries):
        response = client.get(MY_WORK, **headers)

    assert response.content.decode().count("<tr data-row") == 2 * count


def test_the_fragment_is_the_work_section_alone_and_polls_as_idle(client, alice, claims):
    mine(alice, claims, 2, subject="Call the payer")
    client.force_login(alice)

    page = client.get(MY_WORK).content.decode()
    assert re.search(r'value="available"[^>]*aria-pressed="true"', page)
    assert re.search(r'value="away"[^>]*aria-pressed="false"', page)
    fragment = client.get(MY_WORK, HTTP_HX_REQUEST="true", HTTP_X_IDLE_POLL="1").content.decode()

    assert fragment.lstrip().startswith('<div id="my-work"')
    assert "<html" not in fragment and "Next task" not in fragment
    assert "Call the payer" in fragment
    assert 'hx-headers=\'{"X-Idle-Poll": "1"}\'' in page
    assert 'hx-trigger="every 20s"' in page


def test_person_without_a_staff_profile_is_told_whom_to_ask(client):
    client.force_login(UserFactory(username="dora"))

    response = client.get(MY_WORK)

    assert response.status_code == 200
    assert "You have no staff profile" in response.content.decode()
    assert "Next task" not in response.content.decode()


# --- Next task -----------------------------------------------------------------------------


def test_next_task_claims_the_most_urgent_oldest_task_and_opens_it(client, alice, claims, check_in):
    task_in(claims, subject="Routine but old", priority=3, status="queued")
    oldest_urgent = task_in(claims, subject="Urgent, first in", priority=1, status="queued")
    task_in(claims, subject="Urgent, second in", priority=1, status="queued")
    task_in(check_in, subject="Front desk's urgent work", priority=1, status="queued")
    client.force_login(alice)

    response = client.post(NEXT_TASK)

    assert response.status_code == 302
    assert response["Location"] == reverse("queues:task", args=[oldest_urgent.pk])
    oldest_urgent.refresh_from_db()
    assert oldest_urgent.status == Task.Status.ASSIGNED
    assert oldest_urgent.assignee == alice
    assert oldest_urgent.events.filter(kind=TaskEvent.Kind.CLAIMED, actor=alice).exists()
    assert StaffProfile.objects.get(user=alice).active_load == 1


def test_next_task_with_nothing_waiting_says_so(client, alice, claims, check_in):
    task_in(check_in, status="queued")
    client.force_login(alice)

    response = client.post(NEXT_TASK)

    assert response.status_code == 302
    assert response["Location"] == MY_WORK
    assert texts(response) == ["Nothing is waiting in your queues."]


def test_next_task_at_capacity_passes_on_the_services_message(client, alice, claims):
    StaffProfile.objects.filter(user=alice).update(capacity=2, active_load=2)
    task = task_in(claims, status="queued")
    client.force_login(alice)

    response = client.post(NEXT_TASK)

    assert response["Location"] == MY_WORK
    assert texts(response) == [
        "You are at capacity. Resolve, hold or release a task before taking another."
    ]
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED


def test_next_task_from_a_queue_page_returns_there_when_nothing_waits(client, alice, claims):
    client.force_login(alice)
    back = reverse("queues:queue", args=[claims.pk]) + "?priority=1"

    response = client.post(NEXT_TASK, {"next": back})

    assert response["Location"] == back


def test_next_task_never_returns_to_another_site(client, alice, claims):
    client.force_login(alice)

    response = client.post(NEXT_TASK, {"next": "https://evil.example/"})

    assert response["Location"] == MY_WORK


def test_next_task_is_a_post(client, alice):
    client.force_login(alice)

    assert client.get(NEXT_TASK).status_code == 405


# --- availability --------------------------------------------------------------------------


def test_going_away_and_coming_back_pulls_waiting_work(client, alice, claims):
    RuleSetFactory()
    client.force_login(alice)

    response = client.post(AVAILABILITY, {"availability": "away"})

    assert response["Location"] == MY_WORK
    assert StaffProfile.objects.get(user=alice).availability == "away"
    assert texts(response) == ["You are away: no new work is pushed to you until you come back."]
    waiting = task_in(claims, status="queued", waiting_for_capacity=True)

    response = client.post(AVAILABILITY, {"availability": "available"})

    assert StaffProfile.objects.get(user=alice).availability == "available"
    waiting.refresh_from_db()
    assert waiting.assignee == alice
    assert waiting.status == Task.Status.ASSIGNED
    page = client.get(MY_WORK).content.decode()
    assert re.search(r'value="available"[^>]*aria-pressed="true"', page)
    assert re.search(r'value="away"[^>]*aria-pressed="false"', page)


def test_coming_back_without_active_rules_says_so_and_changes_nothing(client, alice, claims):
    StaffProfile.objects.filter(user=alice).update(availability="away")
    client.force_login(alice)

    response = client.post(AVAILABILITY, {"availability": "available"})

    assert response["Location"] == MY_WORK
    assert texts(response) == [
        "No rule set is active. A manager activates one in the admin (Routing rules)."
    ]
    assert StaffProfile.objects.get(user=alice).availability == "away"


def test_unknown_availability_is_refused_with_a_message(client, alice, claims):
    client.force_login(alice)

    response = client.post(AVAILABILITY, {"availability": "offline"})

    assert texts(response) == ["Choose Available or Away."]
    assert StaffProfile.objects.get(user=alice).availability == "available"


# --- read-only people ----------------------------------------------------------------------


def test_compliance_reads_my_work_but_cannot_post(client, carol, claims):
    task_in(claims, status="queued")
    client.force_login(carol)

    assert client.get(MY_WORK).status_code == 200
    assert client.post(NEXT_TASK).status_code == 403
    assert client.post(AVAILABILITY, {"availability": "available"}).status_code == 403
    assert StaffProfile.objects.get(user=carol).availability == "offline"
    assert not Task.objects.filter(assignee=carol).exists()


def test_compliance_in_a_department_still_cannot_post(client, billing, claims):
    reviewer = StaffProfileFactory(
        user=UserFactory(username="rita", roles=["Compliance"]), departments=[billing]
    ).user
    task_in(claims, status="queued")
    client.force_login(reviewer)

    assert client.post(NEXT_TASK).status_code == 403


def test_someone_who_works_no_queue_cannot_press_next_task(client, claims):
    manager = StaffProfileFactory(user=UserFactory(username="maria", roles=["Manager"])).user
    assert Queue.objects.visible_to(manager).exists()
    client.force_login(manager)

    assert client.post(NEXT_TASK).status_code == 403
