"""SLA due times and the escalation sweep.

Due times are computed from the task's receipt on the clock of the first matching policy
(business hours of its calendar, or around the clock), with the clock standing still while
the task is on hold. They are computed when a task is new or has changed, never at sweep time,
and stored: on the task (`claim_due_at`, `resolve_due_at`), and per task in `TaskSla` the
pending steps with the time each fires, the earliest of them in `next_step_at`, indexed.

The sweep needs no hook in the other apps: every change of a task raises `Task.version`, and
storing the SLA copies it into `Task.sla_version`, so the partial index `task_sla_stale` holds
exactly the open tasks to recompute (none when nothing changed). Then one query over the
partial index on `next_step_at` locks a batch of due rows and their tasks (SKIP LOCKED), and
one statement fires the due steps of the whole batch: each step is claimed by an INSERT … ON
CONFLICT DO NOTHING on the unique (task, step), and only the rows actually inserted act (mark
at risk, raise the priority, queue the notifications, write the timeline), set-based. Steps
that move or reassign a task go through the state machine, one task at a time. A re-run, a
crash mid-sweep or two clusters at once fire each step once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from escalation import business_time, selectors
from escalation.models import Escalation, EscalationStep, Notification, SlaPolicy, TaskSla
from escalation.notifications import notifications_for, supervisor_addresses_by_queue
from queues import services as queues_services
from queues.models import Task, TaskEvent
from routing import services as routing_services

logger = logging.getLogger(__name__)

SWEEP_ACTOR = "system:escalation_sweep"
# Due tasks (and changed tasks) taken per transaction: a batch of set-based firing costs tens
# of milliseconds per thousand tasks, so the locks stay short.
SWEEP_BATCH = 5_000
Action = EscalationStep.Action
# Actions that change the task through the state machine and routing: fired one task at a time.
ROW_BY_ROW_ACTIONS = (Action.MOVE_TO_ESCALATION_QUEUE, Action.REASSIGN)


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

    @property
    def firing_order(self) -> tuple[StepPlan, ...]:
        return tuple(sorted(self.pending, key=lambda p: (p.fire_at, p.step.level)))


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


def _plans(
    task_ids: list[int], now: datetime, *, policies: list[SlaPolicy] | None = None
) -> dict[int, tuple[Task, Plan]]:
    tasks = selectors.tasks_for_planning(task_ids=task_ids)
    if not tasks:
        return {}
    if policies is None:
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


def _array_literal(values) -> str:
    """A PostgreSQL array literal, so that one text column of an `unnest` carries a whole
    array per row (`unnest` of a two-dimensional array would flatten it)."""
    items = (f'"{v.isoformat()}"' if isinstance(v, datetime) else str(v) for v in values)
    return "{" + ",".join(items) + "}"


STORE_SLA_SQL = """
INSERT INTO escalation_tasksla (task_id, policy_id, task_version, next_step_at,
                                pending_step_ids, pending_fire_at, at_risk, computed_at)
SELECT v.task_id, v.policy_id, v.version, v.next_step_at, v.step_ids::bigint[],
       v.fire_at::timestamptz[], false, %(computed_at)s
  FROM unnest(%(task_ids)s::bigint[], %(policy_ids)s::bigint[], %(versions)s::int[],
              %(next_step_at)s::timestamptz[], %(step_ids)s::text[], %(fire_at)s::text[])
       AS v(task_id, policy_id, version, next_step_at, step_ids, fire_at)
 ORDER BY v.task_id
    ON CONFLICT (task_id) DO UPDATE
   SET policy_id = EXCLUDED.policy_id, task_version = EXCLUDED.task_version,
       next_step_at = EXCLUDED.next_step_at, pending_step_ids = EXCLUDED.pending_step_ids,
       pending_fire_at = EXCLUDED.pending_fire_at, computed_at = EXCLUDED.computed_at
"""

# Due times are derived values, not an edit: `version` (and the audit log) stay; `sla_version`
# records what was computed, only if the task is still at the version planned from.
STORE_TASKS_SQL = """
UPDATE queues_task t
   SET claim_due_at = v.claim_due_at, resolve_due_at = v.resolve_due_at, sla_version = v.version
  FROM unnest(%(task_ids)s::bigint[], %(versions)s::int[], %(claim_due_at)s::timestamptz[],
              %(resolve_due_at)s::timestamptz[])
       AS v(task_id, version, claim_due_at, resolve_due_at)
 WHERE t.id = v.task_id AND t.version = v.version
   AND (NOT (t.sla_version = v.version)
        OR t.claim_due_at IS DISTINCT FROM v.claim_due_at
        OR t.resolve_due_at IS DISTINCT FROM v.resolve_due_at)
