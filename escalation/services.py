"""SLA due times and the escalation sweep.

Due times are computed from the task's receipt on the clock of the first matching policy
(business hours of its calendar, or around the clock), with the clock standing still while
the task is on hold. They are stored on the task (`claim_due_at`, `resolve_due_at`) and, per
task, the time of its earliest pending step in `TaskSla.next_step_at`.

The sweep needs no hook in the other apps: every change of a task raises `Task.version`, and
`TaskSla.task_version` remembers the version it was computed from, so one query finds the tasks
that are new or changed and the sweep recomputes them first. Then one query over the partial
index on `next_step_at` locks a batch of due rows (SKIP LOCKED), each due step is claimed by an
INSERT … ON CONFLICT DO NOTHING on the unique (task, step), and only the rows actually inserted
act. A re-run, a crash mid-sweep or two clusters at once fire each step once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from escalation import business_time, selectors
from escalation.models import Escalation, EscalationStep, Notification, SlaPolicy, TaskSla
from escalation.notifications import notifications_for
from queues import services as queues_services
from queues.models import Task, TaskEvent
from routing import services as routing_services

logger = logging.getLogger(__name__)

SWEEP_ACTOR = "system:escalation_sweep"
Action = EscalationStep.Action


@dataclass(frozen=True)
class StepPlan:
    step: EscalationStep
    due_at: datetime  # the target the step watches
    fire_at: datetime


@dataclass(frozen=True)
class Plan:
    policy: SlaPolicy | None
    claim_due_at: datetime | None
    resolve_due_at: datetime | None
    pending: tuple[StepPlan, ...]  # steps not fired yet whose target still applies

    @property
    def next_step_at(self) -> datetime | None:
        return min((p.fire_at for p in self.pending), default=None)


# --- matching and planning -------------------------------------------------------------------


def policy_for(task: Task, policies: list[SlaPolicy]) -> SlaPolicy | None:
    """The first policy, by order, whose conditions the task meets (empty = any)."""
    for policy in policies:
        types = {t.pk for t in policy.task_types.all()}
        queues = {q.pk for q in policy.queues.all()}
        if types and task.task_type_id not in types:
            continue
        if policy.priorities and task.priority not in policy.priorities:
            continue
        if queues and task.queue_id not in queues:
            continue
        return policy
    return None


class _Calendars:
    """The pure calendar of each policy, built once per call with the holidays of the years
    the tasks at hand can reach."""

    def __init__(self, years: tuple[int, ...]):
        self.years = years
        self.built: dict[int, business_time.Calendar] = {}

    def of(self, policy: SlaPolicy) -> business_time.Calendar:
        if policy.calendar is None:
            return business_time.ALWAYS
        if policy.calendar_id not in self.built:
            self.built[policy.calendar_id] = policy.calendar.as_calendar(self.years)
        return self.built[policy.calendar_id]


def plan_task(
    *,
    task: Task,
    policy: SlaPolicy | None,
    calendar: business_time.Calendar,
    paused: tuple[tuple[datetime, datetime], ...],
    fired: set[int],
) -> Plan:
    if policy is None:
        return Plan(policy=None, claim_due_at=None, resolve_due_at=None, pending=())
    start = task.received_at or task.created_at

    def at(minutes: float) -> datetime:
        return business_time.deadline(calendar, start, minutes, paused=paused)

    targets = {
        EscalationStep.Target.FIRST_CLAIM: policy.first_claim_minutes,
        EscalationStep.Target.RESOLUTION: policy.resolution_minutes,
    }
    due = {target: at(minutes) if minutes else None for target, minutes in targets.items()}
    pending: list[StepPlan] = []
    # While a task is on hold its clock stands still: nothing can come due.
    if task.is_open and task.status != Task.Status.ON_HOLD:
        for step in policy.steps.all():
            minutes = targets[step.target]
            if not minutes or step.pk in fired:
                continue
            if step.target == EscalationStep.Target.FIRST_CLAIM and task.first_claimed_at:
                continue
            fire_at = at(step.offset_minutes(minutes))
            pending.append(StepPlan(step=step, due_at=due[step.target], fire_at=fire_at))
    return Plan(
        policy=policy,
        claim_due_at=due[EscalationStep.Target.FIRST_CLAIM],
        resolve_due_at=due[EscalationStep.Target.RESOLUTION],
        pending=tuple(pending),
    )


def _plans(task_ids: list[int], now: datetime) -> dict[int, tuple[Task, Plan]]:
    tasks = selectors.tasks_for_planning(task_ids=task_ids)
    if not tasks:
        return {}
    policies = selectors.active_policies()
    paused = selectors.held_intervals(task_ids=task_ids, now=now)
    fired = selectors.fired_step_ids(task_ids=task_ids)
    first_year = min((t.received_at or t.created_at).year for t in tasks)
    calendars = _Calendars(tuple(range(first_year, max(first_year, now.year) + 2)))
    plans = {}
    for task in tasks:
        policy = policy_for(task, policies)
        try:
            plan = plan_task(
                task=task,
                policy=policy,
                calendar=calendars.of(policy) if policy else business_time.ALWAYS,
                paused=paused.get(task.pk, ()),
                fired=fired.get(task.pk, set()),
            )
        except ValueError:
            # A calendar that can never open (edited outside the admin's validation) must
            # not stop the sweep for every other task: this one gets no due times.
            logger.exception("SLA policy %s cannot plan task %s", policy.pk, task.pk)
            plan = Plan(policy=policy, claim_due_at=None, resolve_due_at=None, pending=())
        plans[task.pk] = (task, plan)
    return plans


def _store(plans: dict[int, tuple[Task, Plan]], now: datetime) -> None:
    """Write the plans: TaskSla rows first, then the tasks' due times, both in id order, so
    that concurrent sweeps take row locks in one order."""
    ordered = [plans[task_id] for task_id in sorted(plans)]
    TaskSla.objects.bulk_create(
        [
            TaskSla(
                task_id=task.pk,
                policy=plan.policy,
                task_version=task.version,
                next_step_at=plan.next_step_at,
                computed_at=now,
            )
            for task, plan in ordered
        ],
        update_conflicts=True,
        unique_fields=["task"],
        update_fields=["policy", "task_version", "next_step_at", "computed_at"],
    )
    changed = [
        task
        for task, plan in ordered
        if (task.claim_due_at, task.resolve_due_at) != (plan.claim_due_at, plan.resolve_due_at)
    ]
    for task in changed:
        plan = plans[task.pk][1]
        task.claim_due_at, task.resolve_due_at = plan.claim_due_at, plan.resolve_due_at
    if changed:
        # Due times are derived values, not an edit: the version (and the audit log) stay.
        Task.objects.bulk_update(changed, ["claim_due_at", "resolve_due_at"])


@transaction.atomic
def recompute_due_for_tasks(*, task_ids: list[int], now: datetime | None = None) -> int:
    """Recompute and store the due times and next step time of these tasks. Returns how many."""
    now = now or timezone.now()
    plans = _plans(sorted(set(task_ids)), now)
    _store(plans, now)
    return len(plans)


@transaction.atomic
def task_compute_due(*, task_id: int, now: datetime | None = None) -> Task:
    recompute_due_for_tasks(task_ids=[task_id], now=now)
    return Task.objects.get(pk=task_id)


# --- the sweep -------------------------------------------------------------------------------

CLAIM_STEPS_SQL = """
INSERT INTO escalation_escalation (task_id, step_id, level, due_at, fired_at)
SELECT * FROM unnest(%(task_ids)s::bigint[], %(step_ids)s::bigint[], %(levels)s::smallint[],
                     %(due)s::timestamptz[], %(fired)s::timestamptz[])
