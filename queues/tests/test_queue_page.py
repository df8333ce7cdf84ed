import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from accounts.models import StaffProfile
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing.tests.factories import RuleSetFactory

pytestmark = pytest.mark.django_db


QUEUE_LIST = reverse("queues:queue_list")


@pytest.fixture
def front_desk():
    return DepartmentFactory(name="Front desk", code="front-desk")


@pytest.fixture
def check_in(front_desk):
    return QueueFactory(department=front_desk, name="Check-in", code="check-in")


@pytest.fixture
def denial(claims):
    return TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=claims)


@pytest.fixture
def appeal(claims):
    return TaskTypeFactory(code="appeal", name="Appeal", default_queue=claims)


def person(username, departments=(), roles=("Agent",), **kwargs):
    return StaffProfileFactory(
        user=UserFactory(
            username=username, first_name=username.title(), last_name="", roles=list(roles)
        ),
        departments=list(departments),
        **kwargs,
    ).user


@pytest.fixture
def alice(billing):
    """A billing agent."""
    return person("alice", [billing])


@pytest.fixture
def dave(billing):
    """Another billing agent, with room for two tasks."""
    return person("dave", [billing], capacity=2)


@pytest.fixture
def sam(billing):
    """The billing supervisor."""
    return person("sam", [billing], roles=["Supervisor"])


@pytest.fixture
def carol():
    """A compliance reviewer."""
    return person("carol", roles=["Compliance"], availability="offline")


def url(name, queue, query=""):
    return reverse(f"queues:{name}", args=[queue.pk]) + (f"?{query}" if query else "")


def tasks_in(queue, count, task_type=None, **kwargs):
    task_type = task_type or TaskTypeFactory(default_queue=queue)
    return TaskFactory.create_batch(count, task_type=task_type, queue=queue, **kwargs)


def listed(response):
    return [int(pk) for pk in re.findall(r'data-task-id="(\d+)"', response.content.decode())]


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the list of queues --------------------------------------------------------------------


def test_queue_list_counts_the_work_of_my_departments_only(
    client, alice, claims, statements, check_in
):
    tasks_in(claims, 2, status="queued", priority=3)
    tasks_in(claims, 1, status="queued", priority=1, waiting_for_capacity=True)
    tasks_in(claims, 1, status="in_progress", priority=1, assignee=alice)
    tasks_in(claims, 2, status="resolved", priority=1)
    tasks_in(check_in, 4, status="queued", priority=1)
    client.force_login(alice)

    response = client.get(QUEUE_LIST)

    rows = [
        (q.name, q.open_count, q.urgent_count, q.unassigned_count, q.waiting_count)
        for q in response.context["queues"]
    ]
    assert rows == [("Claims", 4, 2, 3, 1), ("Statements", 0, 0, 0, 0)]
    page = response.content.decode()
    assert url("queue", claims) in page
    assert "Check-in" not in page


@pytest.mark.parametrize("count", [3, 40])
def test_queue_list_is_one_aggregate_query(
    client, alice, claims, statements, django_assert_num_queries, count
):
    tasks_in(claims, count, status="queued")
    tasks_in(statements, count, status="on_hold")
    client.force_login(alice)

    # session, user, the queues with their counts; then the session's activity time saved
    with django_assert_num_queries(6):
        response = client.get(QUEUE_LIST)

    assert response.status_code == 200


# --- one queue -----------------------------------------------------------------------------


def test_queue_page_lists_open_tasks_with_patient_initials_and_mrn_only(
    client, alice, claims, denial
):
    task = TaskFactory(
        task_type=denial,
        subject="Denied claim for March visit",
        patient_name="Jordan Avery Smith",
        patient_mrn="MRN-4411",
        status="queued",
        waiting_for_capacity=True,
    )
    TaskFactory(task_type=denial, subject="Old resolved one", status="resolved")
    held = TaskFactory(task_type=denial, subject="Held for payer", status="on_hold")
    client.force_login(alice)

    response = client.get(url("queue", claims))

    assert response.status_code == 200
    assert listed(response) == [task.pk, held.pk]
    page = response.content.decode()
    assert "Denied claim for March visit" in page
    assert "JAS" in page and "MRN-4411" in page
    assert "Jordan" not in page and "Smith" not in page
    assert "Waiting for capacity" in page
    assert "Old resolved one" not in page
    assert "SLA" not in page
    assert f'href="{reverse("queues:task", args=[task.pk])}"' in page