"""


def _store(plans: dict[int, tuple[Task, Plan]], now: datetime) -> None:
    """Write the plans, every task's included (one that no policy matches gets an empty
    row, so that it is not stale any more): TaskSla rows first, then the tasks, each in one
    statement. The tasks are locked already (`selectors.tasks_for_planning`)."""
    if not plans:
        return
    ordered = [plans[task_id] for task_id in sorted(plans)]
    with connection.cursor() as cursor:
        cursor.execute(
            STORE_SLA_SQL,
            {
                "task_ids": [task.pk for task, _ in ordered],
                "policy_ids": [plan.policy.pk if plan.policy else None for _, plan in ordered],
                "versions": [task.version for task, _ in ordered],
                "next_step_at": [plan.next_step_at for _, plan in ordered],
                "step_ids": [
                    _array_literal(p.step.pk for p in plan.firing_order) for _, plan in ordered
                ],
                "fire_at": [
                    _array_literal(p.fire_at for p in plan.firing_order) for _, plan in ordered
                ],
                # The clock, not the sweep's `now`: compared with when the configuration
                # was last edited (selectors.DUE_SQL).
                "computed_at": timezone.now(),
            },
        )
        cursor.execute(
            STORE_TASKS_SQL,
            {
                "task_ids": [task.pk for task, _ in ordered],
                "versions": [task.version for task, _ in ordered],
                "claim_due_at": [plan.claim_due_at for _, plan in ordered],
                "resolve_due_at": [plan.resolve_due_at for _, plan in ordered],
            },
        )


# After the SLA configuration changes, every open task whose clock is current falls behind
# (`sla_version` one short of `version`), so that the sweep plans it again under the new rules.
REPLAN_OPEN_TASKS_SQL = """
UPDATE queues_task SET sla_version = version - 1
 WHERE status IN ('new', 'queued', 'assigned', 'in_progress', 'on_hold')
   AND sla_version = version
