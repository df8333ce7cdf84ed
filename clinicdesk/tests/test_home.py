import time

import pytest
from django.conf import settings
from django.urls import reverse

from accounts.middleware import SESSION_KEY
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.models import Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db

HOME = "/"


def tasks_in(queue, count, **kwargs):
    task_type = TaskTypeFactory(default_queue=queue)
    return TaskFactory.create_batch(count, task_type=task_type, queue=queue, **kwargs)


@pytest.fixture
def billing():
    return DepartmentFactory(name="Billing")


@pytest.fixture
def front_desk():
    return DepartmentFactory(name="Front desk")


@pytest.fixture
def alice(billing):
    """A billing agent."""
    return StaffProfileFactory(
        user__username="alice", user__first_name="Alice", departments=[billing]
    ).user


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(HOME)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next=/"


def test_agent_sees_only_queues_of_her_departments_with_counts(client, alice, billing, front_desk):
    claims = QueueFactory(department=billing, name="Claims")
    tasks_in(claims, 2, status=Task.Status.QUEUED, priority=3)
    tasks_in(claims, 1, status=Task.Status.IN_PROGRESS, priority=1, assignee=alice)
    tasks_in(claims, 1, status=Task.Status.ON_HOLD, priority=2)
    tasks_in(claims, 3, status=Task.Status.RESOLVED, priority=1)
    QueueFactory(department=billing, name="Old claims", is_active=False)
    check_in = QueueFactory(department=front_desk, name="Check-in")
    tasks_in(check_in, 2, status=Task.Status.QUEUED, priority=1)
    client.force_login(alice)

    response = client.get(HOME)

    assert response.status_code == 200
    rows = [
        (q.name, q.department.name, q.open_count, q.urgent_count, q.unassigned_count)
        for q in response.context["queues"]
    ]
    assert rows == [("Claims", "Billing", 4, 1, 2)]
    page = response.content.decode()
    assert "Welcome, Alice" in page
    assert "Claims" in page
    assert "Check-in" not in page
    assert "Old claims" not in page


def test_person_without_department_is_told_whom_to_ask(client):
    bob = StaffProfileFactory(user__username="bob").user
    client.force_login(bob)

    response = client.get(HOME)

    assert response.status_code == 200
    assert list(response.context["queues"]) == []
    assert "You are not a member of any department yet. Ask your manager to add you." in (
        response.content.decode()
    )


@pytest.mark.parametrize("queues, tasks_per_queue", [(1, 0), (4, 5)])
def test_home_query_count_does_not_grow_with_queues_or_tasks(
    client, alice, billing, django_assert_num_queries, queues, tasks_per_queue
):
    for n in range(queues):
        queue = QueueFactory(department=billing, name=f"Claims {n}")
        tasks_in(queue, tasks_per_queue, status=Task.Status.QUEUED, priority=1 + n % 4)
    client.force_login(alice)

    # session, user, the queues with their counts; then the idle clock's session save
    # (savepoint, update, release)
    with django_assert_num_queries(6):
        response = client.get(HOME)

    assert response.status_code == 200
    assert len(response.context["queues"]) == queues


def test_page_shell_offers_sign_out_as_a_post_form_and_no_admin_link_to_agents(client, alice):
    client.force_login(alice)

    page = client.get(HOME).content.decode()

    logout_url = reverse("accounts:logout")
    assert f'<form method="post" action="{logout_url}">' in page
    assert "csrfmiddlewaretoken" in page
    assert reverse("admin:index") not in page
    assert f'data-idle-minutes="{settings.SESSION_IDLE_MINUTES}"' in page
    assert f'data-keepalive-url="{reverse("accounts:keepalive")}"' in page
    assert "<script>" not in page  # no inline script: everything comes from static files


def test_staff_see_the_admin_link(client):
    manager = UserFactory(username="carol", is_staff=True)
    client.force_login(manager)

    page = client.get(HOME).content.decode()

    assert f'href="{reverse("admin:index")}"' in page


def test_sign_out_needs_a_post(client, alice):
    client.force_login(alice)

    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.get(HOME).status_code == 200

    response = client.post(reverse("accounts:logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")
    assert client.get(HOME).status_code == 302


def set_last_activity(client, seconds_ago):
    session = client.session
    session[SESSION_KEY] = time.time() - seconds_ago
    session.save()


def test_idle_session_is_signed_out_on_the_next_request(client, alice, settings):
    settings.SESSION_IDLE_MINUTES = 15
    client.force_login(alice)
    set_last_activity(client, 15 * 60 + 5)

    response = client.get(HOME)

    assert response.status_code == 302
    # Signing in again returns the person to the page they were on.
    assert response["Location"] == f"{reverse('accounts:login')}?idle=1&next=%2F"
    assert "_auth_user_id" not in client.session
    login_page = client.get(response["Location"]).content.decode()
    assert "You were signed out after a period of inactivity." in login_page
    assert client.get(HOME).status_code == 302


def test_recent_activity_keeps_the_session(client, alice, settings):
    settings.SESSION_IDLE_MINUTES = 15
    client.force_login(alice)
    set_last_activity(client, 14 * 60)

    assert client.get(HOME).status_code == 200
    assert client.session[SESSION_KEY] == pytest.approx(time.time(), abs=5)


def test_keepalive_refreshes_the_idle_clock(client, alice, settings):
    settings.SESSION_IDLE_MINUTES = 15
    client.force_login(alice)
    set_last_activity(client, 14 * 60 + 50)

    assert client.get(reverse("accounts:keepalive")).status_code == 405
    assert client.post(reverse("accounts:keepalive")).status_code == 204
    assert client.session[SESSION_KEY] == pytest.approx(time.time(), abs=5)


def test_polling_does_not_keep_an_idle_session_alive(client, alice, settings):
    settings.SESSION_IDLE_MINUTES = 15
    client.force_login(alice)
    set_last_activity(client, 10 * 60)
    before = client.session[SESSION_KEY]

    client.get(HOME, headers={"X-Idle-Poll": "1"})

    assert client.session[SESSION_KEY] == before


def test_pages_seconds_apart_do_not_rewrite_the_session(client, alice, settings):
    """The idle clock is kept to the nearest few seconds: a page view right after another
    costs no session write, and the clock never runs ahead of the real last request."""
    from accounts.middleware import ACTIVITY_GRANULARITY_S

    client.force_login(alice)
    set_last_activity(client, ACTIVITY_GRANULARITY_S - 5)
    before = client.session[SESSION_KEY]
    assert client.get(reverse("home")).status_code == 200
    assert client.session[SESSION_KEY] == before
    set_last_activity(client, ACTIVITY_GRANULARITY_S + 1)
    assert client.get(reverse("home")).status_code == 200
    assert client.session[SESSION_KEY] == pytest.approx(time.time(), abs=5)
