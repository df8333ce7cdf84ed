"""The sweep's changed-task detection (`Task.sla_version` and the partial index
`task_sla_stale`) and its set-based firing of the due steps."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.factories import DepartmentFactory, UserFactory
from escalation import notifications, selectors, services
from escalation.models import Escalation, Notification, TaskSla
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues import services as queues_services
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory, closed_tasks

SWEEP = services.SWEEP_ACTOR


def aged(minutes: int, **kwargs) -> Task:
    return TaskFactory(received_at=timezone.now() - timedelta(minutes=minutes), **kwargs)


def stale_ids() -> list[int]:
    return selectors.stale_task_ids(limit=1000)


def at_risk_then_raise(**policy_fields):
    """One hour to first claim: at risk at 75 %, priority raised at the breach."""
    policy = SlaPolicyFactory(first_claim_minutes=60, **policy_fields)
    EscalationStepFactory(policy=policy, level=1, percent=75, action="mark_at_risk")
    EscalationStepFactory(policy=policy, level=2, percent=100, action="raise_priority")
    return policy


# --- changed tasks ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_task_is_stale_until_computed_and_again_after_each_change():
    at_risk_then_raise()
    task = aged(10)
    assert stale_ids() == [task.pk]

    assert services.sweep() == 0
    task.refresh_from_db()
    assert task.sla_version == task.version
    assert stale_ids() == []

    queues_services.task_comment(task_id=task.pk, actor="alice", text="Called the payer")
    assert stale_ids() == [task.pk]
    services.sweep()
    task.refresh_from_db()
    assert (task.sla_version, TaskSla.objects.get(task=task).task_version) == (task.version,) * 2
    assert stale_ids() == []


@pytest.mark.django_db
def test_a_task_no_policy_matches_is_not_left_stale():
    SlaPolicyFactory(priorities=[1])
    task = aged(10, priority=4)

    services.sweep()

    assert stale_ids() == []
    assert TaskSla.objects.get(task=task).policy is None


@pytest.mark.django_db
def test_a_policy_added_later_applies_to_the_open_tasks_already_waiting():
    SlaPolicyFactory(priorities=[1])
    task = aged(30, priority=4)
    closed = aged(30, priority=4, status=Task.Status.RESOLVED)
    services.sweep()
    task.refresh_from_db()
    assert task.claim_due_at is None and stale_ids() == []

    SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=None)
    assert services.sla_configuration_changed() == 1  # the open task, not the closed one
    assert stale_ids() == [task.pk]
    services.sweep()

    task.refresh_from_db()
    closed.refresh_from_db()
    assert task.claim_due_at == task.received_at + timedelta(minutes=60)
    assert closed.claim_due_at is None
    assert stale_ids() == []


@pytest.mark.django_db
def test_closed_tasks_are_never_recomputed_as_changed():
    at_risk_then_raise()
    aged(10, status=Task.Status.RESOLVED)
    aged(10, status=Task.Status.DUPLICATE)

    assert stale_ids() == []


@pytest.mark.django_db
def test_the_changed_task_query_reads_the_partial_index_and_nothing_else():
    # A table of a few rows is read as cheaply through any index; this one is shaped like a
    # clinic's: thousands of closed tasks before the few changed open ones, fresh statistics,
    # sequential scans priced out as they are on a million rows.
    at_risk_then_raise()
    queue = QueueFactory()
    closed_tasks(queue, 3000)
    TaskFactory.create_batch(3, queue=queue)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queues_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + selectors.STALE_TASKS_SQL, {"limit": 10})
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "task_sla_stale" in plan, plan
    assert "Sort" not in plan, plan
    assert "escalation_tasksla" not in plan, plan


@pytest.mark.django_db
def test_a_closed_task_with_a_due_step_is_cleared_without_firing():
    at_risk_then_raise()
    task = aged(50)
    services.recompute_due_for_tasks(task_ids=[task.pk])
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RESOLVED, version=2)

    assert services.sweep() == 0
    assert TaskSla.objects.get(task=task).next_step_at is None
    assert not Escalation.objects.exists()


@pytest.mark.django_db
def test_a_policy_edited_after_the_due_times_were_computed_applies_at_the_sweep():
    policy = at_risk_then_raise()
    task = aged(50)
    services.recompute_due_for_tasks(task_ids=[task.pk])
    policy.first_claim_minutes = 120
    policy.save()

    assert services.sweep() == 0
    task.refresh_from_db()
    assert task.claim_due_at == task.received_at + timedelta(minutes=120)
    assert TaskSla.objects.get(task=task).next_step_at == task.received_at + timedelta(minutes=90)


# --- set-based firing ------------------------------------------------------------------------


@pytest.fixture
def clinic():
    department = DepartmentFactory()
    queue = QueueFactory(department=department, name="Authorizations")
    supervisor = UserFactory(username="sam", email="sam@clinic.example", roles=["Supervisor"])
    supervisor.groups.add(department.group)
    task_type = TaskTypeFactory(default_queue=queue, name="Prior authorization")
    policy = SlaPolicyFactory(name="Prior auth", first_claim_minutes=60, resolution_minutes=None)
    for level, percent, action in [
        (1, 50, "mark_at_risk"),
        (2, 100, "notify_supervisor"),
        (3, 100, "raise_priority"),
        (4, 100, "notify_address"),
    ]:
        EscalationStepFactory(
            policy=policy, level=level, percent=percent, action=action, address="ops@x.example"
        )
    return task_type


@pytest.mark.django_db
def test_set_based_firing_acts_once_per_step_and_records_each(clinic):
    now = timezone.now()
    tasks = [
        TaskFactory(task_type=clinic, received_at=now - timedelta(minutes=70 + i), priority=3)
        for i in range(12)
    ]

    assert services.sweep(now=now) == 4 * len(tasks)

    for task in tasks:
        task.refresh_from_db()
        assert (task.priority, task.version) == (2, 2)  # raised once, as one change
        assert task.sla_version == task.version  # the raise keeps the same policy: current
        sla = TaskSla.objects.get(task=task)
        assert sla.at_risk and sla.next_step_at is None and sla.pending_step_ids == []
        events = list(task.events.filter(kind=TaskEvent.Kind.ESCALATED).order_by("id"))
        assert [e.actor_label for e in events] == [SWEEP] * 4
        assert [e.explanation["outcome"] for e in events] == [
            "marked at risk",
            "notification queued",
            "priority raised one level",
            "notification queued",
        ]
        assert events[0].reason == (
            f"SLA policy “Prior auth”, level 1: first claim due "
            f"{task.claim_due_at:%Y-%m-%d %H:%M} UTC."
        )
        assert events[0].explanation["due_at"] == task.claim_due_at.isoformat()
        assert (
            events[0].explanation["fire_at"]
            == (task.received_at + timedelta(minutes=30)).isoformat()
        )
        assert events[0].explanation["when"] == "50% of target"
        # The notification of level 2 went out before the raise, level 4 after it.
        sent = {
            n.escalation.level: n
            for n in Notification.objects.filter(escalation__task=task).select_related("escalation")
        }
        assert sorted(sent) == [2, 4]
        assert (sent[2].target, sent[4].target) == ("sam@clinic.example", "ops@x.example")
        assert sent[4].body == notifications.body_for(task, now=now)
        task.priority = 3
        assert sent[2].body == notifications.body_for(task, now=now)
    assert set(sent[2].body) == set(notifications.BODY_KEYS)

    assert services.sweep(now=now) == 0
    assert Escalation.objects.count() == 4 * len(tasks)
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED).count() == 4 * len(tasks)
    assert Notification.objects.count() == 2 * len(tasks)


@pytest.mark.django_db
def test_firing_takes_the_same_queries_for_3_due_tasks_as_for_30(clinic):
    def due_tasks(count):
        tasks = [TaskFactory(task_type=clinic, received_at=timezone.now()) for _ in range(count)]
        services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks])
        return tasks

    counts = []
    for count in (3, 30):
        due_tasks(count)
        with CaptureQueriesContext(connection) as queries:
            assert services.sweep(now=timezone.now() + timedelta(minutes=61)) == 4 * count
        counts.append(len(queries))

    assert counts[0] == counts[1]


@pytest.mark.django_db
def test_two_raises_due_at_once_stop_at_p1():
    policy = SlaPolicyFactory(first_claim_minutes=60)
    EscalationStepFactory(policy=policy, level=1, action="raise_priority")
    EscalationStepFactory(policy=policy, level=2, action="raise_priority")
    task = aged(70, priority=2)

    assert services.sweep() == 2

    task.refresh_from_db()
    assert (task.priority, task.version) == (1, 2)
    outcomes = [
        e.explanation["outcome"]
        for e in task.events.filter(kind=TaskEvent.Kind.ESCALATED).order_by("id")
    ]
    assert outcomes == ["priority raised one level", "already P1"]


@pytest.mark.django_db
def test_a_raise_that_changes_the_policy_leaves_the_task_to_be_recomputed():
    urgent = SlaPolicyFactory(name="Urgent", order=1, priorities=[1], first_claim_minutes=15)
    EscalationStepFactory(policy=urgent, level=1, action="mark_at_risk")
    normal = SlaPolicyFactory(name="Normal", order=2, first_claim_minutes=60)
    EscalationStepFactory(policy=normal, level=1, action="raise_priority")
    task = aged(70, priority=2)

    assert services.sweep() == 1
    assert stale_ids() == [task.pk]  # P1 now: the urgent policy applies

    assert services.sweep() == 1  # its own step, long due
    assert TaskSla.objects.get(task=task).policy == urgent
    assert TaskSla.objects.get(task=task).at_risk
    assert Task.objects.get(pk=task.pk).claim_due_at == task.received_at + timedelta(minutes=15)


@pytest.mark.django_db
def test_a_repeated_firing_of_the_same_due_steps_does_nothing_twice(clinic):
    tasks = [TaskFactory(task_type=clinic, received_at=timezone.now()) for _ in range(5)]
    services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks])
    later = timezone.now() + timedelta(minutes=61)
    before = {
        sla.task_id: (sla.next_step_at, sla.pending_step_ids, sla.pending_fire_at)
        for sla in TaskSla.objects.all()
    }
    assert services.sweep(now=later) == 20

    # As if the work were handed out again (a retried job that never saw the first commit):
    # the same due steps, the same tasks, current again.
    for task_id, (next_at, steps, fire_at) in before.items():
        TaskSla.objects.filter(task_id=task_id).update(
            next_step_at=next_at, pending_step_ids=steps, pending_fire_at=fire_at
        )

    assert services.sweep(now=later) == 0
    assert set(Task.objects.values_list("priority", flat=True)) == {2}
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED).count() == 20
    assert Notification.objects.count() == 10
    assert TaskSla.objects.filter(next_step_at__isnull=False).count() == 0


def _in_two_threads(run) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def target():
        try:
            barrier.wait()
            run()
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=target) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_on_the_same_due_set_fire_each_step_once(clinic):
    tasks = [TaskFactory(task_type=clinic, received_at=timezone.now()) for _ in range(40)]
    services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks])
    later = timezone.now() + timedelta(minutes=61)
    fired: list[int] = []

    def run():
        while True:
            result = services.sweep_batch(now=later)
            fired.append(result.fired)
            if not result.worked:
                break

    _in_two_threads(run)

    assert sum(fired) == 4 * len(tasks)
    assert Escalation.objects.count() == 4 * len(tasks)
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED).count() == 4 * len(tasks)
    assert Notification.objects.count() == 2 * len(tasks)
    assert set(Task.objects.values_list("priority", "version")) == {(2, 2)}


@pytest.mark.django_db(transaction=True)
def test_exactly_once_holds_even_without_the_row_locks(clinic):
    """Two firings of the same tasks at the same moment, past the locking query: the unique
    (task, step) alone keeps every action to one."""
    tasks = [TaskFactory(task_type=clinic, received_at=timezone.now()) for _ in range(40)]
    ids = [t.pk for t in tasks]
    services.recompute_due_for_tasks(task_ids=ids)
    later = timezone.now() + timedelta(minutes=61)
    fired: list[int] = []

    def run():
        with transaction.atomic():
            policies = selectors.active_policies()
            fired.append(services._fire_set_based(task_ids=ids, policies=policies, now=later))

    _in_two_threads(run)

    assert sorted(fired) == [0, 4 * len(tasks)]
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED).count() == 4 * len(tasks)
    assert Notification.objects.count() == 2 * len(tasks)
    assert set(Task.objects.values_list("priority", "version")) == {(2, 2)}
