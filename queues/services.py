"""The task state machine and the queue permission grants.

The steps that routing strings together inside its own transaction (create, classify, assign,
mark waiting) run with `savepoint=False`: a failure there fails the whole intake, and skipping
the savepoint saves two round trips each on the busiest path. Routing keeps one explicit
savepoint around the assignment, whose capacity refusal it recovers from.

Every change of a task goes through one of these functions: inside one transaction, with the
task's row locked, checked against the version the person saw, and written to the timeline with
its actor. Capacity is taken and given back here, in the database (accounts.services).

These functions know nothing of routing rules or SLA policies: what must happen after a
change (offering freed capacity to queued work, spawning follow-ups, recomputing due times) is
done by the orchestrating functions of the higher apps, which call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auditlog.context import disable_auditlog
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from accounts import services as accounts_services
from accounts.models import StaffProfile
from queues.models import Queue, Task, TaskEvent

QUEUE_PERMISSIONS = ("queues.view_queue", "queues.work_queue")

Actor = AbstractBaseUser | str
"""A person, or a label for an integration client (`client:<name>`) or a job (`system:<job>`)."""


class TaskStateError(ValidationError):
    """The action does not fit the task's present state (a stale page, a double click)."""


class StaleTaskError(TaskStateError):
    """Someone changed the task after the person loaded it."""


class CapacityError(ValidationError):
    """The person has no room for this task."""


@dataclass(frozen=True)
class FreedCapacity:
    """Who got capacity back from a change, for the caller to offer queued work to."""

    user_id: int | None
    queue_id: int | None


# --- permissions ---------------------------------------------------------------------------


@transaction.atomic
def queue_sync_permissions(*, queue: Queue, previous_department_id: int | None = None) -> None:
    """The owning department's group may see and work the queue; a previous owner loses it."""
    if previous_department_id and previous_department_id != queue.department_id:
        from accounts.models import Department

        old = Department.objects.get(pk=previous_department_id)
        for permission in QUEUE_PERMISSIONS:
            remove_perm(permission, old.group, queue)
    for permission in QUEUE_PERMISSIONS:
        assign_perm(permission, queue.department.group, queue)


@transaction.atomic
def queue_grant(*, queue: Queue, group, can_work: bool = True) -> None:
    """Let another team (for instance a float pool) see, and optionally work, a queue."""
    assign_perm("queues.view_queue", group, queue)
    if can_work:
        assign_perm("queues.work_queue", group, queue)


def user_may_work_queue(user, queue_id: int) -> bool:
    return Queue.objects.workable_by(user).filter(pk=queue_id).exists()


# --- timeline ------------------------------------------------------------------------------


def actor_fields(actor: Actor) -> dict[str, Any]:
    if isinstance(actor, str):
        if not actor:
            raise ValueError("every change needs an actor")
        return {"actor": None, "actor_label": actor}
    return {"actor": actor, "actor_label": actor.get_username()}


def task_event_record(*, task: Task, kind: str, actor: Actor, **fields: Any) -> TaskEvent:
    return TaskEvent.objects.create(task=task, kind=kind, **actor_fields(actor), **fields)


# --- helpers -------------------------------------------------------------------------------


def _locked(task_id: int, expected_version: int | None) -> Task:
    task = Task.objects.select_for_update().get(pk=task_id)
    if expected_version is not None and task.version != expected_version:
        raise StaleTaskError(
            f"Task #{task.pk} was changed by someone else while you had it open. "
            "Its page now shows the new state; check it and try again.",
            code="stale",
        )
    return task


def _require(task: Task, allowed: tuple[str, ...], action: str) -> None:
    if task.status not in allowed:
        raise TaskStateError(
            f"Task #{task.pk} is {task.get_status_display().lower()}, so it cannot be {action}.",
            code="invalid_state",
        )


