"""The access matrix: every route, every method, every role, asked about department B's
objects. Where the role has no right the answer is 401, 403, 404, 405 or a redirect to a
sign-in page — never a page with the data, never a server error. Lists, counts, searches,
exports and autocompletes show department A's people nothing of B's. Leaving a department
takes effect on the very next request.

Who may do what is written down in `matrix_support.ACCESS` (and, for the admin, derived from
the role permissions of `clinicdesk.roles`), never read back from the answers. The clinic is
built once for the module; every request runs in a savepoint that is rolled back, so what one
request changes (a claim, a sign-out) never shapes the next.
"""

from __future__ import annotations

import json
import logging
import re
from copy import copy

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, override_settings

from clinicdesk.tests import matrix_support as m
from queues.models import Task

# The marker also makes pytest-django set up the test database for the module's fixture.
pytestmark = pytest.mark.django_db

FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.apps import apps
    from django.contrib.auth.models import Group
    from django.db import connection

    from clinicdesk.roles import ROLES, sync_role_permissions

    media = tmp_path_factory.mktemp("matrix-media")
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=media, PASSWORD_HASHERS=FAST_HASHER),
        transaction.atomic(),
    ):
        assert connection.settings_dict["NAME"].startswith("test_")
        ContentType.objects.clear_cache()
        if Group.objects.filter(name__in=ROLES).count() < len(ROLES):
            sync_role_permissions(apps)
        yield m.build_world(str(media))
        transaction.set_rollback(True)
    ContentType.objects.clear_cache()


@pytest.fixture
def on_world(world, settings):
    settings.MEDIA_ROOT = world.media_root
    settings.PASSWORD_HASHERS = FAST_HASHER
    # Sessions in memory: thousands of requests, and the session row is not what is tested.
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    return world


def client_for(world, role: str) -> Client:
    if role == m.CLIENT_A:
        return Client(HTTP_AUTHORIZATION=f"Token {world.tokens[m.CLIENT_A]}")
    client = Client()
    client.matrix_user = None if role == m.ANON else world.users[role]
    if client.matrix_user is not None:
        client.force_login(client.matrix_user)
    return client


def _still_signed_in(client: Client) -> None:
    """A sign-out (the sign-out pages, a session refused) ends the session for good: the
    session store is not rolled back. Sign the role in again for the next request."""
    user = getattr(client, "matrix_user", None)
    if user is not None and SESSION_KEY not in client.session:
        client.force_login(user)


def ask(client: Client, method: str, url: str, *, isolate: bool = True, **kwargs):
    """One request, undone afterwards: the database by a savepoint, the session cookie by
    hand (a sign-out must not sign the role out of the rest of the matrix). A request that
    must be refused changes nothing worth undoing (a denial's audit record), unless it is
    wrongly served, which fails the matrix anyway."""
    if not isolate:
        try:
            return getattr(client, method.lower())(url, **kwargs), None
        except Exception as error:
            return None, error
    cookies = copy(client.cookies)
    try:
        with transaction.atomic():
            try:
                return getattr(client, method.lower())(url, **kwargs), None
            except Exception as error:  # a server error: reported with the request
                return None, error
            finally:
                transaction.set_rollback(True)
    finally:
        client.cookies = cookies
        _still_signed_in(client)