"""


def sla_configuration_changed() -> int:
    """An SLA policy, one of its steps, a calendar or a closure was added, changed or removed:
    the open tasks are planned again by the next sweeps (in batches, through the same
    `task_sla_stale` index as any changed task), so a new or edited policy applies to the work
    already waiting, not only to what arrives next. Returns how many tasks will be replanned.

    Due rows alone would not do: a task that no policy matched has none, and a task whose
    steps lie days ahead would keep the old due times on its badge until then."""
    with connection.cursor() as cursor:
        cursor.execute(REPLAN_OPEN_TASKS_SQL)
        count = cursor.rowcount
    logger.info("SLA configuration changed: %s open tasks to plan again", count)
    return count


@transaction.atomic
def recompute_due_for_tasks(*, task_ids: list[int], now: datetime | None = None) -> int:
    """Recompute and store the due times and pending steps of these tasks. Returns how many."""
    now = now or timezone.now()
    plans = _plans(sorted(set(task_ids)), now)
    _store(plans, now)
    return len(plans)


@transaction.atomic
def task_compute_due(*, task_id: int, now: datetime | None = None) -> Task:
    recompute_due_for_tasks(task_ids=[task_id], now=now)
    return Task.objects.get(pk=task_id)


# --- the sweep -------------------------------------------------------------------------------


def _explanation(policy: SlaPolicy, step: EscalationStep) -> dict:
    """What every timeline event of this step says, before its times and outcome."""
    return {
        "policy": {"id": policy.pk, "name": policy.name},
        "step": {"id": step.pk, "level": step.level, "action": step.action},
        "target": step.target,
        "when": f"{step.percent}% of target"
        if step.when == EscalationStep.When.PERCENT
        else f"{step.minutes_after} min after breach",
    }


def _reason_prefix(policy: SlaPolicy, step: EscalationStep) -> str:
    """The timeline reason up to the due time, which each task adds (`… due 2026-03-02 15:00
    UTC.`)."""
    target = step.get_target_display().lower()
    return f"SLA policy “{policy.name}”, level {step.level}: {target} due "


# An instant as Python's `datetime.isoformat()` writes a UTC time, for the explanation JSON.
_ISO = (
    "to_char({x} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN mod(extract(microseconds FROM {x})::bigint, 1000000) = 0 THEN ''"
    " ELSE to_char({x} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)

# One statement fires the due steps of a batch of locked tasks. `prefix` is each task's due
# prefix of its pending steps and `due` the steps of it that can fire. `claimed` inserts one
# Escalation per step, and ON CONFLICT skips the steps that fired before (a re-run, another
# sweep), so everything after acts on `fired` only: priorities raised (counting the raises of
# lower levels fired at the same time, as the steps act in level order), the at-risk mark, the
# timeline events, the notification outbox rows with the minimum necessary in the body
# (`escalation.notifications.body_for` says the same in Python); and the whole due prefix is
# cut off the pending steps, so that the next step's time is the task's `next_step_at`.
FIRE_SQL = f"""
WITH catalog AS (
  SELECT * FROM unnest(%(c_step)s::bigint[], %(c_level)s::int[], %(c_action)s::text[],
                       %(c_target)s::text[], %(c_reason)s::text[], %(c_explanation)s::jsonb[],
                       %(c_channel)s::text[], %(c_address)s::text[])
      AS c(step_id, level, action, target, reason, explanation, channel, address)
),
prefix AS (
  SELECT s.task_id, p.step_id, p.fire_at
    FROM escalation_tasksla s
   CROSS JOIN LATERAL unnest(s.pending_step_ids, s.pending_fire_at) AS p(step_id, fire_at)
   WHERE s.task_id = ANY(%(task_ids)s::bigint[]) AND p.fire_at <= %(now)s::timestamptz
),
done AS (
  SELECT task_id, count(*) AS steps FROM prefix GROUP BY task_id
),
due AS (
  SELECT p.task_id, c.step_id, c.level, c.action, c.reason, c.explanation, c.channel,
         c.address, p.fire_at,
         CASE c.target WHEN 'first_claim' THEN t.claim_due_at ELSE t.resolve_due_at END
           AS due_at,
         t.priority, t.queue_id, t.task_type_id, coalesce(t.received_at, t.created_at) AS started
    FROM prefix p
    JOIN catalog c ON c.step_id = p.step_id
    JOIN queues_task t ON t.id = p.task_id
   WHERE t.status IN ('new', 'queued', 'assigned', 'in_progress')
     AND CASE c.target WHEN 'first_claim' THEN t.claim_due_at ELSE t.resolve_due_at END
         IS NOT NULL
),
claimed AS (
  INSERT INTO escalation_escalation (task_id, step_id, level, due_at, fired_at)
  SELECT task_id, step_id, level, due_at, %(now)s::timestamptz FROM due
   ORDER BY task_id, level
      ON CONFLICT (task_id, step_id) DO NOTHING
  RETURNING id, task_id, step_id
),
fired AS (
  SELECT cl.id AS escalation_id, d.*,
         count(*) FILTER (WHERE d.action = 'raise_priority')
           OVER (PARTITION BY d.task_id ORDER BY d.level) AS raises
    FROM claimed cl JOIN due d ON d.task_id = cl.task_id AND d.step_id = cl.step_id
),
per_task AS (
  SELECT task_id, max(raises) AS raises, bool_or(action = 'mark_at_risk') AS at_risk
    FROM fired GROUP BY task_id
),
raised AS (
  UPDATE queues_task t
     SET priority = greatest(1, t.priority - r.raises),
         version = t.version + least(r.raises, t.priority - 1),
         sla_version = CASE WHEN t.sla_version = t.version
                                 AND NOT t.id = ANY(%(replan_after_raise)s::bigint[])
                            THEN t.version + least(r.raises, t.priority - 1)
                            ELSE t.sla_version END,
         updated_at = %(at)s::timestamptz
    FROM per_task r
   WHERE t.id = r.task_id AND r.raises > 0 AND t.priority > 1
  RETURNING t.id, t.sla_version
),
trimmed AS (
  UPDATE escalation_tasksla s
     SET pending_step_ids = s.pending_step_ids[coalesce(k.steps, 0) + 1:],
         pending_fire_at = s.pending_fire_at[coalesce(k.steps, 0) + 1:],
         next_step_at = s.pending_fire_at[coalesce(k.steps, 0) + 1],
         at_risk = s.at_risk OR coalesce(pt.at_risk, false),
         task_version = coalesce(rz.sla_version, s.task_version)
    FROM unnest(%(task_ids)s::bigint[]) AS v(task_id)
    LEFT JOIN done k ON k.task_id = v.task_id
    LEFT JOIN per_task pt ON pt.task_id = v.task_id
    LEFT JOIN raised rz ON rz.id = v.task_id
   WHERE s.task_id = v.task_id
),
events AS (
  INSERT INTO queues_taskevent (task_id, created_at, kind, actor_label, reason, explanation)
  SELECT task_id, %(at)s::timestamptz, %(kind)s, %(actor)s,
         reason || to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC.',
         explanation || jsonb_build_object(
           'due_at', {_ISO.format(x="due_at")},
           'fire_at', {_ISO.format(x="fire_at")},
           'outcome', CASE action
             WHEN 'mark_at_risk' THEN 'marked at risk'
             WHEN 'raise_priority' THEN
               CASE WHEN priority > raises THEN 'priority raised one level' ELSE 'already P1' END
             ELSE 'notification queued' END)
    FROM fired
   ORDER BY task_id, level
),
notified AS (
  INSERT INTO escalation_notification (escalation_id, channel, target, body, status, attempts,
                                       next_attempt_at, last_error, created_at)
  SELECT f.escalation_id, coalesce(f.channel, 'email'), coalesce(f.address, sup.email),
         jsonb_build_object(
           'task', f.task_id,
           'type', coalesce(tt.name, ''),
           'priority', 'P' || greatest(1, f.priority - f.raises),
           'queue', coalesce(q.name, ''),
           'age_minutes',
             greatest(0, floor(extract(epoch FROM %(now)s::timestamptz - f.started) / 60))::int,
           'link', %(link_prefix)s || f.task_id || %(link_suffix)s),
         'pending', 0, %(now)s::timestamptz, '', %(at)s::timestamptz
    FROM fired f
    LEFT JOIN queues_tasktype tt ON tt.id = f.task_type_id
    LEFT JOIN queues_queue q ON q.id = f.queue_id
    LEFT JOIN unnest(%(sup_queue)s::bigint[], %(sup_email)s::text[]) AS sup(queue_id, email)
      ON f.action = 'notify_supervisor' AND sup.queue_id = f.queue_id
   WHERE f.action IN ('notify_supervisor', 'notify_address', 'notify_webhook')
     AND coalesce(f.address, sup.email) IS NOT NULL
   ORDER BY f.escalation_id, 3
      ON CONFLICT (escalation_id, channel, target) DO NOTHING
)
SELECT count(*) FROM claimed
"""


def _task_link_parts() -> tuple[str, str]:
    """The task page's absolute URL split around the task number, for SQL to join."""
    marker = "918273645"
    prefix, suffix = (settings.SITE_URL + reverse("queues:task", args=[marker])).split(marker)
    return prefix, suffix