def _save(task: Task, *fields: str) -> None:
    task.version += 1
    # The timeline event each service writes is the record of a state change; field diffs
    # in the audit log are for edits people make in the admin.
    with disable_auditlog():
        task.save(update_fields=[*fields, "version", "updated_at"])


def _take_capacity(user_id: int, units: int, *, pushed: bool) -> None:
    if not accounts_services.staff_take_capacity(
        user_id=user_id, units=units, touch_last_assigned=pushed
    ):
        raise CapacityError(
            "That person is at capacity. Resolve, hold or release a task first, "
            "or choose someone else.",
            code="at_capacity",
        )


def _free_capacity(task: Task) -> FreedCapacity:
    if task.status in Task.LOADED_STATUSES and task.assignee_id:
        accounts_services.staff_free_capacity(user_id=task.assignee_id, units=task.weight)
        return FreedCapacity(user_id=task.assignee_id, queue_id=task.queue_id)
    return FreedCapacity(user_id=None, queue_id=task.queue_id)


def _require_worker(user, task: Task) -> None:
    if not user_may_work_queue(user, task.queue_id):
        raise PermissionDenied("You may not work tasks in this queue.")


# --- transitions ---------------------------------------------------------------------------


@transaction.atomic(savepoint=False)
def task_assign(
    *,
    task_id: int,
    assignee_id: int,
    actor: Actor,
    explanation: dict | None = None,
    rule_id: int | None = None,
    rule_set_version: int | None = None,
    kind: str = TaskEvent.Kind.ASSIGNED,
    reason: str = "",
) -> Task:
    """Push a queued task to a person: takes their capacity in the database or raises."""
    task = _locked(task_id, None)
    _require(task, (Task.Status.NEW, Task.Status.QUEUED), "assigned")
    if task.blocked_by_id:
        raise TaskStateError(f"Task #{task.pk} waits for another task to be resolved first.")
    _take_capacity(assignee_id, task.weight, pushed=True)
    now = timezone.now()
    task.status = Task.Status.ASSIGNED
    task.assignee_id = assignee_id
    task.waiting_for_capacity = False
    task.first_assigned_at = task.first_assigned_at or now
    _save(task, "status", "assignee", "waiting_for_capacity", "first_assigned_at")
    task_event_record(
        task=task,
        kind=kind,
        actor=actor,
        to_user_id=assignee_id,
        to_queue_id=task.queue_id,
        rule_id=rule_id,
        rule_set_version=rule_set_version,
        reason=reason,
        explanation=explanation or {},
    )
    return task


@transaction.atomic(savepoint=False)
def task_mark_waiting(*, task_id: int, actor: Actor, explanation: dict) -> Task:
    """Nobody can take the task now: it waits, visibly, for the next freed capacity."""
    task = _locked(task_id, None)
    if task.status == Task.Status.QUEUED and not task.waiting_for_capacity:
        task.waiting_for_capacity = True
        _save(task, "waiting_for_capacity")
        task_event_record(
            task=task,
            kind=TaskEvent.Kind.WAITING_FOR_CAPACITY,
            actor=actor,
            to_queue_id=task.queue_id,
            explanation=explanation,
        )
    return task


@transaction.atomic
def task_claim(*, task_id: int, user, expected_version: int | None = None) -> Task:
    """A person takes a queued task (or one pushed to them) as theirs."""
    task = _locked(task_id, expected_version)
    _require_worker(user, task)
    if task.status == Task.Status.ASSIGNED and task.assignee_id == user.pk:
        raise TaskStateError(f"Task #{task.pk} is already yours.", code="invalid_state")
    _require(task, (Task.Status.QUEUED,), "claimed")
    if task.blocked_by_id:
        raise TaskStateError(
            f"Task #{task.pk} waits for task #{task.blocked_by_id} to be resolved first.",
            code="blocked",
        )
    _take_capacity(user.pk, task.weight, pushed=False)
    now = timezone.now()
    task.status = Task.Status.ASSIGNED
    task.assignee = user
    task.waiting_for_capacity = False
    task.first_assigned_at = task.first_assigned_at or now
    task.first_claimed_at = task.first_claimed_at or now
    _save(
        task, "status", "assignee", "waiting_for_capacity", "first_assigned_at", "first_claimed_at"
    )
    task_event_record(task=task, kind=TaskEvent.Kind.CLAIMED, actor=user, to_user=user)
    return task