ON CONFLICT (task_id, step_id) DO NOTHING
RETURNING id, task_id, step_id
"""


def _claim_steps(due: list[tuple[Task, StepPlan]], now: datetime) -> dict[tuple[int, int], int]:
    """Insert one Escalation per due step; the rows that already existed are skipped. Returns
    {(task id, step id): escalation id} for the rows this call inserted."""
    if not due:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_STEPS_SQL,
            {
                "task_ids": [task.pk for task, _ in due],
                "step_ids": [p.step.pk for _, p in due],
                "levels": [p.step.level for _, p in due],
                "due": [p.due_at for _, p in due],
                "fired": [now] * len(due),
            },
        )
        return {(task_id, step_id): pk for pk, task_id, step_id in cursor.fetchall()}


def _act(*, task_id: int, step: EscalationStep, reason: str, explanation: dict) -> str:
    """Do what the step says; returns what happened, for the timeline."""
    if step.action == Action.MARK_AT_RISK:
        TaskSla.objects.filter(task_id=task_id).update(at_risk=True)
        return "marked at risk"
    if step.action == Action.RAISE_PRIORITY:
        changed = Task.objects.filter(pk=task_id, priority__gt=1).update(
            priority=F("priority") - 1, version=F("version") + 1, updated_at=timezone.now()
        )
        return "priority raised one level" if changed else "already P1"
    if step.action == Action.MOVE_TO_ESCALATION_QUEUE:
        _, freed = queues_services.task_move(
            task_id=task_id,
            actor=SWEEP_ACTOR,
            to_queue_id=step.escalation_queue_id,
            reason=reason,
            count_as_reroute=False,
            explanation=explanation,
        )
        routing_services.task_offer(task_id=task_id)
        if freed.user_id is not None:
            routing_services.offer_queued_work(user_id=freed.user_id)
        return f"moved to queue {step.escalation_queue_id}"
    if step.action == Action.REASSIGN:
        task = Task.objects.get(pk=task_id)
        if task.status in Task.LOADED_STATUSES:
            # Released to the queue and offered to someone else, never the same person.
            routing_services.task_release(task_id=task_id, actor=SWEEP_ACTOR, reason=reason)
            return "released and offered to someone else"
        assignee = routing_services.task_offer(task_id=task_id)
        return "offered again" if assignee else "offered again; nobody has room"
    return "notification queued"


def _fire(
    *, task: Task, plan: Plan, step_plan: StepPlan, escalation_id: int, now: datetime
) -> None:
    step = step_plan.step
    explanation = {
        "policy": {"id": plan.policy.pk, "name": plan.policy.name},
        "step": {"id": step.pk, "level": step.level, "action": step.action},
        "target": step.target,
        "due_at": step_plan.due_at.isoformat(),
        "fire_at": step_plan.fire_at.isoformat(),
        "when": f"{step.percent}% of target"
        if step.when == EscalationStep.When.PERCENT
        else f"{step.minutes_after} min after breach",
    }
    reason = (
        f"SLA policy “{plan.policy.name}”, level {step.level}: "
        f"{step.get_target_display().lower()} due {step_plan.due_at:%Y-%m-%d %H:%M} UTC."
    )
    try:
        # A step whose action no longer fits the task (a race with a person) is still
        # recorded as fired, with what went wrong, and is not tried again.
        with transaction.atomic():
            outcome = _act(task_id=task.pk, step=step, reason=reason, explanation=explanation)
    except ValidationError as error:
        outcome = "not done: " + "; ".join(error.messages)
    current = Task.objects.select_related("task_type", "queue__department").get(pk=task.pk)
    queues_services.task_event_record(
        task=current,
        kind=TaskEvent.Kind.ESCALATED,
        actor=SWEEP_ACTOR,
        reason=reason,
        explanation={**explanation, "outcome": outcome},
    )
    escalation = Escalation(pk=escalation_id, task_id=task.pk, step=step)
    Notification.objects.bulk_create(
        notifications_for(escalation=escalation, step=step, task=current, now=now),
        ignore_conflicts=True,
    )


@transaction.atomic
def sweep(*, now: datetime | None = None, batch: int = 500) -> int:
    """Fire the escalation steps that are due; returns how many fired."""
    now = now or timezone.now()
    stale = selectors.stale_task_ids(limit=batch)
    if stale:
        recompute_due_for_tasks(task_ids=stale, now=now)
    task_ids = selectors.lock_due_task_ids(now=now, limit=batch)
    if not task_ids:
        return 0
    # The tasks that will change are locked in id order before anything else is touched.
    list(Task.objects.filter(pk__in=task_ids).order_by("id").select_for_update().values("id"))
    plans = _plans(task_ids, now)
    due = [
        (task, step_plan)
        for task_id in sorted(plans)
        for task, plan in [plans[task_id]]
        for step_plan in sorted(plan.pending, key=lambda p: p.step.level)
        if step_plan.fire_at <= now
    ]
    claimed = _claim_steps(due, now)
    for task, step_plan in due:
        escalation_id = claimed.get((task.pk, step_plan.step.pk))
        if escalation_id is not None:
            _fire(
                task=task,
                plan=plans[task.pk][1],
                step_plan=step_plan,
                escalation_id=escalation_id,
                now=now,
            )
    recompute_due_for_tasks(task_ids=task_ids, now=now)
    return len(claimed)


@transaction.atomic
def escalation_acknowledge(*, escalation_id: int, user) -> bool:
    """Someone has seen the escalation; returns False when it was acknowledged already."""
    return bool(
        Escalation.objects.filter(pk=escalation_id, acknowledged_at__isnull=True).update(
            acknowledged_by=user, acknowledged_at=timezone.now()
        )
    )