def test_another_departments_queue_is_not_found(client, alice, check_in):
    tasks_in(check_in, 2, status="queued", subject="Front desk only")
    client.force_login(alice)

    assert client.get(url("queue", check_in)).status_code == 404
    assert client.get(url("queue_rows", check_in)).status_code == 404
    assert client.post(url("queue_reassign", check_in)).status_code == 404


def test_a_task_of_mine_in_another_queue_is_not_listed_in_mine(client, alice, claims, check_in):
    """The queue page lists the queue's tasks, not everything visible to me."""
    tasks_in(check_in, 1, status="in_progress", assignee=alice)
    client.force_login(alice)

    assert listed(client.get(url("queue", claims))) == []


def test_default_order_is_priority_then_oldest(client, alice, claims):
    now = timezone.now()
    routine_old, urgent_new, urgent_old = tasks_in(claims, 3, status="queued")
    for task, priority, age in ((routine_old, 3, 50), (urgent_new, 1, 1), (urgent_old, 1, 5)):
        Task.objects.filter(pk=task.pk).update(
            priority=priority, created_at=now - timedelta(hours=age)
        )
    client.force_login(alice)

    assert listed(client.get(url("queue", claims))) == [
        urgent_old.pk,
        urgent_new.pk,
        routine_old.pk,
    ]
    assert listed(client.get(url("queue", claims, "sort=age"))) == [
        routine_old.pk,
        urgent_old.pk,
        urgent_new.pk,
    ]
    Task.objects.filter(pk=urgent_old.pk).update(updated_at=now + timedelta(minutes=1))
    assert listed(client.get(url("queue", claims, "sort=updated")))[0] == urgent_old.pk


def test_filters_by_status_priority_type_and_age(client, alice, claims, denial, appeal):
    now = timezone.now()
    fresh_denial = TaskFactory(task_type=denial, status="queued", priority=2)
    old_denial = TaskFactory(task_type=denial, status="queued", priority=2)
    Task.objects.filter(pk=old_denial.pk).update(created_at=now - timedelta(days=4))
    urgent_appeal = TaskFactory(task_type=appeal, status="in_progress", priority=1, assignee=alice)
    resolved = TaskFactory(task_type=appeal, status="resolved", priority=1)
    client.force_login(alice)

    def only(query):
        return set(listed(client.get(url("queue", claims, query))))

    assert only("") == {fresh_denial.pk, old_denial.pk, urgent_appeal.pk}
    assert only("status=in_progress") == {urgent_appeal.pk}
    assert only("status=resolved") == {resolved.pk}
    assert only("priority=2") == {fresh_denial.pk, old_denial.pk}
    assert only("type=appeal") == {urgent_appeal.pk}
    assert only("age=lt1h") == {fresh_denial.pk, urgent_appeal.pk}
    assert only("age=gt3d") == {old_denial.pk}
    assert only("type=claim_denial&age=lt1h") == {fresh_denial.pk}
    # An unknown value is dropped, not an error.
    assert only("priority=9&type=nope") == {fresh_denial.pk, old_denial.pk, urgent_appeal.pk}


def follow(client, queue, href):
    return client.get(reverse("queues:queue", args=[queue.pk]) + href)


@pytest.mark.parametrize("sort", ["priority", "age", "updated"])
def test_keyset_pages_continue_where_the_last_one_ended(client, alice, claims, sort):
    tasks = tasks_in(claims, 120, status="queued")
    # Ties on every sort key but the id, which the cursor must break.
    now = timezone.now()
    Task.objects.filter(pk__in=[t.pk for t in tasks[:70]]).update(
        priority=2, created_at=now - timedelta(hours=1), updated_at=now
    )
    client.force_login(alice)

    first = client.get(url("queue", claims, f"sort={sort}&status=queued"))
    second = follow(client, claims, first.context["later"])
    third = follow(client, claims, second.context["later"])

    pages = [listed(first), listed(second), listed(third)]
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [pk for page in pages for pk in page]
    assert sorted(seen) == sorted(t.pk for t in tasks)
    assert third.context["later"] is None
    assert "status=queued" in second.context["later"] and f"sort={sort}" in second.context["later"]
    back = follow(client, claims, third.context["earlier"])
    assert listed(back) == pages[1]
    start = follow(client, claims, second.context["earlier"])
    assert listed(start) == pages[0]
    assert start.context["earlier"] is None