CLAIM_NEXT_SQL = """
UPDATE queues_task
   SET status = 'assigned', assignee_id = %(user_id)s, waiting_for_capacity = false,
       first_assigned_at = COALESCE(first_assigned_at, %(now)s),
       first_claimed_at = COALESCE(first_claimed_at, %(now)s),
       version = version + 1, updated_at = %(now)s
 WHERE id = (
        SELECT id FROM queues_task
         WHERE status = 'queued' AND assignee_id IS NULL AND blocked_by_id IS NULL
           AND {queue_condition} AND weight <= %(room)s
         ORDER BY priority, claim_due_at, id
         FOR UPDATE SKIP LOCKED
         LIMIT 1)
RETURNING id, weight
"""
# One queue: walk that queue's part of `task_claimable_by_queue`. Several: walk the global
# claim order (`task_claimable`), after checking through the per-queue index that any of them
# has claimable work at all, so that an empty set of queues never walks the whole index.
CLAIM_ONE_QUEUE_SQL = CLAIM_NEXT_SQL.format(queue_condition="queue_id = %(queue_id)s")
CLAIM_MANY_QUEUES_SQL = CLAIM_NEXT_SQL.format(queue_condition="queue_id = ANY(%(queue_ids)s)")
ANY_CLAIMABLE_SQL = """
SELECT EXISTS (SELECT 1 FROM queues_task
                WHERE status = 'queued' AND assignee_id IS NULL AND blocked_by_id IS NULL
                  AND queue_id = ANY(%(queue_ids)s))
"""


@transaction.atomic
def task_claim_next(*, user) -> Task | None:
    """*Next task*: the most urgent, oldest claimable task across the queues the person works.

    The person's staff row is locked first (so their own double click cannot overbook them),
    then one UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) claims the task:
    two people never get the same task, and nobody waits on a row someone else is taking.
    """
    room = accounts_services.staff_lock_room(user_id=user.pk)
    if room is None:
        raise CapacityError("You have no staff profile; ask your manager to set one up.")
    if room <= 0:
        raise CapacityError(
            "You are at capacity. Resolve, hold or release a task before taking another.",
            code="at_capacity",
        )
    queue_ids = list(
        Queue.objects.workable_by(user).filter(is_active=True).values_list("id", flat=True)
    )
    if not queue_ids:
        return None
    params = {"user_id": user.pk, "now": timezone.now(), "room": room}
    with connection.cursor() as cursor:
        if len(queue_ids) == 1:
            cursor.execute(CLAIM_ONE_QUEUE_SQL, {**params, "queue_id": queue_ids[0]})
        else:
            cursor.execute(ANY_CLAIMABLE_SQL, {"queue_ids": queue_ids})
            if not cursor.fetchone()[0]:
                return None
            cursor.execute(CLAIM_MANY_QUEUES_SQL, {**params, "queue_ids": queue_ids})
        row = cursor.fetchone()
    if row is None:
        return None
    task_id, weight = row
    StaffProfile.objects.filter(user_id=user.pk).update(active_load=F("active_load") + weight)
    task = Task.objects.get(pk=task_id)
    task_event_record(
        task=task, kind=TaskEvent.Kind.CLAIMED, actor=user, to_user=user, reason="Next task"
    )
    return task


