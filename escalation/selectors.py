"""Reads for the SLA computation and the sweep: each one query (or one per relation)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.db.models import Prefetch

from escalation.models import Escalation, EscalationStep, SlaPolicy
from queues.models import Task, TaskEvent

Interval = tuple[datetime, datetime]

# Open tasks never computed, or changed since they were (`version` moves with every change
# through queues.services). A closed task needs no recompute: when its stored next step comes
# due, the sweep finds nothing pending for it and clears it.
STALE_TASKS_SQL = """
SELECT t.id FROM queues_task t
  LEFT JOIN escalation_tasksla s ON s.task_id = t.id
 WHERE t.status IN ('new', 'queued', 'assigned', 'in_progress', 'on_hold')
   AND (s.task_id IS NULL OR s.task_version <> t.version)
 ORDER BY t.id
 LIMIT %(limit)s
"""

# The sweep's one query over the partial index on next_step_at: a bounded batch of due rows,
# locked to the end of the transaction, skipping rows another sweep holds.
DUE_SQL = """
SELECT task_id FROM escalation_tasksla
 WHERE next_step_at IS NOT NULL AND next_step_at <= %(now)s
 ORDER BY next_step_at, task_id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED
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


def stale_task_ids(*, limit: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(STALE_TASKS_SQL, {"limit": limit})
        return [row[0] for row in cursor.fetchall()]


def lock_due_task_ids(*, now: datetime, limit: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(DUE_SQL, {"now": now, "limit": limit})
        return [row[0] for row in cursor.fetchall()]


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
    return list(
        Task.objects.filter(pk__in=task_ids)
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
