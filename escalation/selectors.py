"""Reads for the SLA computation and the sweep: each one query (or one per relation)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.db.models import Prefetch

from escalation.models import Escalation, EscalationStep, SlaPolicy
from queues.models import Task, TaskEvent

Interval = tuple[datetime, datetime]

# Open tasks never computed, or changed since they were: `version` moves with every change
# through queues.services, `sla_version` only when the SLA is stored. The WHERE clause is the
# predicate of the partial index `task_sla_stale` word for word, so the index holds exactly
# these rows: none when nothing changed, whatever the size of the table. A closed task needs
# no recompute here: if its stored next step comes due, the due query sends it to a recompute,
# which clears it.
STALE_TASKS_SQL = """
SELECT id FROM queues_task
 WHERE status IN ('new', 'queued', 'assigned', 'in_progress', 'on_hold')
   AND NOT (sla_version = version)
 ORDER BY id
 LIMIT %(limit)s
"""

# The sweep's due rows, over the partial index on (next_step_at, task_id): a bounded batch,
# locked to the end of the transaction, skipping rows another sweep holds; then their tasks,
# locked too, skipping any that a person (or another sweep) is changing right now: they stay
# due for the next batch. Neither lock waits, so two sweeps never wait for each other here.
# `replan` marks the tasks whose stored plan cannot be trusted: changed since, no longer
# running (closed or on hold), or computed before the SLA configuration was last edited.
DUE_SQL = """
WITH due AS (
  SELECT task_id, computed_at FROM escalation_tasksla
   WHERE next_step_at IS NOT NULL AND next_step_at <= %(now)s
   ORDER BY next_step_at, task_id
   LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
)
SELECT t.id,
       NOT (t.sla_version = t.version)
       OR t.status NOT IN ('new', 'queued', 'assigned', 'in_progress')
       OR due.computed_at < (
            SELECT coalesce(greatest((SELECT max(updated_at) FROM escalation_slapolicy),
                                     (SELECT max(updated_at) FROM escalation_businesscalendar)),
                            '-infinity')) AS replan
  FROM due JOIN queues_task t ON t.id = due.task_id
 ORDER BY t.id
 FOR UPDATE OF t SKIP LOCKED
"""

# Of these tasks, the ones with a due step whose action runs through the state machine.
ROW_BY_ROW_SQL = """
SELECT DISTINCT s.task_id
  FROM escalation_tasksla s
 CROSS JOIN LATERAL unnest(s.pending_step_ids, s.pending_fire_at) AS p(step_id, fire_at)
 WHERE s.task_id = ANY(%(task_ids)s) AND p.fire_at <= %(now)s AND p.step_id = ANY(%(step_ids)s)
"""


def active_policies() -> list[SlaPolicy]:
    """Active policies in the order they are tried, with what matching and planning need."""
    return list(
        SlaPolicy.objects.filter(is_active=True)
        .select_related("calendar")
        .prefetch_related(
            "task_types",
            "queues",
            "calendar__closures",
            Prefetch("steps", queryset=EscalationStep.objects.order_by("level")),
        )
        .order_by("order", "id")
    )


def stale_task_ids(*, limit: int, lock: bool = False) -> list[int]:
    """Open tasks whose SLA is behind their version; with `lock`, locked for the transaction,
    skipping any that another transaction holds."""
    sql_text = STALE_TASKS_SQL + (" FOR UPDATE SKIP LOCKED" if lock else "")
    with connection.cursor() as cursor:
        cursor.execute(sql_text, {"limit": limit})
        return [row[0] for row in cursor.fetchall()]


def lock_due_tasks(*, now: datetime, limit: int) -> tuple[list[int], list[int]]:
    """(ids of the due tasks locked for this sweep, the ones among them to plan again)."""
    with connection.cursor() as cursor:
        cursor.execute(DUE_SQL, {"now": now, "limit": limit})
        rows = cursor.fetchall()
    return [task_id for task_id, _ in rows], [task_id for task_id, replan in rows if replan]


def tasks_with_due_steps(*, task_ids: list[int], step_ids: list[int], now: datetime) -> set[int]:
    if not task_ids or not step_ids:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(ROW_BY_ROW_SQL, {"task_ids": task_ids, "step_ids": step_ids, "now": now})
        return {row[0] for row in cursor.fetchall()}


def held_intervals(*, task_ids: list[int], now: datetime) -> dict[int, tuple[Interval, ...]]:
    """Per task, the spans it spent on hold, from its HELD and RESUMED events; a hold still
    running ends at `now`."""
    events = (
        TaskEvent.objects.filter(
            task_id__in=task_ids, kind__in=[TaskEvent.Kind.HELD, TaskEvent.Kind.RESUMED]
        )
        .order_by("task_id", "created_at", "id")
        .values_list("task_id", "kind", "created_at")
    )
    spans: dict[int, list[Interval]] = defaultdict(list)
    started: dict[int, datetime] = {}
    for task_id, kind, at in events:
        if kind == TaskEvent.Kind.HELD:
            started.setdefault(task_id, at)
        elif task_id in started:
            spans[task_id].append((started.pop(task_id), at))
    for task_id, at in started.items():
        spans[task_id].append((at, max(at, now)))
    return {task_id: tuple(intervals) for task_id, intervals in spans.items()}


def fired_step_ids(*, task_ids: list[int]) -> dict[int, set[int]]:
    fired: dict[int, set[int]] = defaultdict(set)
    for task_id, step_id in Escalation.objects.filter(task_id__in=task_ids).values_list(
        "task_id", "step_id"
    ):
        fired[task_id].add(step_id)
    return fired


def tasks_for_planning(*, task_ids: list[int]) -> list[Task]:
    """The tasks, locked in id order: what is planned is what is stored (a claim cannot slip
    in between), and every writer of SLA rows takes the task first, then its TaskSla."""
    return list(
        Task.objects.select_for_update(of=("self",))
        .filter(pk__in=task_ids)
        .only(
            "id",
            "task_type_id",
            "priority",
            "queue_id",
            "status",
            "received_at",
            "created_at",
            "first_claimed_at",
            "claim_due_at",
            "resolve_due_at",
            "version",
        )
        .order_by("id")
    )