@transaction.atomic
def task_start(*, task_id: int, user, expected_version: int | None = None) -> Task:
    task = _locked(task_id, expected_version)
    _require(task, (Task.Status.ASSIGNED,), "started")
    if task.assignee_id != user.pk:
        raise TaskStateError(f"Task #{task.pk} is assigned to someone else.", code="not_yours")
    task.status = Task.Status.IN_PROGRESS
    task.first_claimed_at = task.first_claimed_at or timezone.now()
    _save(task, "status", "first_claimed_at")
    task_event_record(task=task, kind=TaskEvent.Kind.STARTED, actor=user)
    return task


@transaction.atomic
def task_release(
    *, task_id: int, actor: Actor, reason: str = "", expected_version: int | None = None
) -> tuple[Task, FreedCapacity]:
    """Give a task back to its queue, unassigned."""
    task = _locked(task_id, expected_version)
    _require(task, Task.LOADED_STATUSES, "released")
    freed = _free_capacity(task)
    previous = task.assignee_id
    task.status = Task.Status.QUEUED
    task.assignee = None
    _save(task, "status", "assignee")
    task_event_record(
        task=task, kind=TaskEvent.Kind.RELEASED, actor=actor, from_user_id=previous, reason=reason
    )
    return task, freed


@transaction.atomic
def task_hold(
    *,
    task_id: int,
    actor: Actor,
    reason: str,
    follow_up_at: datetime | None,
    expected_version: int | None = None,
) -> tuple[Task, FreedCapacity]:
    """Waiting on someone outside: the task leaves its holder's load until it resumes."""
    if not reason.strip():
        raise ValidationError({"reason": "Say what the task is waiting for."})
    if follow_up_at is not None and follow_up_at <= timezone.now():
        raise ValidationError({"follow_up_at": "Choose a follow-up time in the future."})
    task = _locked(task_id, expected_version)
    _require(task, Task.LOADED_STATUSES, "put on hold")
    freed = _free_capacity(task)
    task.status = Task.Status.ON_HOLD
    task.hold_reason = reason.strip()
    task.follow_up_at = follow_up_at
    _save(task, "status", "hold_reason", "follow_up_at")
    task_event_record(
        task=task,
        kind=TaskEvent.Kind.HELD,
        actor=actor,
        reason=reason.strip(),
        explanation={"follow_up_at": follow_up_at.isoformat() if follow_up_at else None},
    )
    return task, freed


@transaction.atomic
def task_resume(*, task_id: int, actor: Actor, expected_version: int | None = None) -> Task:
    """Back from hold: to its holder when they have room, otherwise back to the queue."""
    task = _locked(task_id, expected_version)
    _require(task, (Task.Status.ON_HOLD,), "resumed")
    holder = task.assignee_id
    resumed_to_holder = bool(
        holder
        and accounts_services.staff_take_capacity(
            user_id=holder, units=task.weight, touch_last_assigned=False
        )
    )
    if resumed_to_holder:
        task.status = Task.Status.IN_PROGRESS
        reason = ""
    else:
        task.status = Task.Status.QUEUED
        task.assignee = None
        reason = "Back to the queue: the holder has no room now." if holder else ""
    task.hold_reason = ""
    task.follow_up_at = None
    _save(task, "status", "assignee", "hold_reason", "follow_up_at")
    task_event_record(
        task=task,
        kind=TaskEvent.Kind.RESUMED,
        actor=actor,
        to_user_id=holder if resumed_to_holder else None,
        reason=reason,
    )
    return task


@transaction.atomic
def task_resolve(
    *,
    task_id: int,
    actor: Actor,
    outcome: str,
    note: str = "",
    expected_version: int | None = None,
) -> tuple[Task, FreedCapacity]:
    if not outcome.strip():
        raise ValidationError({"outcome": "Choose the outcome of the task."})
    task = _locked(task_id, expected_version)
    _require(task, (*Task.LOADED_STATUSES, Task.Status.ON_HOLD), "resolved")
    freed = _free_capacity(task)
    task.status = Task.Status.RESOLVED
    task.outcome = outcome.strip()
    task.resolved_at = timezone.now()
    task.hold_reason = ""
    task.follow_up_at = None
    _save(task, "status", "outcome", "resolved_at", "hold_reason", "follow_up_at")
    task_event_record(
        task=task,
        kind=TaskEvent.Kind.RESOLVED,
        actor=actor,
        reason=note.strip(),
        explanation={"outcome": task.outcome},
    )
    return task, freed