def _raise_may_change_policy(task_ids: list[int], policies: list[SlaPolicy]) -> list[int]:
    """Tasks whose policy could differ at a higher priority: after a raise their SLA is
    recomputed (left stale) instead of kept. None unless some policy matches on priority."""
    if not any(policy.priorities for policy in policies):
        return []
    matched: dict[tuple, SlaPolicy | None] = {}

    def match(type_id, queue_id, priority):
        key = (type_id, queue_id, priority)
        if key not in matched:
            probe = Task(task_type_id=type_id, queue_id=queue_id, priority=priority)
            matched[key] = policy_for(probe, policies)
        return matched[key]

    rows = Task.objects.filter(pk__in=task_ids, priority__gt=1).values_list(
        "id", "task_type_id", "queue_id", "priority"
    )
    return [
        task_id
        for task_id, type_id, queue_id, priority in rows
        if any(
            match(type_id, queue_id, p) != match(type_id, queue_id, priority)
            for p in range(1, priority)
        )
    ]


def _fire_set_based(*, task_ids: list[int], policies: list[SlaPolicy], now: datetime) -> int:
    # Every step of an active policy; a due step not among them (its policy switched off
    # since) is cut off the pending list without firing.
    steps = [(policy, step) for policy in policies for step in policy.steps.all()]
    channel = {
        Action.NOTIFY_ADDRESS: Notification.Channel.EMAIL,
        Action.NOTIFY_WEBHOOK: Notification.Channel.WEBHOOK,
    }
    address = {Action.NOTIFY_ADDRESS: "address", Action.NOTIFY_WEBHOOK: "webhook_url"}
    supervisors: list[tuple[int, str]] = []
    if any(step.action == Action.NOTIFY_SUPERVISOR for _, step in steps):
        supervisors = [
            (queue_id, email)
            for queue_id, emails in supervisor_addresses_by_queue().items()
            for email in emails
        ]
    link_prefix, link_suffix = _task_link_parts()
    with connection.cursor() as cursor:
        cursor.execute(
            FIRE_SQL,
            {
                "c_step": [step.pk for _, step in steps],
                "c_level": [step.level for _, step in steps],
                "c_action": [step.action for _, step in steps],
                "c_target": [step.target for _, step in steps],
                "c_reason": [_reason_prefix(policy, step) for policy, step in steps],
                "c_explanation": [json.dumps(_explanation(policy, step)) for policy, step in steps],
                "c_channel": [channel.get(step.action) for _, step in steps],
                "c_address": [
                    getattr(step, address[step.action]) if step.action in address else None
                    for _, step in steps
                ],
                "sup_queue": [queue_id for queue_id, _ in supervisors],
                "sup_email": [email for _, email in supervisors],
                "task_ids": task_ids,
                "replan_after_raise": _raise_may_change_policy(task_ids, policies),
                "now": now,
                "at": timezone.now(),
                "kind": TaskEvent.Kind.ESCALATED,
                "actor": SWEEP_ACTOR,
                "link_prefix": link_prefix,
                "link_suffix": link_suffix,
            },
        )
        return cursor.fetchone()[0]


