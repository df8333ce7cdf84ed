import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from escalation import services
from escalation.models import Escalation, EscalationStep, Notification, TaskSla
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues.models import Queue, Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory
from routing.tests.factories import RuleSetFactory

SWEEP = "system:escalation_sweep"


def claim_policy():
    """One hour to first claim: at risk at 75 %, priority raised at the breach."""
    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=240)
    EscalationStepFactory(policy=policy, level=1, percent=75, action="mark_at_risk")
    EscalationStepFactory(policy=policy, level=2, percent=100, action="raise_priority")
    return policy


def aged(minutes: int, **kwargs) -> Task:
    return TaskFactory(received_at=timezone.now() - timedelta(minutes=minutes), **kwargs)


@pytest.mark.django_db
def test_due_steps_fire_once_and_act():
    claim_policy()
    task = aged(70, priority=3)

    assert services.sweep() == 2

    task.refresh_from_db()
    assert task.priority == 2
    assert TaskSla.objects.get(task=task).at_risk
    events = list(task.events.filter(kind=TaskEvent.Kind.ESCALATED).order_by("id"))
    assert [e.actor_label for e in events] == [SWEEP, SWEEP]
    assert [e.explanation["step"]["level"] for e in events] == [1, 2]
    assert events[1].explanation["target"] == "first_claim"
    assert events[1].explanation["due_at"] == task.claim_due_at.isoformat()
    assert events[1].explanation["outcome"] == "priority raised one level"
    assert "Policy" in events[1].reason
    # The next pending step is the resolution target's... none here: nothing left to do.
    assert TaskSla.objects.get(task=task).next_step_at is None

    assert services.sweep() == 0
    assert Escalation.objects.filter(task=task).count() == 2
    assert task.events.filter(kind=TaskEvent.Kind.ESCALATED).count() == 2


@pytest.mark.django_db
def test_nothing_due_fires_nothing():
    claim_policy()
    fresh = aged(10)
    aged(200, first_claimed_at=timezone.now())  # claimed: the first-claim steps are met

    assert services.sweep() == 0
    assert not Escalation.objects.exists()
    # The fresh task's next step is its 75 % mark, stored for the next sweeps.
    sla = TaskSla.objects.get(task=fresh)
    assert sla.next_step_at == fresh.received_at + timedelta(minutes=45)