@transaction.atomic
def task_reopen(
    *, task_id: int, actor: Actor, reason: str, expected_version: int | None = None
) -> Task:
    if not reason.strip():
        raise ValidationError({"reason": "Say why the task is reopened."})
    task = _locked(task_id, expected_version)
    _require(task, (Task.Status.RESOLVED,), "reopened")
    task.status = Task.Status.QUEUED
    task.assignee = None
    task.resolved_at = None
    task.outcome = ""
    task.reopen_count += 1
    _save(task, "status", "assignee", "resolved_at", "outcome", "reopen_count")
    task_event_record(task=task, kind=TaskEvent.Kind.REOPENED, actor=actor, reason=reason.strip())
    return task


@transaction.atomic
def task_move(
    *,
    task_id: int,
    actor: Actor,
    to_queue_id: int,
    reason: str,
    kind: str = TaskEvent.Kind.REROUTED,
    expected_version: int | None = None,
    count_as_reroute: bool = True,
    explanation: dict | None = None,
) -> tuple[Task, FreedCapacity]:
    """Hand a task on to another queue, unassigned, with the reason recorded.

    The timeline records the rule that first routed the task, so that rule quality can be
    measured by how often its decisions are moved by people.
    """
    if not reason.strip():
        raise ValidationError({"reason": "Say why the task moves to another queue."})
    task = _locked(task_id, expected_version)
    _require(task, Task.OPEN_STATUSES, "moved")
    if task.queue_id == to_queue_id:
        raise ValidationError({"queue": "The task is already in that queue."})
    freed = _free_capacity(task)
    previous_queue, previous_user = task.queue_id, task.assignee_id
    task.queue_id = to_queue_id
    task.status = Task.Status.QUEUED
    task.assignee = None
    task.waiting_for_capacity = False
    task.hold_reason = ""
    task.follow_up_at = None
    fields = ["queue", "status", "assignee", "waiting_for_capacity", "hold_reason", "follow_up_at"]
    if count_as_reroute:
        task.reroute_count += 1
        fields.append("reroute_count")
    _save(task, *fields)
    task_event_record(
        task=task,
        kind=kind,
        actor=actor,
        from_queue_id=previous_queue,
        to_queue_id=to_queue_id,
        from_user_id=previous_user,
        rule_id=task.routed_by_rule_id,
        rule_set_version=task.rule_set_version,
        reason=reason.strip(),
        explanation=explanation or {},
    )
    return task, freed


