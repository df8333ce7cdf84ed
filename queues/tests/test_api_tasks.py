"""GET /api/v1/tasks/, /tasks/<id>/, /queues/ and the task actions: what each caller may see
and do, through the same services and with the same refusals as the pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import StaffProfile
from queues import services as queues_services
from queues.models import Task, TaskEvent, TaskType
from queues.tests.test_api_intake import make_client
from queues.tests.test_task_page import build_clinic, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


@pytest.fixture
def denial(clinic):
    """A billing task, pushed to alice."""
    task = submit("Claim denied for March visit")
    assert task.assignee == clinic["alice"]
    return task


@pytest.fixture
def parking(clinic):
    """A front-desk task, queued in Needs review (pull only)."""
    task = submit("A question about parking", patient_name="Maria Lopez", patient_mrn="MRN-77")
    assert task.queue == clinic["review_queue"]
    return task


def staff(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def token_client(name="ehr", departments=(), channels=("api",)) -> tuple[APIClient, object]:
    integration, token = make_client(name, channels=channels, departments=departments)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client, integration


def billing_department(clinic):
    return clinic["billing_queue"].department


def act(client, task, action, **data):
    return client.post(f"/api/v1/tasks/{task.pk}/{action}/", data, format="json")


def reloaded(task) -> Task:
    return Task.objects.get(pk=task.pk)


def last_event(task) -> TaskEvent:
    return TaskEvent.objects.filter(task_id=task.pk).order_by("-id").first()


def later(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


# --- the list -------------------------------------------------------------------------------


def test_the_list_shows_only_the_callers_queues_with_minimum_patient_data(clinic, denial, parking):
    response = staff(clinic["alice"]).get("/api/v1/tasks/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [denial.pk]
    row = rows[0]
    assert row["patient_mrn"] == "MRN-204611"
    assert row["patient_initials"] == "JMR"
    assert "Jordan" not in str(row) and "1984" not in str(row)
    assert {"patient_name", "body", "patient", "metadata", "attachments"}.isdisjoint(row)
    assert row["url"] == f"http://testserver/api/v1/tasks/{denial.pk}/"
    assert (row["queue"], row["task_type"], row["assignee"]) == (
        "billing",
        "claim_denial",
        "alice",
    )


def test_a_client_sees_the_queues_of_its_departments(clinic, denial, parking):
    client, _ = token_client(departments=[billing_department(clinic)])
    ids = [row["id"] for row in client.get("/api/v1/tasks/").json()["results"]]
    assert ids == [denial.pk]
    nobody, _ = token_client("lonely")
    assert nobody.get("/api/v1/tasks/").json()["results"] == []


def test_filters(clinic, denial):
    statement = submit("Claim denied, and a question about the statement")
    client = staff(clinic["sam"])  # billing supervisor: sees both
    statement_type = TaskType.objects.get(code="statement_question")
    Task.objects.filter(pk=statement.pk).update(priority=2, task_type=statement_type)

    def ids(**params):
        response = client.get("/api/v1/tasks/", params)
        assert response.status_code == 200, response.json()
        return sorted(row["id"] for row in response.json()["results"])

    assert ids() == sorted([denial.pk, statement.pk])
    assert ids(status="assigned") == sorted([denial.pk, statement.pk])
    assert ids(status="resolved") == []
    assert ids(priority=2) == [statement.pk]
    assert ids(type="claim_denial") == [denial.pk]
    assert ids(queue="billing") == sorted([denial.pk, statement.pk])
    assert ids(queue="triage") == []
    future = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert ids(updated_since=future) == []
    Task.objects.filter(pk=denial.pk).update(updated_at=timezone.now() + timedelta(minutes=2))
    assert ids(updated_since=future) == [denial.pk]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"priority": "9"}, "priority"),
        ({"updated_since": "yesterday"}, "updated_since"),
        ({"updated_since": "2025-03-01T09:00:00"}, "updated_since"),
        ({"queue": "billing\x00"}, "queue"),
        ({"type": "\x00"}, "type"),
    ],
)
def test_a_bad_filter_is_named(clinic, params, field):
    response = staff(clinic["alice"]).get("/api/v1/tasks/", params)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_the_list_pages_by_cursor_through_every_task(clinic):
    made = [submit(f"Claim denied #{n}").pk for n in range(5)]
    client = staff(clinic["sam"])
    seen, url = [], "/api/v1/tasks/?page_size=2"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(made)


def test_the_list_costs_the_same_queries_for_two_or_twenty_tasks(clinic, django_assert_num_queries):
    client = staff(clinic["sam"])
    submit("Claim denied #1")
    submit("Claim denied #2")
    client.get("/api/v1/tasks/")  # the session's first read and any caches warm up
    with CaptureQueriesContext(connection) as few:
        assert len(client.get("/api/v1/tasks/").json()["results"]) == 2
    for n in range(18):
        submit(f"Claim denied #{n + 3}")
    # The session, its user, the tasks page: no query per row.
    with django_assert_num_queries(len(few.captured_queries)):
        assert len(client.get("/api/v1/tasks/").json()["results"]) == 20


def test_no_credentials_is_401_and_a_bad_token_too(clinic):
    assert APIClient().get("/api/v1/tasks/").status_code in (401, 403)
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token cdk_not-a-token")
    assert bad.get("/api/v1/tasks/").status_code == 401


def test_a_token_of_another_client_reads_as_that_client(clinic, denial):
    """Tokens are per client: the front-desk client's token never reads billing's tasks."""
    billing_client, _ = token_client("billing-system", departments=[billing_department(clinic)])
    front_client, _ = token_client("front-system", departments=[clinic["review_queue"].department])
    assert billing_client.get(f"/api/v1/tasks/{denial.pk}/").status_code == 200
    assert front_client.get(f"/api/v1/tasks/{denial.pk}/").status_code == 404


# --- one task -------------------------------------------------------------------------------


def test_the_detail_has_the_patient_timeline_and_what_the_caller_may_do(clinic, denial):
    response = staff(clinic["alice"]).get(f"/api/v1/tasks/{denial.pk}/")
    assert response.status_code == 200
    task = response.json()
    assert task["patient"] == {
        "mrn": "MRN-204611",
        "name": "Jordan M. Rivera",
        "birth_date": "1984-03-12",
        "initials": "JMR",
    }
    assert task["web_url"].endswith(reverse("queues:task", args=[denial.pk]))
    kinds = [entry["kind"] for entry in task["timeline"]]
    assert kinds[0] == "created" and "assigned" in kinds
    assert all(entry["headline"] for entry in task["timeline"])
    assert task["actions"][:2] == ["start", "resolve"]
    assert task["attachments"] == []
    assert task["version"] == denial.version


def test_a_task_of_another_department_is_404_on_detail_and_every_action(clinic, denial):
    frank = staff(clinic["frank"])  # front desk
    assert frank.get(f"/api/v1/tasks/{denial.pk}/").status_code == 404
    for action in ("claim", "start", "hold", "resume", "resolve", "reopen", "reroute",
                   "release", "comment"):  # fmt: skip
        response = act(frank, denial, action, reason="x", text="x")
        assert response.status_code == 404, action
    assert reloaded(denial).version == denial.version
    assert frank.get("/api/v1/tasks/999999/").status_code == 404


def test_a_compliance_reviewer_reads_but_cannot_act(clinic, denial):
    carol = staff(clinic["carol"])
    assert carol.get(f"/api/v1/tasks/{denial.pk}/").status_code == 200
    response = act(carol, denial, "comment", text="Looks fine")
    assert response.status_code == 403
    assert "Compliance" in response.json()["detail"]


# --- actions --------------------------------------------------------------------------------


def test_claim_start_hold_resume_resolve_round_trip(clinic, parking):
    frank = staff(clinic["frank"])
    response = act(frank, parking, "claim", expected_version=parking.version)
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["assignee"]) == ("assigned", "frank")
    assert last_event(parking).kind == TaskEvent.Kind.CLAIMED

    assert act(frank, parking, "start").json()["status"] == "in_progress"
    assert last_event(parking).kind == TaskEvent.Kind.STARTED

    response = act(
        frank, parking, "hold", reason="Waiting for the patient", follow_up_at=later(days=1)
    )
    assert response.json()["status"] == "on_hold"
    task = reloaded(parking)
    assert task.hold_reason == "Waiting for the patient"
    assert StaffProfile.objects.get(user=clinic["frank"]).active_load == 0

    assert act(frank, parking, "resume").json()["status"] == "in_progress"

    response = act(frank, parking, "resolve", outcome="Patient contacted", note="Lot B.")
    assert response.json()["status"] == "resolved"
    event = last_event(parking)
    assert (event.kind, event.reason, event.actor) == ("resolved", "Lot B.", clinic["frank"])

    response = act(frank, parking, "reopen", reason="Called again")
    assert response.status_code == 200
    assert reloaded(parking).reopen_count == 1


def test_session_calls_need_the_csrf_token(clinic, parking):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinic["frank"])
    refused = act(client, parking, "claim")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get(reverse("queues:my_work"))  # the page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(
        f"/api/v1/tasks/{parking.pk}/claim/", {}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200


def test_a_stale_version_is_409_and_changes_nothing(clinic, denial):
    alice = staff(clinic["alice"])
    response = act(alice, denial, "start", expected_version=denial.version - 1 or 99)
    assert response.status_code == 409
    assert "changed by someone else" in response.json()["detail"]
    assert reloaded(denial).status == Task.Status.ASSIGNED


def test_an_action_that_does_not_fit_the_state_is_409(clinic, parking):
    response = act(staff(clinic["frank"]), parking, "resolve", outcome="Done")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"Resolve is not possible now: task #{parking.pk} is queued."
    )


@pytest.mark.parametrize(
    ("action", "data", "fields"),
    [
        ("hold", {}, {"reason", "follow_up_at"}),
        ("hold", {"reason": "x", "follow_up_at": "2001-01-01T00:00:00Z"}, {"follow_up_at"}),
        ("resolve", {"outcome": "Sorted"}, {"outcome"}),
        ("reroute", {"to_queue": "nowhere", "reason": "x"}, {"to_queue"}),
        ("reroute", {"to_queue": "triage"}, {"reason"}),
        ("comment", {"text": ""}, {"text"}),
        ("start", {"expected_version": "two"}, {"expected_version"}),
    ],
)
def test_invalid_input_is_400_naming_the_fields(clinic, denial, action, data, fields):
    response = act(staff(clinic["alice"]), denial, action, **data)
    assert response.status_code == 400
    assert set(response.json()["errors"]) == fields


def test_reroute_moves_the_task_with_its_reason(clinic, denial):
    response = act(staff(clinic["alice"]), denial, "reroute", to_queue="appeals", reason="Appeal")
    assert response.status_code == 200, response.json()
    assert response.json()["queue"] == "appeals"
    event = TaskEvent.objects.get(task=denial, kind=TaskEvent.Kind.REROUTED)
    assert (event.reason, event.actor) == ("Appeal", clinic["alice"])


def test_release_gives_the_task_back(clinic, denial):
    response = act(staff(clinic["alice"]), denial, "release", reason="Going home")
    assert response.status_code == 200
    assert reloaded(denial).assignee != clinic["alice"]


def test_a_client_acts_as_itself_but_never_claims(clinic, denial, parking):
    client, integration = token_client(departments=[clinic["review_queue"].department])
    response = act(client, parking, "claim")
    assert response.status_code == 403
    assert "Integration clients do not claim" in response.json()["detail"]
    assert client.post("/api/v1/tasks/next/").status_code == 403

    response = act(client, parking, "comment", text="The patient called back about this.")
    assert response.status_code == 200
    event = last_event(parking)
    assert (event.kind, event.actor_label, event.actor) == ("commented", "client:ehr", None)

    response = act(client, parking, "reroute", to_queue="billing", reason="It is a bill")
    assert response.status_code == 200
    rerouted = TaskEvent.objects.get(task=parking, kind=TaskEvent.Kind.REROUTED)
    assert (rerouted.actor_label, rerouted.reason) == ("client:ehr", "It is a bill")
    assert integration.actor_label == "client:ehr"


# --- next task ------------------------------------------------------------------------------


def test_next_claims_the_most_urgent_waiting_task_then_nothing(clinic, parking):
    frank = staff(clinic["frank"])
    response = frank.post("/api/v1/tasks/next/")
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["assignee"]) == (parking.pk, "frank")
    response = frank.post("/api/v1/tasks/next/")
    assert response.status_code == 204


def test_next_at_capacity_is_409(clinic, parking):
    StaffProfile.objects.filter(user=clinic["frank"]).update(capacity=0)
    response = staff(clinic["frank"]).post("/api/v1/tasks/next/")
    assert response.status_code == 409
    assert "capacity" in response.json()["detail"]


def test_next_for_someone_who_works_no_queue_is_403(clinic):
    response = staff(clinic["carol"]).post("/api/v1/tasks/next/")
    assert response.status_code == 403


# --- queues ---------------------------------------------------------------------------------


def test_queues_lists_the_visible_queues_with_their_open_work(clinic, denial):
    submit("Claim denied again")
    resolved = submit("Claim denied, old")
    queues_services.task_resolve(task_id=resolved.pk, actor="system:test", outcome="Done")
    response = staff(clinic["alice"]).get("/api/v1/queues/")
    assert response.status_code == 200
    by_code = {q["code"]: q for q in response.json()}
    assert set(by_code) == {"billing", "appeals"}
    assert by_code["billing"]["open_tasks"] == 2
    assert by_code["billing"]["department"] == "billing"