def test_a_page_keeps_its_place_when_earlier_rows_leave(client, alice, claims):
    tasks = tasks_in(claims, 60, status="queued")
    client.force_login(alice)
    first = client.get(url("queue", claims))
    second_url = first.context["later"]
    before = listed(follow(client, claims, second_url))
    Task.objects.filter(pk__in=listed(first)[:5]).update(status="resolved")

    after = listed(follow(client, claims, second_url))

    assert after == before == [t.pk for t in tasks[50:]]


def test_a_page_whose_rows_have_all_gone_shows_the_first_page(client, alice, claims):
    tasks = tasks_in(claims, 55, status="queued")
    client.force_login(alice)
    second_url = client.get(url("queue", claims)).context["later"]
    Task.objects.filter(pk__in=[t.pk for t in tasks[50:]]).update(status="resolved")

    response = follow(client, claims, second_url)

    assert listed(response) == [t.pk for t in tasks[:50]]
    assert response.context["earlier"] is None and response.context["later"] is None


def test_a_cursor_that_does_not_fit_shows_the_first_page(client, alice, claims):
    tasks_in(claims, 3, status="queued")
    client.force_login(alice)

    for query in ("after=garbage", "before=%%%", "sort=age&after=MXwyfDM"):
        response = client.get(url("queue", claims, query))
        assert response.status_code == 200
        assert len(listed(response)) == 3


def test_rows_fragment_is_the_same_rows_and_polls_with_the_page_query(client, alice, claims):
    tasks_in(claims, 55, status="queued")
    client.force_login(alice)
    page = client.get(url("queue", claims, "priority=3"))
    later = page.context["later"]

    rows = client.get(
        url("queue_rows", claims) + later, HTTP_HX_REQUEST="true", HTTP_X_IDLE_POLL="1"
    )

    body = rows.content.decode()
    assert body.lstrip().startswith('<section id="queue-rows"')
    assert "<html" not in body
    assert len(listed(rows)) == 5
    assert body.count('class="patient__initials"') == 5
    poll = re.search(r'hx-get="([^"]+)"', body).group(1).replace("&amp;", "&")
    assert poll == url("queue_rows", claims) + later
    assert 'hx-headers=\'{"X-Idle-Poll": "1"}\'' in body
    assert 'hx-trigger="every 10s"' in page.content.decode()


@pytest.mark.parametrize("count", [3, 40])
@pytest.mark.parametrize("who", ["agent", "supervisor"])
def test_queue_page_and_rows_query_counts_do_not_grow_with_the_rows(
    client, alice, sam, claims, denial, django_assert_num_queries, count, who
):
    TaskFactory.create_batch(count, task_type=denial, status="queued")
    TaskFactory.create_batch(count, task_type=denial, status="in_progress", assignee=alice)
    client.force_login(sam if who == "supervisor" else alice)

    # session, user, the queue with what I may do there, the type filtered by, the page of
    # rows, their total, the types to choose from (+ the people to reassign to, for a
    # supervisor), the session's activity time saved (savepoint, update, release)
    with django_assert_num_queries(11 if who == "supervisor" else 10):
        page = client.get(url("queue", claims, "type=claim_denial&sort=age"))
    # session, user, queue, type filtered by, rows, total: a poll saves no activity time
    with django_assert_num_queries(6):
        rows = client.get(
            url("queue_rows", claims, "type=claim_denial&sort=age"),
            HTTP_HX_REQUEST="true",
            HTTP_X_IDLE_POLL="1",
        )

    assert len(listed(page)) == len(listed(rows)) == min(2 * count, 50)


# --- bulk reassignment ---------------------------------------------------------------------