def body_of(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def foreign_marks(text: str) -> list[str]:
    return sorted(set(re.findall(rf"\w*(?:{m.MARK}|{m.FOREIGN})\w*", text, flags=re.I)))


def _describe(response, error) -> str:
    if error is not None:
        return f"server error {type(error).__name__}: {error}"
    location = response.get("Location", "")
    return f"{response.status_code}" + (f" → {location}" if location else "")


@pytest.fixture(scope="module")
def requests(world):
    """Every route of the project, filled with department B's objects."""
    problems, filled = [], []
    for route in m.iter_routes():
        try:
            for request in m.fill(world, route):
                m.rule_for(request)
                filled.append(request)
        except LookupError as error:
            problems.append(str(error))
    assert not problems, "Routes the matrix cannot check:\n" + "\n".join(problems)
    return filled


def test_every_route_is_filled_and_has_a_rule(requests):
    keys = {request.route.key for request in requests}
    # The walk reaches every part of the project, the admin and the API included.
    for expected in ("queues:task", "api:task-detail", "admin:queues_task_change", "audit:task"):
        assert expected in keys
    assert len(requests) > 250


@pytest.fixture
def quiet_refusals():
    """Thousands of refusals each log a warning (with its traceback): formatting them costs
    more than the requests. Server errors are still logged."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("role", m.ROLES)
def test_access_matrix(on_world, requests, quiet_refusals, role):
    client = client_for(on_world, role)
    wrong = []
    for request in requests:
        rule = m.rule_for(request)
        for method in m.METHODS:
            expected = rule.expect(role, method)
            if not m.worth_asking(request, method, expected):
                continue
            response, error = ask(client, method, request.url, isolate=expected != m.DENY)
            what = f"{method} {request.url} ({request.label}): expected {expected}, got"
            failed = error is not None or response.status_code >= 500
            if failed or (expected == m.DENY and not m.refused(response)):
                wrong.append(f"{what} {_describe(response, error)}")
            elif expected == m.ALLOW and m.refused(response):
                wrong.append(f"{what} {_describe(response, error)} (is the URL's object B's?)")
            elif role in m.OUTSIDERS and (marks := foreign_marks(body_of(response))):
                wrong.append(f"{what} a refusal that quotes {marks}")
    assert not wrong, f"{len(wrong)} answers for {role} break the access table:\n" + "\n".join(
        wrong
    )


# --- lists, counts, searches, exports, autocomplete ------------------------------------------

# The pages that list or count tasks, people or queues, with the filters and searches that
# could reach further than the person's own departments.
LIST_PAGES = [
    "/",
    "/work/",
    "/queues/",
    "/holding/",
    "/holding/?whose=overdue",
    "/intake/failed/",
    "/escalations/?show=all",
    "/dashboard/",
    "/dashboard/?period=90",
    "/dashboard/rules/",
    "/api/v1/tasks/",
    "/api/v1/tasks/?status=on_hold",
    "/api/v1/tasks/?queue=matrix-b",
    "/api/v1/tasks/?type=matrix_b_type",
    "/api/v1/queues/",
    "/audit/?task=1",
    "/admin/queues/task/",
    f"/admin/queues/task/?q={m.MARK}",
    "/admin/autocomplete/?app_label=queues&model_name=tasktype&field_name=default_queue",
    "/admin/autocomplete/?app_label=accounts&model_name=staffprofile&field_name=user&term=qz",
]


def _list_pages(world) -> list[str]:
    from clinicdesk.dashboard.views import EXPORTS

    queue = world.queue_a.pk
    return [
        *LIST_PAGES,
        f"/queues/{queue}/",
        f"/queues/{queue}/rows/",
        f"/queues/{queue}/?status=resolved&type=matrix_b_type&sort=age",
        f"/holding/?queue={world.queue_b.pk}",
        f"/dashboard/?department={world.dept_b.pk}",
        *(f"/dashboard/export/{table}.csv" for table in EXPORTS),
        *(f"/dashboard/export/{table}.csv?department={world.dept_b.pk}" for table in EXPORTS),
        f"/audit/export.csv?task={world.task_b.pk}",
    ]


@pytest.mark.parametrize("role", [m.AGENT_A, m.SUPERVISOR_A, m.CLIENT_A])
def test_department_a_sees_nothing_of_department_b_in_lists(on_world, role):
    client = client_for(on_world, role)
    leaks = []
    for url in _list_pages(on_world):
        response, error = ask(client, "GET", url)
        assert error is None, f"{url}: {error!r}"
        assert response.status_code < 500, url
        if marks := foreign_marks(body_of(response)):
            leaks.append(f"{url} ({response.status_code}) shows {marks}")
    assert not leaks, "\n".join(leaks)


def test_the_marks_show_where_department_b_may_look(on_world):
    """The checks above can fail: B's own agent and a manager do see the marks."""
    world = on_world
    agent_b = client_for(world, m.AGENT_B)
    for url in (f"/queues/{world.queue_b.pk}/", "/api/v1/tasks/", f"/tasks/{world.task_b.pk}/"):
        assert m.MARK in body_of(ask(agent_b, "GET", url)[0]).lower(), url
    manager = client_for(world, m.MANAGER)
    for url in ("/dashboard/", "/dashboard/export/load.csv", "/queues/"):
        assert m.FOREIGN in body_of(ask(manager, "GET", url)[0]).lower(), url


def test_a_task_linked_to_department_b_shows_no_patient_data_of_b(on_world):
    """A's task with a follow-up and a duplicate in B's queue: the page names B's steps (by
    number, type, queue and state, so the chain can be followed) but nothing of B's patient."""
    world = on_world
    task = world.tasks_a[0]
    client = client_for(world, m.AGENT_A)
    for url in (f"/tasks/{task.pk}/", f"/tasks/{task.pk}/timeline/", f"/api/v1/tasks/{task.pk}/"):
        response, error = ask(client, "GET", url)
        assert error is None and response.status_code == 200, url
        text = body_of(response)
        assert m.MARK not in text.lower(), (url, foreign_marks(text))
    page = body_of(ask(client, "GET", f"/tasks/{task.pk}/")[0])
    assert f"#{world.tasks_b[1].pk}" in page  # the follow-up is named, by number


def test_a_supervisor_cannot_reassign_department_b_tasks_by_number(on_world):
    world = on_world
    client = client_for(world, m.SUPERVISOR_A)
    task_b = world.tasks_b[1]
    data = {
        "tasks": [task_b.pk],
        "assignee": world.users[m.SUPERVISOR_A].pk,
        "reason": "Covering",
    }
    response, error = ask(client, "POST", f"/queues/{world.queue_a.pk}/reassign/", data=data)
    assert error is None and response.status_code == 302
    task_b.refresh_from_db()
    assert (task_b.status, task_b.assignee_id) == (Task.Status.QUEUED, None)


def test_a_staff_agent_finds_no_task_in_the_admin(on_world):
    """An agent wrongly given admin access still reads no task there: the role holds no
    task permission, so the lists and searches refuse."""
    agent = on_world.users[m.AGENT_A]
    agent.is_staff = True
    agent.save(update_fields=["is_staff"])
    try:
        client = client_for(on_world, m.AGENT_A)
        for url in (
            "/admin/queues/task/",
            f"/admin/queues/task/{on_world.task_b.pk}/change/",
            "/admin/queues/inboundmessage/",
            "/admin/escalation/escalation/",
            f"/admin/auditlog/logentry/?q={m.MARK}",
        ):
            response, error = ask(client, "GET", url)
            assert error is None and response.status_code == 403, (url, _describe(response, error))
    finally:
        agent.is_staff = False
        agent.save(update_fields=["is_staff"])


def _json(response) -> object:
    return json.loads(body_of(response))


def test_counts_shown_to_department_a_count_a_only(on_world):
    world = on_world
    client = client_for(world, m.AGENT_A)
    open_a = sum(1 for t in world.tasks_a if t.is_open)

    queues = _json(ask(client, "GET", "/api/v1/queues/")[0])
    assert {q["code"] for q in queues} == {"matrix-a-desk", "matrix-review"}
    assert sum(q["open_tasks"] for q in queues) == open_a

    tasks = _json(ask(client, "GET", "/api/v1/tasks/?page_size=200")[0])
    assert sorted(t["id"] for t in tasks["results"]) == sorted(t.pk for t in world.tasks_a)

    holding = ask(client, "GET", "/holding/")[0]
    assert holding.context["counts"]["total"] == 1
    assert [t.pk for t in holding.context["tasks"]] == [world.tasks_a[2].pk]

    queue_page = ask(client, "GET", f"/queues/{world.queue_a.pk}/")[0]
    assert queue_page.context["total"] == open_a

    queue_list = ask(client, "GET", "/queues/")[0]
    assert {q.pk for q in queue_list.context["queues"]} == {world.queue_a.pk, world.review_a.pk}

    supervisor = client_for(world, m.SUPERVISOR_A)
    failed = ask(supervisor, "GET", "/intake/failed/")[0]
    assert [row.pk for row, _ in failed.context["rows"]] == [world.inbound_a.pk]
    escalations = ask(supervisor, "GET", "/escalations/?show=all")[0]
    assert [e.pk for e in escalations.context["escalations"]] == [world.escalation_a.pk]
    dashboard = ask(supervisor, "GET", "/dashboard/")[0]
    assert set(dashboard.context["scope"].queue_ids) == {world.queue_a.pk, world.review_a.pk}


# --- leaving a department -------------------------------------------------------------------


def test_leaving_a_department_takes_effect_on_the_next_request(on_world):
    world = on_world
    agent = world.users[m.AGENT_A]
    task, queue = world.tasks_a[0], world.queue_a
    pages = [
        f"/tasks/{task.pk}/",
        f"/tasks/{task.pk}/timeline/",
        f"/queues/{queue.pk}/",
        f"/queues/{queue.pk}/rows/",
        f"/api/v1/tasks/{task.pk}/",
    ]
    client = client_for(world, m.AGENT_A)
    with transaction.atomic():
        for url in pages:
            assert client.get(url).status_code == 200, url
        m.remove_from_department(agent, world.dept_a)
        for url in pages:
            assert client.get(url).status_code == 404, url
        assert client.post(f"/tasks/{task.pk}/claim/").status_code == 404
        assert client.post("/work/next/").status_code == 403
        listed = _json(client.get("/api/v1/tasks/"))["results"]
        # What they held there went back to the team with the change: nothing stays.
        assert listed == []
        transaction.set_rollback(True)


def test_a_client_removed_from_its_department_reads_nothing_at_once(on_world):
    world = on_world
    client = client_for(world, m.CLIENT_A)
    task = world.tasks_a[0]
    with transaction.atomic():
        assert client.get(f"/api/v1/tasks/{task.pk}/").status_code == 200
        world.users[m.CLIENT_A].groups.remove(world.dept_a.group)
        assert client.get(f"/api/v1/tasks/{task.pk}/").status_code == 404
        assert _json(client.get("/api/v1/tasks/"))["results"] == []
        transaction.set_rollback(True)
