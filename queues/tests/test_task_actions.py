"""The actions of the Task page: each through the view, its service and its timeline event."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import StaffProfile
from queues.models import Task, TaskEvent
from queues.tests.test_task_page import FAST_HASHERS, build_clinic, page_text, submit
from routing import services as routing_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    return build_clinic()


@pytest.fixture
def denial(clinic):
    """A billing task, pushed to alice."""
    task = submit("Claim denied for March visit")
    assert task.assignee == clinic["alice"]
    return task


def act(client, task, action, **data):
    """POST an action with the version the page showed, unless the test says otherwise."""
    data.setdefault("expected_version", Task.objects.get(pk=task.pk).version)
    return client.post(reverse("queues:task_action", args=[task.pk, action]), data)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def later(**delta) -> str:
    return timezone.localtime(timezone.now() + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M")


def reloaded(task) -> Task:
    return Task.objects.get(pk=task.pk)


def last_event(task) -> TaskEvent:
    return TaskEvent.objects.filter(task_id=task.pk).order_by("-id").first()


def test_claim_takes_a_queued_task(client, clinic):
    task = submit("A question about parking")  # Needs review: pull only
    client.force_login(clinic["frank"])
    response = act(client, task, "claim")
    assert response.status_code == 302
    assert response["Location"] == reverse("queues:task", args=[task.pk])
    task = reloaded(task)
    assert (task.status, task.assignee) == (Task.Status.ASSIGNED, clinic["frank"])
    assert last_event(task).kind == TaskEvent.Kind.CLAIMED
    assert messages_of(response) == [f"Task #{task.pk} is yours now."]


def test_start_then_hold_then_resume_then_resolve(client, clinic, denial):
    alice = clinic["alice"]
    client.force_login(alice)

    act(client, denial, "start")
    assert reloaded(denial).status == Task.Status.IN_PROGRESS
    assert last_event(denial).kind == TaskEvent.Kind.STARTED

    act(client, denial, "hold", reason="Waiting for the payer's answer", follow_up_at=later(days=2))
    task = reloaded(denial)
    assert task.status == Task.Status.ON_HOLD
    assert task.hold_reason == "Waiting for the payer's answer"
    assert task.follow_up_at > timezone.now() + timedelta(days=1)
    assert StaffProfile.objects.get(user=alice).active_load == 0  # left her load
    assert last_event(task).kind == TaskEvent.Kind.HELD

    act(client, denial, "resume")
    task = reloaded(denial)
    assert (task.status, task.assignee) == (Task.Status.IN_PROGRESS, alice)
    assert last_event(task).kind == TaskEvent.Kind.RESUMED

    response = act(client, denial, "resolve", outcome="Appeal filed", note="Form 12 sent.")
    task = reloaded(denial)
    assert (task.status, task.outcome) == (Task.Status.RESOLVED, "Appeal filed")
    event = last_event(task)
    assert (event.kind, event.reason, event.actor) == (
        TaskEvent.Kind.RESOLVED,
        "Form 12 sent.",
        alice,
    )
    assert messages_of(response)[-1] == f"Task #{task.pk} resolved."


def test_reopen_needs_a_reason_and_requeues(client, clinic, denial):
    routing_services.task_resolve(task_id=denial.pk, actor=clinic["alice"], outcome="Done")
    client.force_login(clinic["alice"])
    act(client, denial, "reopen", reason="The payer wrote again")
    task = reloaded(denial)
    assert task.status in (Task.Status.QUEUED, Task.Status.ASSIGNED)
    assert task.reopen_count == 1
    assert TaskEvent.objects.filter(task=task, kind=TaskEvent.Kind.REOPENED).exists()


def test_release_gives_the_task_back_to_someone_else(client, clinic, denial):
    client.force_login(clinic["alice"])
    act(client, denial, "release", reason="Going home sick")
    task = reloaded(denial)
    assert task.assignee != clinic["alice"]
    released = TaskEvent.objects.get(task=task, kind=TaskEvent.Kind.RELEASED)
    assert (released.from_user, released.reason) == (clinic["alice"], "Going home sick")


def test_reroute_records_the_chosen_reason_and_details(client, clinic, denial):
    client.force_login(clinic["alice"])
    act(
        client,
        denial,
        "reroute",
        to_queue=clinic["appeals_queue"].pk,
        reason_choice="Needs a skill this team does not have",
        reason="Payer appeal",
    )
    task = reloaded(denial)
    assert task.queue == clinic["appeals_queue"]
    assert task.reroute_count == 1
    event = TaskEvent.objects.get(task=task, kind=TaskEvent.Kind.REROUTED)
    assert event.reason == "Needs a skill this team does not have: Payer appeal"


def test_reroute_with_other_needs_details(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(
        client, denial, "reroute", to_queue=clinic["appeals_queue"].pk, reason_choice="other"
    )
    assert response.status_code == 400
    assert "Describe the reason when you choose “Other”." in page_text(response)
    assert reloaded(denial).queue == clinic["billing_queue"]


def test_a_supervisor_reassigns_with_a_reason(client, clinic, denial):
    client.force_login(clinic["sam"])
    act(client, denial, "reassign", to_user=clinic["carla"].pk, reason="Balancing the workload")
    task = reloaded(denial)
    assert task.assignee == clinic["carla"]
    event = TaskEvent.objects.get(task=task, kind=TaskEvent.Kind.REASSIGNED)
    assert (event.actor, event.from_user, event.to_user) == (
        clinic["sam"],
        clinic["alice"],
        clinic["carla"],
    )


def test_an_agent_may_not_reassign(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "reassign", to_user=clinic["carla"].pk, reason="Mine")
    assert response.status_code == 403
    assert reloaded(denial).assignee == clinic["alice"]


def test_classify_a_needs_review_task_routes_it(client, clinic):
    task = submit("A question about my statement")
    assert task.queue == clinic["review_queue"]
    client.force_login(clinic["frank"])
    response = act(client, task, "classify", task_type_code="statement_question", priority="2")
    assert response.status_code == 302, page_text(response)
    task = reloaded(task)
    assert (task.task_type.code, task.queue, task.priority) == (
        "statement_question",
        clinic["billing_queue"],
        2,
    )
    event = TaskEvent.objects.get(task=task, kind=TaskEvent.Kind.RECLASSIFIED)
    assert event.actor == clinic["frank"]
    # Billing's task now: out of the front desk's sight, so back to My work.
    assert response["Location"] == reverse("queues:my_work")
    assert messages_of(response) == [f"Task #{task.pk} classified and routed to Billing."]


def test_rerouting_a_task_out_of_sight_leads_back_to_my_work(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(
        client,
        denial,
        "reroute",
        to_queue=clinic["review_queue"].pk,
        reason_choice="other",
        reason="Not a denial: a parking question",
    )
    assert response["Location"] == reverse("queues:my_work")
    assert messages_of(response) == [f"Task #{denial.pk} rerouted to Needs review."]


def test_comment_adds_to_the_timeline_even_from_a_stale_page(client, clinic, denial):
    client.force_login(clinic["carla"])
    response = act(client, denial, "comment", text="Patient called again.", expected_version=1)
    assert response.status_code == 302
    event = last_event(denial)
    assert (event.kind, event.reason, event.actor) == (
        TaskEvent.Kind.COMMENTED,
        "Patient called again.",
        clinic["carla"],
    )


def test_an_action_invalid_in_the_tasks_state_is_refused_with_a_message(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "resume")
    assert response.status_code == 302
    assert messages_of(response) == [f"Resume is not possible now: task #{denial.pk} is assigned."]
    page = client.get(response["Location"])
    assert f"Resume is not possible now: task #{denial.pk} is assigned." in page_text(page)


def test_a_stale_page_is_refused_and_nothing_is_overwritten(client, clinic, denial):
    seen = reloaded(denial).version
    routing_services.task_hold(
        task_id=denial.pk,
        actor=clinic["sam"],
        reason="Waiting for records",
        follow_up_at=timezone.now() + timedelta(days=1),
    )
    client.force_login(clinic["alice"])
    response = act(client, denial, "resolve", outcome="Done", expected_version=seen)
    assert response.status_code == 302
    (message,) = messages_of(response)
    assert "changed by someone else" in message
    task = reloaded(denial)
    assert (task.status, task.hold_reason) == (Task.Status.ON_HOLD, "Waiting for records")
    assert not TaskEvent.objects.filter(task=task, kind=TaskEvent.Kind.RESOLVED).exists()


def test_a_stale_page_posting_a_now_invalid_action_says_it_was_changed(client, clinic, denial):
    seen = reloaded(denial).version
    routing_services.task_resolve(task_id=denial.pk, actor=clinic["alice"], outcome="Done")
    client.force_login(clinic["alice"])
    response = act(client, denial, "start", expected_version=seen)
    assert response.status_code == 302
    (message,) = messages_of(response)
    assert message.startswith(f"Task #{denial.pk} was changed by someone else")


def test_compliance_posts_are_forbidden(client, clinic, denial):
    client.force_login(clinic["carol"])
    response = act(client, denial, "comment", text="Looks fine")
    assert response.status_code == 403
    assert not TaskEvent.objects.filter(task=denial, kind=TaskEvent.Kind.COMMENTED).exists()


def test_another_departments_task_is_not_found(client, clinic, denial):
    client.force_login(clinic["nora"])
    assert act(client, denial, "comment", text="Hello").status_code == 404


def test_an_unknown_action_is_not_found(client, clinic, denial):
    client.force_login(clinic["alice"])
    assert act(client, denial, "delete").status_code == 404


def test_actions_must_be_posted(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = client.get(reverse("queues:task_action", args=[denial.pk, "resolve"]))
    assert response.status_code == 405


def test_actions_need_the_csrf_token(clinic, denial):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(clinic["alice"])
    assert act(browser, denial, "start").status_code == 403
    assert reloaded(denial).status == Task.Status.ASSIGNED


def test_hold_without_a_reason_names_the_field_and_the_fix(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "hold", reason="  ", follow_up_at=later(days=1))
    assert response.status_code == 400
    text = page_text(response)
    assert "Hold was not saved: see the highlighted fields." in text
    assert "Say what the task is waiting for" in text
    content = response.content.decode()
    assert 'id="hold-reason"' in content and 'aria-invalid="true"' in content
    assert 'id="panel-hold"' in content and 'id="panel-hold" data-action-panel="hold"' in content
    assert reloaded(denial).status == Task.Status.ASSIGNED


def test_hold_with_a_follow_up_in_the_past_is_refused(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "hold", reason="Waiting", follow_up_at=later(hours=-1))
    assert response.status_code == 400
    assert "Choose a follow-up time in the future" in page_text(response)
    assert reloaded(denial).status == Task.Status.ASSIGNED


def test_hold_without_a_follow_up_time_asks_for_one(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "hold", reason="Waiting")
    assert response.status_code == 400
    assert "Choose when to follow up if nothing has come back." in page_text(response)


def test_resolve_without_an_outcome_asks_for_one(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(client, denial, "resolve", outcome="")
    assert response.status_code == 400
    assert "Choose the outcome of the task." in page_text(response)


def test_a_reroute_target_that_is_not_offered_is_refused(client, clinic, denial):
    client.force_login(clinic["alice"])
    response = act(
        client,
        denial,
        "reroute",
        to_queue=clinic["billing_queue"].pk,  # the task's own queue
        reason_choice="Sent to the wrong team",
    )
    assert response.status_code == 400
    assert "That queue is not available; choose another." in page_text(response)


def test_claim_at_capacity_is_refused_with_a_message(client, clinic):
    task = submit("A question about parking")
    StaffProfile.objects.filter(user=clinic["frank"]).update(capacity=0)
    client.force_login(clinic["frank"])
    response = act(client, task, "claim")
    assert response.status_code == 302
    (message,) = messages_of(response)
    assert "at capacity" in message
    assert reloaded(task).status == Task.Status.QUEUED