@transaction.atomic
def task_reassign(
    *, task_id: int, actor: Actor, to_user, reason: str, expected_version: int | None = None
) -> tuple[Task, FreedCapacity]:
    """A supervisor gives a task to a named person who may work its queue and has room."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the task is reassigned."})
    task = _locked(task_id, expected_version)
    _require(task, (Task.Status.QUEUED, *Task.LOADED_STATUSES), "reassigned")
    if task.assignee_id == to_user.pk:
        raise ValidationError({"assignee": "The task is already assigned to that person."})
    if not user_may_work_queue(to_user, task.queue_id):
        raise ValidationError({"assignee": "That person does not work this queue."})
    freed = _free_capacity(task)
    _take_capacity(to_user.pk, task.weight, pushed=True)
    previous = task.assignee_id
    task.status = Task.Status.ASSIGNED
    task.assignee = to_user
    task.waiting_for_capacity = False
    task.first_assigned_at = task.first_assigned_at or timezone.now()
    task.reroute_count += 1
    _save(task, "status", "assignee", "waiting_for_capacity", "first_assigned_at", "reroute_count")
    task_event_record(
        task=task,
        kind=TaskEvent.Kind.REASSIGNED,
        actor=actor,
        from_user_id=previous,
        to_user=to_user,
        rule_id=task.routed_by_rule_id,
        rule_set_version=task.rule_set_version,
        reason=reason.strip(),
    )
    return task, freed


@transaction.atomic
def task_comment(*, task_id: int, actor: Actor, text: str) -> TaskEvent:
    if not text.strip():
        raise ValidationError({"text": "Write the comment first."})
    task = Task.objects.select_for_update().get(pk=task_id)
    _save(task)
    return task_event_record(
        task=task, kind=TaskEvent.Kind.COMMENTED, actor=actor, reason=text.strip()
    )


@transaction.atomic(savepoint=False)
def task_create(
    *,
    actor: Actor,
    channel: str,
    subject: str,
    body: str = "",
    external_id: str = "",
    site_id: int | None = None,
    patient_mrn: str = "",
    patient_name: str = "",
    patient_birth_date=None,
    request_type: str = "",
    source_system: str = "",
    tags: list[str] | None = None,
    metadata: dict | None = None,
    received_at: datetime | None = None,
    parent_id: int | None = None,
    blocked_by_id: int | None = None,
    reason: str = "",
) -> Task:
    """A new, unclassified task with its first timeline event. Routing classifies it next."""
    with disable_auditlog():
        task = Task.objects.create(
            channel=channel,
            external_id=external_id,
            site_id=site_id,
            subject=subject[:300],
            body=body,
            patient_mrn=patient_mrn,
            patient_name=patient_name,
            patient_birth_date=patient_birth_date,
            request_type=request_type,
            source_system=source_system,
            tags=list(tags or []),
            metadata=metadata or {},
            received_at=received_at,
            parent_id=parent_id,
            blocked_by_id=blocked_by_id,
            status=Task.Status.NEW,
        )
    task_event_record(task=task, kind=TaskEvent.Kind.CREATED, actor=actor, reason=reason)
    return task


@transaction.atomic(savepoint=False)
def task_classify(
    *,
    task_id: int,
    actor: Actor,
    task_type_id: int | None,
    weight: int,
    priority: int,
    tags: list[str],
    queue_id: int,
    required_skill_id: int | None,
    min_skill_level: int,
    rule_id: int | None,
    rule_set_version: int | None,
    explanation: dict,
    kind: str = TaskEvent.Kind.ROUTED,
    reason: str = "",
) -> Task:
    """Record what routing decided for a new task (or a person's correction from Needs review):
    its type, priority, tags and queue. The task is then queued, waiting for assignment."""
    task = _locked(task_id, None)
    _require(task, (Task.Status.NEW, Task.Status.QUEUED), "classified")
    previous_queue = task.queue_id
    task.task_type_id = task_type_id
    task.weight = weight
    task.priority = priority
    task.tags = sorted(set(tags))
    task.queue_id = queue_id
    task.required_skill_id = required_skill_id
    task.min_skill_level = min_skill_level
    task.status = Task.Status.QUEUED
    if task.rule_set_version is None:
        task.rule_set_version = rule_set_version
        task.routed_by_rule_id = rule_id
    _save(
        task,
        "task_type",
        "weight",
        "priority",
        "tags",
        "queue",
        "required_skill",
        "min_skill_level",
        "status",
        "rule_set_version",
        "routed_by_rule_id",
    )
    task_event_record(
        task=task,
        kind=kind,
        actor=actor,
        from_queue_id=previous_queue,
        to_queue_id=queue_id,
        rule_id=rule_id,
        rule_set_version=rule_set_version,
        reason=reason,
        explanation=explanation,
    )
    return task