# --- the steps that go through the state machine, one task at a time ---------------------

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
        **_explanation(plan.policy, step),
        "due_at": step_plan.due_at.isoformat(),
        "fire_at": step_plan.fire_at.isoformat(),
    }
    reason = f"{_reason_prefix(plan.policy, step)}{step_plan.due_at:%Y-%m-%d %H:%M} UTC."
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


def _fire_row_by_row(*, task_ids: list[int], now: datetime) -> int:
    """Tasks with a due step that moves or reassigns them: every due step of each such task
    acts in level order, through the state machine, each task planned afresh."""
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


@dataclass(frozen=True)
class SweepResult:
    fired: int = 0  # escalation steps fired
    recomputed: int = 0  # tasks whose SLA was computed again
    due: int = 0  # due tasks taken (fired, or found with nothing left to fire)

    @property
    def worked(self) -> bool:
        return bool(self.fired or self.recomputed or self.due)


@transaction.atomic
def sweep_batch(*, now: datetime | None = None, batch: int = SWEEP_BATCH) -> SweepResult:
    """One transaction: recompute up to `batch` changed tasks, then fire the due steps of up
    to `batch` due tasks."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        # Asynchronous commit: a crash of the database server may lose the last batches
        # committed (never half of one), and the next sweep fires them again; nothing leaves
        # the clinic before it is durable, because the sender's claim of an outbox row
        # commits synchronously after this commit and so flushes it first. JIT compiling
        # would cost more than the batch's statements take.
        cursor.execute(
            "SELECT set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true)"
        )
    stale = selectors.stale_task_ids(limit=batch, lock=True)
    if stale:
        _store(_plans(stale, now), now)
    task_ids, replan = selectors.lock_due_tasks(now=now, limit=batch)
    if not task_ids:
        return SweepResult(recomputed=len(stale))
    policies = selectors.active_policies()
    if replan:
        _store(_plans(replan, now, policies=policies), now)
    row_by_row = selectors.tasks_with_due_steps(
        task_ids=task_ids,
        step_ids=[
            step.pk
            for policy in policies
            for step in policy.steps.all()
            if step.action in ROW_BY_ROW_ACTIONS
        ],
        now=now,
    )
    fired = 0
    set_based = [task_id for task_id in task_ids if task_id not in row_by_row]
    if set_based:
        fired += _fire_set_based(task_ids=set_based, policies=policies, now=now)
    if row_by_row:
        fired += _fire_row_by_row(task_ids=sorted(row_by_row), now=now)
    return SweepResult(fired=fired, recomputed=len(stale) + len(replan), due=len(task_ids))


def sweep(*, now: datetime | None = None, batch: int = SWEEP_BATCH) -> int:
    """One sweep batch (its own transaction); returns how many steps fired."""
    return sweep_batch(now=now, batch=batch).fired


@transaction.atomic
def escalation_acknowledge(*, escalation_id: int, user) -> bool:
    """Someone has seen the escalation; returns False when it was acknowledged already."""
    return bool(
        Escalation.objects.filter(pk=escalation_id, acknowledged_at__isnull=True).update(
            acknowledged_by=user, acknowledged_at=timezone.now()
        )
    )