def test_agents_see_no_bulk_reassign_and_supervisors_do(client, alice, sam, dave, claims):
    tasks_in(claims, 2, status="queued")
    client.force_login(alice)
    assert 'name="tasks"' not in client.get(url("queue", claims)).content.decode()

    client.force_login(sam)
    page = client.get(url("queue", claims)).content.decode()

    assert page.count('name="tasks"') == 2
    assert "Reassign selected" in page
    assert "Dave" in page and "0 of 2 in use" in page


def test_supervisor_reassigns_in_bulk_and_hears_of_each_refusal(client, sam, dave, claims):
    RuleSetFactory()
    first, second, third = tasks_in(claims, 3, status="queued")
    client.force_login(sam)

    response = client.post(
        url("queue_reassign", claims),
        {
            "tasks": [first.pk, second.pk, third.pk],
            "assignee": dave.pk,
            "reason": "Dave knows this payer",
            "query": "priority=3&sort=age&evil=1",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == url("queue", claims, "priority=3&sort=age")
    assert messages_of(response) == [
        f"Reassigned 2 tasks (#{first.pk}, #{second.pk}) to Dave.",
        f"Not reassigned: #{third.pk}. That person is at capacity. Resolve, hold or release a "
        "task first, or choose someone else.",
    ]
    assert set(Task.objects.filter(assignee=dave).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
    event = TaskEvent.objects.get(task=first, kind=TaskEvent.Kind.REASSIGNED)
    assert event.actor == sam and event.reason == "Dave knows this payer"
    assert StaffProfile.objects.get(user=dave).active_load == 2
    third.refresh_from_db()
    assert third.status == Task.Status.QUEUED


def test_bulk_reassign_needs_tasks_a_person_and_a_reason(client, sam, dave, claims, check_in):
    mine = tasks_in(claims, 1, status="queued")[0]
    theirs = tasks_in(check_in, 1, status="queued")[0]
    client.force_login(sam)

    response = client.post(
        url("queue_reassign", claims), {"tasks": [mine.pk, theirs.pk], "reason": " "}
    )

    assert response["Location"] == url("queue", claims)
    text = " ".join(messages_of(response))
    assert f"{theirs.pk} is not one of the available choices" in text
    assert "Choose the person who should take the tasks." in text
    assert "Say why the tasks are reassigned." in text
    assert not Task.objects.filter(assignee__isnull=False).exists()


def test_an_agent_may_not_reassign(client, alice, dave, claims):
    task = tasks_in(claims, 1, status="queued")[0]
    client.force_login(alice)

    response = client.post(
        url("queue_reassign", claims), {"tasks": [task.pk], "assignee": dave.pk, "reason": "x"}
    )

    assert response.status_code == 403
    task.refresh_from_db()
    assert task.assignee is None


def test_compliance_reads_every_queue_but_every_post_is_refused(client, carol, dave, claims):
    task = tasks_in(claims, 1, status="queued", subject="Read but do not touch")[0]
    client.force_login(carol)

    assert client.get(QUEUE_LIST).status_code == 200
    page = client.get(url("queue", claims))
    assert page.status_code == 200
    assert "Read but do not touch" in page.content.decode()
    assert "Next task" not in page.content.decode()
    assert client.get(url("queue_rows", claims)).status_code == 200
    response = client.post(
        url("queue_reassign", claims), {"tasks": [task.pk], "assignee": dave.pk, "reason": "x"}
    )
    assert response.status_code == 403
    assert client.post(reverse("queues:next_task")).status_code == 403
    task.refresh_from_db()
    assert task.assignee is None


def test_a_huge_backlog_is_counted_up_to_a_cap(client, monkeypatch):
    from queues.views import queue as queue_views

    monkeypatch.setattr(queue_views, "COUNT_CAP", 3)
    department = DepartmentFactory()
    queue = QueueFactory(department=department)
    task_type = TaskTypeFactory(default_queue=queue)
    for _ in range(5):
        TaskFactory(task_type=task_type)
    member = StaffProfileFactory(departments=[department]).user
    client.force_login(member)
    page = client.get(reverse("queues:queue", args=[queue.pk])).content.decode()
    assert "3+ tasks" in page
