"""One task as a user may see it, what they may do with it, and its timeline in words."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from accounts.tests.factories import UserFactory
from queues import selectors
from queues import services as queues_services
from queues.models import Task, TaskEvent
from queues.tests.factories import TaskEventFactory
from queues.tests.test_task_page import FAST_HASHERS, build_clinic, submit
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


def test_billing_agent_cannot_open_a_triage_task(clinic):
    triage_task = submit("Bill", "my claim denied and I have chest pain")
    with pytest.raises(Http404):
        selectors.get_task_for_user(clinic["alice"], triage_task.pk)
    with pytest.raises(Http404):
        selectors.get_task_for_user_rw(clinic["alice"], triage_task.pk)


def test_a_missing_task_is_not_found(clinic):
    with pytest.raises(Http404):
        selectors.get_task_for_user(clinic["alice"], 999_999)


def test_compliance_may_read_but_not_act(clinic, denial):
    carol = clinic["carol"]
    assert selectors.get_task_for_user(carol, denial.pk) == denial
    with pytest.raises(PermissionDenied):
        selectors.get_task_for_user_rw(carol, denial.pk)


def test_compliance_may_not_act_even_as_a_department_member(clinic, denial):
    alice = clinic["alice"]
    alice.groups.add(clinic["carol"].groups.get(name="Compliance"))
    with pytest.raises(PermissionDenied):
        selectors.get_task_for_user_rw(alice, denial.pk)


def test_a_manager_outside_the_department_reads_only(clinic, denial):
    manager = UserFactory(username="maria", roles=["Manager"])
    assert selectors.get_task_for_user(manager, denial.pk) == denial
    with pytest.raises(PermissionDenied):
        selectors.get_task_for_user_rw(manager, denial.pk)


def test_a_supervisor_can_act_on_the_departments_queues(clinic, denial):
    sam = clinic["sam"]
    task = selectors.get_task_for_user_rw(sam, denial.pk)
    access = selectors.task_access(sam, task)
    assert access.can_act and access.is_supervisor and access.can_work_queue


def test_a_colleague_can_act_but_is_no_supervisor(clinic, denial):
    carla = clinic["carla"]
    access = selectors.task_access(carla, selectors.get_task_for_user_rw(carla, denial.pk))
    assert access.can_act and not access.is_supervisor


def test_the_assignee_keeps_acting_after_the_task_moved_to_another_queue(clinic, denial):
    Task.objects.filter(pk=denial.pk).update(queue=clinic["triage_queue"])
    alice = clinic["alice"]
    access = selectors.task_access(alice, selectors.get_task_for_user_rw(alice, denial.pk))
    assert access.can_act and not access.can_work_queue


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("alice", ["start", "resolve", "hold", "release", "reroute", "comment"]),
        ("carla", ["comment"]),
        ("sam", ["resolve", "hold", "release", "reroute", "reassign", "comment"]),
        ("carol", []),
    ],
)
def test_actions_offered_for_an_assigned_task(clinic, denial, who, expected):
    user = clinic[who]
    task = selectors.get_task_for_user(user, denial.pk)
    assert selectors.task_actions(task, selectors.task_access(user, task)) == expected


def test_a_blocked_task_cannot_be_claimed(clinic, denial):
    blocked = submit("A question about parking")
    Task.objects.filter(pk=blocked.pk).update(blocked_by=denial)
    frank = clinic["frank"]
    task = selectors.get_task_for_user(frank, blocked.pk)
    assert "claim" not in selectors.task_actions(task, selectors.task_access(frank, task))


def test_the_timeline_takes_two_queries_whatever_its_length(
    clinic, denial, django_assert_num_queries
):
    for n in range(20):
        queues_services.task_comment(task_id=denial.pk, actor=clinic["alice"], text=f"Note {n}")
    with django_assert_num_queries(2):
        timeline = selectors.task_timeline(denial)
    assert len(timeline) == 23
    assert [entry.kind for entry in timeline[:3]] == ["created", "routed", "assigned"]
    assert timeline[-1].headline == "Alice Moreno commented"
    assert timeline[-1].note == "Note 19"


def test_a_timeline_of_plain_events_needs_no_name_lookup(clinic, django_assert_num_queries):
    event = TaskEventFactory(actor_label="client:ehr")
    with django_assert_num_queries(1):
        (entry,) = selectors.task_timeline(event.task)
    assert (entry.headline, entry.actor, entry.actor_kind) == (
        "Received",
        "Integration: ehr",
        "integration",
    )


def test_every_step_of_a_task_reads_as_a_sentence(clinic, denial):
    alice, sam = clinic["alice"], clinic["sam"]
    follow_up = timezone.now() + timedelta(days=1)
    routing_services.task_hold(
        task_id=denial.pk, actor=alice, reason="Waiting for the payer", follow_up_at=follow_up
    )
    routing_services.task_resume(task_id=denial.pk, actor=alice)
    routing_services.task_reassign(
        task_id=denial.pk, actor=sam, to_user=clinic["carla"], reason="Balancing load"
    )
    routing_services.task_release(task_id=denial.pk, actor=sam, reason="Carla is out")
    routing_services.task_reroute(
        task_id=denial.pk, actor=sam, to_queue=clinic["appeals_queue"], reason="Needs an appeal"
    )
    task = Task.objects.get(pk=denial.pk)
    routing_services.task_resolve(
        task_id=task.pk, actor=task.assignee, outcome="Appeal filed", note="Sent on form 12"
    )
    routing_services.task_reopen(task_id=task.pk, actor=sam, reason="Payer wrote again")

    headlines = [(e.kind, e.headline, e.note) for e in selectors.task_timeline(denial)]

    assert (
        "held",
        f"Put on hold until {selectors.format_moment(follow_up)}",
        "Waiting for the payer",
    ) in headlines
    assert ("resumed", "Resumed: back with Alice Moreno", "") in headlines
    assert (
        "reassigned",
        "Reassigned to Carla Diaz from Alice Moreno",
        "Balancing load",
    ) in headlines
    assert (
        "released",
        "Released to the queue (it was with Carla Diaz)",
        "Carla is out",
    ) in headlines
    assert ("rerouted", "Rerouted from Billing to Appeals", "Needs an appeal") in headlines
    assert ("resolved", "Resolved — Appeal filed", "Sent on form 12") in headlines
    assert ("reopened", "Reopened", "Payer wrote again") in headlines


def test_a_persons_classification_reads_as_a_correction(clinic):
    task = submit("A question about parking")
    routing_services.task_reclassify(
        task_id=task.pk, actor=clinic["frank"], task_type_code="claim_denial"
    )
    entry = next(e for e in selectors.task_timeline(task) if e.kind == "reclassified")
    assert entry.headline == "Classified as Claim denial and routed to Billing"
    assert entry.actor == "Frank Lee"
    assert "Routed to the default queue of Claim denial." in entry.details


@pytest.mark.parametrize("kind", TaskEvent.Kind.values)
@pytest.mark.parametrize(
    "explanation",
    [
        {},
        {"route": None, "matched": "x", "priority": [], "candidates": 3, "chosen": "Ana"},
        {"assignment": {}, "correction": {"corrected_rule_ids": None}, "follow_up_at": "soon"},
    ],
)
def test_describe_event_is_robust_to_missing_or_odd_keys(kind, explanation):
    event = TaskEvent(kind=kind, actor_label="system:escalation", explanation=explanation)
    entry = selectors.describe_event(event)
    assert entry.headline
    assert entry.actor == "Escalation job"


def test_an_assignment_names_everyone_passed_over_and_why():
    explanation = {
        "policy": "push_least_loaded",
        "required_skill": "payer-appeals",
        "min_skill_level": 3,
        "chosen": {"staff_id": 1, "name": "Ana"},
        "why": "least loaded: 2/5 units, lowest share of 1 eligible",
        "candidates": [
            {"staff_id": 1, "name": "Ana", "eligible": True, "load": 2, "capacity": 5},
            {"staff_id": 2, "name": "Ben", "eligible": False, "reason": "away"},
            {"staff_id": 3, "name": "Carla", "eligible": False, "reason": "lacks_skill"},
            {
                "staff_id": 4,
                "name": "Dev",
                "eligible": False,
                "reason": "at_capacity",
                "load": 5,
                "capacity": 5,
            },
            {
                "staff_id": 5,
                "name": "Eve",
                "eligible": False,
                "reason": "off_shift",
                "detail": "shift 08:00-17:00 Mon,Tue (America/New_York); local time Sat 10:00",
            },
        ],
    }
    names = selectors.Names(skills={"payer-appeals": "Payer appeals"})
    entry = selectors.describe_event(
        TaskEvent(kind="assigned", actor_label="system:router", explanation=explanation), names
    )
    assert entry.headline == (
        "Offered to Ana (2 of 5 in use) — Ben away; Carla lacks skill Payer appeals (not held); "
        "Dev at capacity (5 of 5 in use); Eve off shift (08:00-17:00 Mon,Tue "
        "(America/New_York); local time Sat 10:00)"
    )
    assert (
        "Chosen by the queue's policy — least loaded: 2/5 units, lowest share of 1 eligible."
        in entry.details
    )
    assert entry.actor == "Routing engine"


def test_nobody_eligible_reads_as_waiting():
    explanation = {
        "chosen": None,
        "why": "nobody eligible: the task waits for capacity",
        "candidates": [{"name": "Ben", "eligible": False, "reason": "offline"}],
    }
    entry = selectors.describe_event(TaskEvent(kind="waiting", explanation=explanation))
    assert entry.headline == "Nobody could take it now — Ben offline"
    assert entry.tone == "warn"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("system:router", ("Routing engine", "system")),
        ("system:nightly_sweep", ("System job: nightly sweep", "system")),
        ("client:ehr-gateway", ("Integration: ehr-gateway", "integration")),
        ("supervisor1", ("supervisor1", "person")),
        ("", ("Unknown", "person")),
    ],
)
def test_actor_labels_read_as_names(label, expected):
    assert selectors.actor_display(label) == expected