@pytest.mark.django_db
def test_only_the_steps_whose_time_has_come_fire():
    claim_policy()
    task = aged(50)

    assert services.sweep() == 1
    assert Escalation.objects.get(task=task).level == 1
    assert TaskSla.objects.get(task=task).next_step_at == task.received_at + timedelta(minutes=60)
    assert services.sweep(now=task.received_at + timedelta(minutes=61)) == 1
    assert sorted(Escalation.objects.values_list("level", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_a_breached_resolution_moves_the_task_to_the_escalation_queue():
    RuleSetFactory()
    work = QueueFactory(code="claims")
    escalations = QueueFactory(department=work.department, code="esc", kind=Queue.Kind.ESCALATION)
    policy = SlaPolicyFactory(first_claim_minutes=None, resolution_minutes=60)
    EscalationStepFactory(
        policy=policy,
        level=1,
        target="resolution",
        when="after_breach",
        minutes_after=30,
        action="move_to_escalation_queue",
        escalation_queue=escalations,
    )
    late = aged(95, queue=work, first_claimed_at=timezone.now())
    not_yet = aged(80, queue=work)

    assert services.sweep() == 1

    late.refresh_from_db()
    assert late.queue == escalations
    assert late.status == Task.Status.QUEUED
    assert late.reroute_count == 0
    # Moved, then offered in its new queue (nobody there has room: it waits), then recorded.
    kinds = list(late.events.order_by("id").values_list("kind", "actor_label"))
    assert kinds[0] == (TaskEvent.Kind.REROUTED, SWEEP)
    assert kinds[-1] == (TaskEvent.Kind.ESCALATED, SWEEP)
    assert Task.objects.get(pk=not_yet.pk).queue == work


@pytest.mark.django_db
def test_a_task_on_hold_does_not_escalate():
    claim_policy()
    held = aged(200, status=Task.Status.ON_HOLD)
    TaskEvent.objects.create(task=held, kind=TaskEvent.Kind.HELD, actor_label="alice")

    assert services.sweep() == 0


@pytest.mark.django_db
def test_the_sweep_picks_up_a_changed_task_without_any_hook():
    claim_policy()
    task = aged(50)
    assert services.sweep() == 1  # level 1; level 2 at the hour

    # Someone claims it: the version moves, and the sweep recomputes before it looks.
    Task.objects.filter(pk=task.pk).update(first_claimed_at=timezone.now(), version=2)

    assert services.sweep(now=timezone.now() + timedelta(minutes=30)) == 0
    assert TaskSla.objects.get(task=task).task_version == 2
    assert TaskSla.objects.get(task=task).next_step_at is None


@pytest.mark.django_db
def test_sweep_command_runs_one_sweep_and_says_how_many_fired():
    claim_policy()
    aged(70)
    out = StringIO()

    call_command("sweep_escalations", stdout=out)
    assert out.getvalue().strip() == "2 escalation steps fired."

    out = StringIO()
    call_command("sweep_escalations", stdout=out)
    assert out.getvalue().strip() == "0 escalation steps fired."


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_fire_each_step_exactly_once():
    policy = claim_policy()
    EscalationStepFactory(policy=policy, level=3, action="notify_address", address="a@x.example")
    tasks = [aged(70) for _ in range(30)]
    barrier = threading.Barrier(2)
    fired: list[int] = []
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            while True:
                count = services.sweep(batch=7)
                fired.append(count)
                if count == 0:
                    break
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert sum(fired) == 3 * len(tasks)
    assert Escalation.objects.count() == 3 * len(tasks)
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED).count() == 3 * len(tasks)
    # Raised exactly once each: P3 → P2, never P1.
    assert set(Task.objects.values_list("priority", flat=True)) == {2}
    assert Notification.objects.count() == len(tasks)
    assert services.sweep() == 0


@pytest.mark.django_db
def test_a_step_whose_action_no_longer_fits_is_recorded_not_retried():
    RuleSetFactory()
    work = QueueFactory()
    escalations = QueueFactory(department=work.department, kind=Queue.Kind.ESCALATION)
    policy = SlaPolicyFactory(first_claim_minutes=60)
    EscalationStepFactory(
        policy=policy,
        level=1,
        action=EscalationStep.Action.MOVE_TO_ESCALATION_QUEUE,
        escalation_queue=escalations,
    )
    # Already in the escalation queue: the move is refused, the step still counts as fired.
    task = aged(70, queue=escalations)

    assert services.sweep() == 1
    event = task.events.get(kind=TaskEvent.Kind.ESCALATED)
    assert event.explanation["outcome"].startswith("not done:")
    assert services.sweep() == 0


@pytest.mark.django_db
def test_reassign_gives_a_stalled_task_to_someone_else():
    from accounts.models import StaffProfile
    from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
    from queues.tests.factories import TaskTypeFactory

    RuleSetFactory()
    billing = DepartmentFactory()
    claims = QueueFactory(department=billing)
    task_type = TaskTypeFactory(default_queue=claims)
    ana, ben = (
        StaffProfileFactory(user=UserFactory(username=name), departments=[billing]).user
        for name in ("ana", "ben")
    )
    StaffProfile.objects.filter(user=ana).update(active_load=1)
    policy = SlaPolicyFactory(first_claim_minutes=None, resolution_minutes=60)
    EscalationStepFactory(policy=policy, level=1, target="resolution", action="reassign")
    task = aged(
        61,
        task_type=task_type,
        status=Task.Status.IN_PROGRESS,
        assignee=ana,
        first_claimed_at=timezone.now(),
    )

    assert services.sweep() == 1

    task.refresh_from_db()
    assert task.events.filter(kind=TaskEvent.Kind.RELEASED, actor_label=SWEEP).exists()
    assert task.events.get(kind=TaskEvent.Kind.ESCALATED).explanation["outcome"] == (
        "released and offered to someone else"
    )
    assert task.assignee == ben
    assert StaffProfile.objects.get(user=ana).active_load == 0
