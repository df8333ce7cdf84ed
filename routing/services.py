"""Routing's writes: run the engine for a task and persist its decision under the right locks.

These are also the orchestrating functions that the pages, the API and the jobs call for any
change that frees capacity or needs a new assignment: each calls the state-machine service of
`queues.services` and then offers the freed capacity to queued work, in the same transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime

from auditlog.context import disable_auditlog
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts import services as accounts_services
from accounts.models import StaffProfile
from queues import services as queues_services
from queues.models import Queue, Task, TaskEvent
from queues.services import Actor, CapacityError, FreedCapacity
from routing import engine, selectors
from routing.models import RuleSet, RuleSetEvent

ROUTER = "system:router"
_NOBODY = engine.CandidatePool(())
MAX_ASSIGN_ATTEMPTS = 5


def _facts(task: Task, snapshot: selectors.RoutingSnapshot, now: datetime) -> engine.TaskFacts:
    local_now, site_open = snapshot.local_now(task.site_id, now)
    urgency = task.metadata.get("urgency") if isinstance(task.metadata, dict) else None
    return engine.TaskFacts(
        key=str(task.pk),
        channel=task.channel,
        subject=task.subject,
        body=task.body,
        local_now=local_now,
        request_type=task.request_type,
        source_system=task.source_system,
        site_id=task.site_id,
        patient_key=task.patient_mrn,
        urgency_hint=urgency if urgency in (1, 2, 3, 4) else None,
        tags=tuple(task.tags),
        site_business_open=site_open,
    )


def _routed_explanation(decision: engine.Decision) -> dict:
    """What the ROUTED event records of a decision: classification and route, with the ids of
    the classification rules that applied; the assignment has its own event."""
    explanation = decision.explanation_dict()
    explanation.pop("assignment", None)
    explanation["classification_rule_ids"] = list(decision.classification_rule_ids)
    return explanation


def _summary(decision: engine.Decision, snapshot: selectors.RoutingSnapshot) -> str:
    queue = snapshot.queue(decision.queue_id).name
    if decision.needs_review:
        return f"Needs review: sent to {queue} for a person to classify."
    return f"Classified as {decision.task_type} P{decision.priority}; routed to {queue}."


@transaction.atomic(savepoint=False)
def task_route(
    *,
    task: Task,
    actor: Actor = ROUTER,
    now: datetime | None = None,
    snapshot: selectors.RoutingSnapshot | None = None,
) -> engine.Decision:
    """Classify, route and assign a new task, recording each step with its explanation."""
    now = now or timezone.now()
    snapshot = snapshot or selectors.routing_snapshot()
    # Classify and route first, then load only the people of the chosen queue: the staff
    # query is the costliest read of the intake path, and most staff work other queues.
    decision = engine.decide(snapshot.compiled, _facts(task, snapshot, now), _NOBODY, now)
    type_id, weight = snapshot.task_types.get(decision.task_type, (None, 1))
    explanation = _routed_explanation(decision)
    queues_services.task_classify(
        task_id=task.pk,
        actor=actor,
        task_type_id=type_id,
        weight=weight,
        priority=decision.priority,
        tags=list(decision.tags),
        queue_id=decision.queue_id,
        required_skill_id=snapshot.skills.get(decision.required_skill),
        min_skill_level=max(decision.min_skill_level, 1),
        rule_id=decision.routing_rule_id,
        rule_set_version=decision.rule_set_version,
        explanation=explanation,
        reason=_summary(decision, snapshot),
    )
    queue = snapshot.queue(decision.queue_id)
    assignment = _choose_for_new(task, decision, queue, weight, now)
    _assign(task_id=task.pk, assignment=assignment, rule_set_version=decision.rule_set_version)
    return decision


def _choose_for_new(
    task: Task, decision: engine.Decision, queue: engine.QueueSpec, weight: int, now: datetime
) -> engine.Assignment:
    """The engine's choice of person for a task just routed to `queue`: the people of that
    queue only (the staff read is the costliest of intake), nobody for a pull-only queue."""
    pool = (
        _NOBODY
        if queue.policy == "pull_only"
        else engine.CandidatePool(
            selectors.candidates(patient_key=task.patient_mrn, queue_id=queue.id)
        )
    )
    return engine.choose_assignee(
        queue,
        decision.required_skill,
        decision.min_skill_level,
        weight,
        pool,
        task.patient_mrn,
        now,
    )


def _choose_again(assignment: engine.Assignment, excluded: set[int]) -> engine.Assignment:
    """The engine's next choice when the database refused its choice (that person's capacity
    went, or their row is busy): the same inputs, without the people already tried."""
    return engine.choose_assignee(
        assignment.queue,
        assignment.required_skill,
        assignment.min_level,
        assignment.weight,
        assignment.pool,
        assignment.patient_key,
        assignment.now,
        exclude=frozenset(excluded),
    )


def _assign(
    *, task_id: int, assignment: engine.Assignment, rule_set_version: int | None
) -> int | None:
    """Push to the engine's choice; when someone's capacity went in the meantime (the
    database refuses), ask the engine again without them. Nobody eligible: the task waits."""
    excluded: set[int] = set(assignment.exclude)
    for _ in range(MAX_ASSIGN_ATTEMPTS):
        if assignment.pull_only:
            return None
        if assignment.assignee_id is None:
            queues_services.task_mark_waiting(
                task_id=task_id, actor=ROUTER, explanation=assignment.explanation_dict()
            )
            return None
        try:
            with transaction.atomic():
                queues_services.task_assign(
                    task_id=task_id,
                    assignee_id=assignment.assignee_id,
                    actor=ROUTER,
                    explanation=assignment.explanation_dict(),
                    rule_set_version=rule_set_version,
                )
        except CapacityError:
            excluded.add(assignment.assignee_id)
            assignment = _choose_again(assignment, excluded)
            continue
        return assignment.assignee_id
    return None


def _task_assignment(
    task: Task,
    snapshot: selectors.RoutingSnapshot,
    pool: engine.CandidatePool,
    now: datetime,
    exclude: frozenset[int] = frozenset(),
) -> engine.Assignment:
    return engine.choose_assignee(
        snapshot.queue(task.queue_id),
        snapshot.skill_codes.get(task.required_skill_id, ""),
        task.min_skill_level,
        task.weight,
        pool,
        task.patient_mrn,
        now,
        exclude=exclude,
    )


@transaction.atomic(savepoint=False)
def task_offer(
    *, task_id: int, now: datetime | None = None, exclude: frozenset[int] = frozenset()
) -> int | None:
    """Offer one queued task to the best available person of its queue (never to anyone in
    `exclude`, such as the person who just released it)."""
    now = now or timezone.now()
    task = Task.objects.get(pk=task_id)
    if task.status != Task.Status.QUEUED or task.assignee_id or task.blocked_by_id:
        return None
    snapshot = selectors.routing_snapshot()
    if task.queue_id not in snapshot.spec.queues:
        return None
    pool = engine.CandidatePool(
        selectors.candidates(patient_key=task.patient_mrn, queue_id=task.queue_id)
    )
    return _assign(
        task_id=task.pk,
        assignment=_task_assignment(task, snapshot, pool, now, exclude),
        rule_set_version=task.rule_set_version,
    )


NEXT_WAITING_SQL = """
SELECT id FROM queues_task
 WHERE status = 'queued' AND assignee_id IS NULL AND blocked_by_id IS NULL
   AND queue_id = ANY(%(queue_ids)s) AND NOT (id = ANY(%(tried)s))
 ORDER BY priority, claim_due_at, created_at, id
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""


@transaction.atomic(savepoint=False)
def offer_queued_work(
    *, user_id: int | None = None, queue_ids: list[int] | None = None, limit: int = 25
) -> int:
    """Freed capacity: offer queued work of the person's push queues (or of the given queues)
    again, highest priority and oldest first, to whoever is best placed now. Returns how many
    tasks were assigned. Stops after `limit` attempts, so one call stays short."""
    now = timezone.now()
    snapshot = selectors.routing_snapshot()
    people = selectors.candidates()
    if queue_ids is None:
        mine = next((c for c in people if c.staff_id == user_id), None)
        queue_ids = sorted(mine.queue_ids) if mine else []
    queue_ids = [
        q
        for q in queue_ids
        if q in snapshot.spec.queues and snapshot.spec.queues[q].policy != "pull_only"
    ]
    if not queue_ids:
        return 0
    by_id = {c.staff_id: c for c in people}
    tried: list[int] = []
    assigned = 0
    for _ in range(limit):
        with connection.cursor() as cursor:
            cursor.execute(NEXT_WAITING_SQL, {"queue_ids": queue_ids, "tried": tried})
            row = cursor.fetchone()
        if row is None:
            break
        task = Task.objects.get(pk=row[0])
        tried.append(task.pk)
        pool = engine.CandidatePool(
            by_id.values()
            if not task.patient_mrn
            else selectors.candidates(patient_key=task.patient_mrn, queue_id=task.queue_id)
        )
        assignee = _assign(
            task_id=task.pk,
            assignment=_task_assignment(task, snapshot, pool, now),
            rule_set_version=task.rule_set_version,
        )
        if assignee is not None:
            assigned += 1
            person = by_id.get(assignee)
            if person is not None:
                by_id[assignee] = dataclasses.replace(
                    person, active_load=person.active_load + task.weight, last_assigned_at=now
                )
    return assigned


def _after(freed: FreedCapacity) -> None:
    if freed.user_id is not None:
        offer_queued_work(user_id=freed.user_id)


@transaction.atomic
def task_reclassify(
    *,
    task_id: int,
    actor: Actor,
    task_type_code: str,
    priority: int | None = None,
    reason: str = "",
    expected_version: int | None = None,
) -> Task:
    """A person classifies a task (typically from Needs review). The routing rules then run for
    that classification, and the timeline records it as a correction of the classification
    rules that decided before, which rule health counts against them."""
    now = timezone.now()
    snapshot = selectors.routing_snapshot()
    if task_type_code not in snapshot.spec.task_types:
        raise ValidationError({"task_type": "Choose one of the clinic's task types."})
    if priority is not None and priority not in (1, 2, 3, 4):
        raise ValidationError({"priority": "Priority is P1 (urgent) to P4 (low)."})
    task = Task.objects.select_for_update().get(pk=task_id)
    if expected_version is not None and task.version != expected_version:
        raise queues_services.StaleTaskError(
            f"Task #{task.pk} was changed by someone else while you had it open.", code="stale"
        )
    actor_id = getattr(actor, "pk", None)
    if task.status in Task.LOADED_STATUSES and actor_id and task.assignee_id == actor_id:
        # Whoever holds a Needs-review task (say, from Next task) may classify it: it goes
        # back to the queue first, so their capacity is freed and the move is on the record.
        task, freed = queues_services.task_release(
            task_id=task.pk, actor=actor, reason="Released to classify it."
        )
        _after(freed)
    if task.status not in (Task.Status.NEW, Task.Status.QUEUED):
        raise queues_services.TaskStateError(
            f"Task #{task.pk} is {task.get_status_display().lower()}; release it before "
            "classifying it again.",
            code="invalid_state",
        )
    routed = task.events.filter(kind=TaskEvent.Kind.ROUTED).order_by("-id").first()
    previous_rules = (routed.explanation or {}).get("classification_rule_ids", []) if routed else []
    type_spec = snapshot.spec.task_types[task_type_code]
    chosen_priority = priority or type_spec.default_priority
    facts = _facts(task, snapshot, now)
    route = engine.route_classified(
        snapshot.compiled, facts, task_type_code, chosen_priority, tuple(task.tags)
    )
    type_id, weight = snapshot.task_types[task_type_code]
    queue_name = snapshot.queue(route.queue_id).name
    queues_services.task_classify(
        task_id=task.pk,
        actor=actor,
        task_type_id=type_id,
        weight=weight,
        priority=route.priority,
        tags=list(task.tags),
        queue_id=route.queue_id,
        required_skill_id=snapshot.skills.get(route.required_skill),
        min_skill_level=max(route.min_skill_level, 1),
        rule_id=route.routing_rule_id,
        rule_set_version=snapshot.version,
        kind=TaskEvent.Kind.RECLASSIFIED,
        reason=reason.strip()
        or f"Classified by a person as {type_spec.name}; routed to {queue_name}.",
        explanation={
            "correction": {
                "from_type": task.task_type.code if task.task_type_id else None,
                "to_type": task_type_code,
                "from_queue_id": task.queue_id,
                "corrected_rule_ids": previous_rules,
            },
            "route": {
                "rule_id": route.routing_rule_id,
                "rule": route.routing_rule_name or None,
                "queue_id": route.queue_id,
                "queue": queue_name,
                "by": "rule" if route.routing_rule_id else f"default queue of {type_spec.name}",
            },
            "priority": route.priority,
            "rule_set_version": snapshot.version,
        },
    )
    task_offer(task_id=task.pk, now=now)
    task.refresh_from_db()
    return task


# --- the actions people take: one function each, used by pages, API and jobs ---------------


@transaction.atomic
def task_submit(*, actor: Actor, now: datetime | None = None, **fields) -> Task:
    """Intake → classify → route → assign, in one transaction."""
    now = now or timezone.now()
    snapshot, task_id = _snapshot_and_task_id()
    task = task_new(task_id=task_id, **fields)
    decision = engine.decide(snapshot.compiled, _facts(task, snapshot, now), _NOBODY, now)
    return task_insert_routed(task=task, decision=decision, snapshot=snapshot, actor=actor, now=now)


def task_new(task_id: int | None = None, **fields) -> Task:
    """An unsaved new task with its id already drawn (here, or by the caller with
    NEXT_TASK_ID_SQL), so that routing can decide on it (the rollout split is keyed by the id)
    before a single row is written."""
    if task_id is None:
        with connection.cursor() as cursor:
            cursor.execute(NEXT_TASK_ID_SQL)
            (task_id,) = cursor.fetchone()
    fields["subject"] = fields.get("subject", "")[:300]
    if received_at := fields.get("received_at"):
        # As the database will give it back: times are UTC.
        fields["received_at"] = received_at.astimezone(UTC) if received_at.tzinfo else received_at
    fields["tags"] = list(fields.get("tags") or [])
    fields["metadata"] = fields.get("metadata") or {}
    return Task(pk=task_id, status=Task.Status.NEW, **fields)


NEXT_TASK_ID_SQL = "SELECT nextval(pg_get_serial_sequence('queues_task', 'id'))"


def _snapshot_and_task_id() -> tuple[selectors.RoutingSnapshot, int]:
    """The routing snapshot and a new task id, their two statements in one round trip."""
    with pipeline():
        fingerprint = connection.cursor()
        fingerprint.execute(selectors.FINGERPRINT_SQL, [None])
        next_id = connection.cursor()
        next_id.execute(NEXT_TASK_ID_SQL)
    try:
        return selectors.snapshot_for(fingerprint.fetchone()), next_id.fetchone()[0]
    finally:
        fingerprint.close()
        next_id.close()


@transaction.atomic(savepoint=False)
def task_insert_routed(
    *,
    task: Task,
    decision: engine.Decision,
    snapshot: selectors.RoutingSnapshot,
    actor: Actor,
    now: datetime,
    reason: str = "",
) -> Task:
    """Write a new task (from `task_new`) already classified, routed and assigned.

    The same outcome and timeline as `task_create` + `task_route` (created, routed, then
    assigned or waiting for capacity), but the person's capacity is taken first and the task
    and its events are inserted in their final state: four statements instead of a dozen,
    which is what single-request intake spends its time on.
    """
    type_id, weight = snapshot.task_types.get(decision.task_type, (None, 1))
    queue = snapshot.queue(decision.queue_id)
    assignment = _choose_for_new(task, decision, queue, weight, now)
    assignment = _take_for(assignment)
    stamp = timezone.now()
    explanation = _routed_explanation(decision)
    assigned = assignment.assignee_id is not None and not assignment.pull_only
    waiting = not assigned and not assignment.pull_only
    task.task_type_id = type_id
    task.weight = weight
    task.priority = decision.priority
    task.tags = sorted(set(decision.tags))
    task.queue_id = queue.id
    task.required_skill_id = snapshot.skills.get(decision.required_skill)
    task.min_skill_level = max(decision.min_skill_level, 1)
    task.rule_set_version = decision.rule_set_version
    task.routed_by_rule_id = decision.routing_rule_id
    task.status = Task.Status.ASSIGNED if assigned else Task.Status.QUEUED
    task.assignee_id = assignment.assignee_id if assigned else None
    task.waiting_for_capacity = waiting
    task.first_assigned_at = stamp if assigned else None
    task.version = 3 if (assigned or waiting) else 2  # created, classified, assigned/waiting
    task.created_at = task.updated_at = stamp
    actor_values = queues_services.actor_fields(actor)
    router = queues_services.actor_fields(ROUTER)
    events = [
        TaskEvent(
            task=task, created_at=stamp, kind=TaskEvent.Kind.CREATED, reason=reason, **actor_values
        ),
        TaskEvent(
            task=task,
            created_at=stamp,
            kind=TaskEvent.Kind.ROUTED,
            to_queue_id=queue.id,
            rule_id=decision.routing_rule_id,
            rule_set_version=decision.rule_set_version,
            reason=_summary(decision, snapshot),
            explanation=explanation,
            **router,
        ),
    ]
    if assigned:
        events.append(
            TaskEvent(
                task=task,
                created_at=stamp,
                kind=TaskEvent.Kind.ASSIGNED,
                to_user_id=task.assignee_id,
                to_queue_id=queue.id,
                rule_set_version=decision.rule_set_version,
                explanation=assignment.explanation_dict(),
                **router,
            )
        )
    elif waiting:
        events.append(
            TaskEvent(
                task=task,
                created_at=stamp,
                kind=TaskEvent.Kind.WAITING_FOR_CAPACITY,
                to_queue_id=queue.id,
                explanation=assignment.explanation_dict(),
                **router,
            )
        )
    for event in events:
        event.created_at = stamp
    # The task and its events go in one round trip (no auditlog: the events are the record).
    with pipeline():
        queues_services.rows_insert(Task, [task])
        queues_services.rows_insert(TaskEvent, events)
    return task


@contextlib.contextmanager
def pipeline():
    """psycopg's pipeline mode: the statements inside are sent without waiting for each answer."""
    with connection.cursor():  # connects if needed
        pass
    with connection.connection.pipeline():
        yield


def _take_for(assignment: engine.Assignment) -> engine.Assignment:
    """Take the chosen person's capacity in the database; when it went in the meantime, ask
    the engine again without them. Returns the assignment that holds (or nobody)."""
    excluded: set[int] = set(assignment.exclude)
    for _ in range(MAX_ASSIGN_ATTEMPTS):
        if assignment.pull_only or assignment.assignee_id is None:
            return assignment
        if accounts_services.staff_take_capacity(
            user_id=assignment.assignee_id,
            units=assignment.weight,
            touch_last_assigned=True,
            skip_locked=True,
        ):
            return assignment
        excluded.add(assignment.assignee_id)
        assignment = _choose_again(assignment, excluded)
    return assignment._replace(assignee_id=None)


@transaction.atomic
def task_resolve(
    *, task_id: int, actor: Actor, outcome: str, note: str = "", expected_version=None
) -> Task:
    task, freed = queues_services.task_resolve(
        task_id=task_id, actor=actor, outcome=outcome, note=note, expected_version=expected_version
    )
    # Follow-ups, in this transaction: the tasks that waited for this one are unblocked and
    # offered, and its "when resolved" workflows fire. (workflows builds on this module.)
    from routing import workflows

    workflows.on_resolved(task=task, actor=actor)
    _after(freed)
    return task


@transaction.atomic
def task_hold(
    *, task_id: int, actor: Actor, reason: str, follow_up_at=None, expected_version=None
) -> Task:
    task, freed = queues_services.task_hold(
        task_id=task_id,
        actor=actor,
        reason=reason,
        follow_up_at=follow_up_at,
        expected_version=expected_version,
    )
    _after(freed)
    return task


@transaction.atomic
def task_release(*, task_id: int, actor: Actor, reason: str = "", expected_version=None) -> Task:
    task, freed = queues_services.task_release(
        task_id=task_id, actor=actor, reason=reason, expected_version=expected_version
    )
    # The released task is offered again, but not to the person who just gave it back; only
    # then does their freed capacity go to other waiting work.
    if task.assignee_id is None and freed.user_id is not None:
        task_offer(task_id=task.pk, exclude=frozenset([freed.user_id]))
    _after(freed)
    return task


LEFT_DEPARTMENT = "Left the department: back to its queue."


@transaction.atomic
def staff_hand_back_unworkable(*, user_id: int, actor: Actor = "system") -> list[int]:
    """After someone leaves a department, what they held in its queues goes back to the team:
    tasks in hand return to the queue and are offered to others, held ones stay on hold for
    the team. Their access ends with it (they no longer see the department's tasks)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(pk=user_id)
    workable = Queue.objects.workable_by(user).values("id")
    task_ids = list(
        Task.objects.filter(
            assignee_id=user_id, status__in=(*Task.LOADED_STATUSES, Task.Status.ON_HOLD)
        )
        .exclude(queue_id__in=workable)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for task_id in task_ids:
        task, _ = queues_services.task_hand_back(
            task_id=task_id, actor=actor, reason=LEFT_DEPARTMENT
        )
        if task.status == Task.Status.QUEUED:
            task_offer(task_id=task.pk, exclude=frozenset([user_id]))
    if task_ids:
        # Their freed capacity may take waiting work of the departments they still belong to.
        offer_queued_work(user_id=user_id)
    return task_ids


@transaction.atomic
def task_resume(*, task_id: int, actor: Actor, expected_version=None) -> Task:
    task = queues_services.task_resume(
        task_id=task_id, actor=actor, expected_version=expected_version
    )
    if task.status == Task.Status.QUEUED:
        task_offer(task_id=task.pk)
        task.refresh_from_db()
    return task


@transaction.atomic
def task_reopen(*, task_id: int, actor: Actor, reason: str, expected_version=None) -> Task:
    task = queues_services.task_reopen(
        task_id=task_id, actor=actor, reason=reason, expected_version=expected_version
    )
    task_offer(task_id=task.pk)
    task.refresh_from_db()
    return task


@transaction.atomic
def task_reroute(
    *, task_id: int, actor: Actor, to_queue: Queue, reason: str, expected_version=None
) -> Task:
    """Hand a task on to another queue with a reason; it is offered there at once."""
    task, freed = queues_services.task_move(
        task_id=task_id,
        actor=actor,
        to_queue_id=to_queue.pk,
        reason=reason,
        expected_version=expected_version,
    )
    task_offer(task_id=task.pk)
    _after(freed)
    task.refresh_from_db()
    return task


@transaction.atomic
def task_reassign(
    *, task_id: int, actor: Actor, to_user, reason: str, expected_version=None
) -> Task:
    task, freed = queues_services.task_reassign(
        task_id=task_id,
        actor=actor,
        to_user=to_user,
        reason=reason,
        expected_version=expected_version,
    )
    _after(freed)
    return task


@transaction.atomic
def staff_set_availability(*, profile: StaffProfile, availability: str) -> StaffProfile:
    profile = accounts_services.staff_set_availability(profile=profile, availability=availability)
    if availability == StaffProfile.Availability.AVAILABLE:
        offer_queued_work(user_id=profile.user_id)
    return profile


# --- rule sets: the writes managers make in the admin ---------------------------------------


def next_rule_set_version() -> int:
    return (RuleSet.objects.aggregate(top=Max("version"))["top"] or 0) + 1


def rule_set_touch(*rule_set_ids: int | None) -> None:
    """Raise the revision that the routing caches key on, after any change to a set's rules."""
    ids = {pk for pk in rule_set_ids if pk is not None}
    if ids:
        RuleSet.objects.filter(pk__in=ids).update(revision=F("revision") + 1)


def _lock_rule_sets() -> None:
    # Every rule set row, in one order: two managers activating or copying at once queue up
    # here instead of racing to the one-active index or the unique version.
    list(RuleSet.objects.select_for_update().order_by("pk").values_list("pk", flat=True))


@transaction.atomic
def rule_set_activate(*, rule_set_id: int) -> tuple[RuleSet, RuleSet | None, tuple[str, ...]]:
    """Make the set the active one and retire the one before it. Returns the set, the retired
    set (or None) and the rules the engine will disable (they fail validation)."""
    _lock_rule_sets()
    rule_set = RuleSet.objects.get(pk=rule_set_id)
    if rule_set.status == RuleSet.Status.ACTIVE:
        raise ValidationError(f"{rule_set} is already the active rule set.")
    try:
        compiled = selectors.build_snapshot(rule_set.pk).compiled
    except engine.RuleSetError as error:
        raise ValidationError(f"{rule_set} cannot route tasks: {error}") from error
    previous = RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).first()
    # Retire first: the partial unique index allows one active row at every statement.
    if previous is not None:
        previous.status = RuleSet.Status.RETIRED
        previous.save(update_fields=["status"])
    rule_set.status = RuleSet.Status.ACTIVE
    rule_set.activated_at = timezone.now()
    rule_set.save(update_fields=["status", "activated_at"])
    rule_set_touch(rule_set.pk, previous.pk if previous else None)
    return rule_set, previous, tuple(compiled.problems)


@transaction.atomic
def rule_set_copy(*, rule_set_id: int, actor: Actor | None = None) -> RuleSet:
    """A new draft with the next version and a copy of every rule of the set.

    Saved one row at a time, so the audit log records each copied rule with its actor. The
    copies get new ids, so a rule in partial rollout samples a different share of tasks.
    """
    _lock_rule_sets()
    source = RuleSet.objects.get(pk=rule_set_id)
    draft = RuleSet.objects.create(
        name=source.name,
        version=next_rule_set_version(),
        status=RuleSet.Status.DRAFT,
        description=source.description,
        based_on=source,
        review_queue_id=source.review_queue_id,
        red_flag_phrases=source.red_flag_phrases,
        red_flag_task_type_id=source.red_flag_task_type_id,
        red_flag_queue_id=source.red_flag_queue_id,
        created_by=actor if actor is not None and not isinstance(actor, str) else None,
    )
    if actor is not None:
        _rule_set_event(
            draft, RuleSetEvent.Kind.CREATED, actor, note=f"Copied from v{source.version}."
        )
    for rule in source.classification_rules.order_by("order", "id"):
        rule.pk = None
        rule._state.adding = True
        rule.rule_set = draft
        rule.save()
    for rule in source.routing_rules.order_by("order", "id").prefetch_related(
        "task_types", "sites"
    ):
        task_types, sites = list(rule.task_types.all()), list(rule.sites.all())
        rule.pk = None
        rule._state.adding = True
        rule._prefetched_objects_cache = {}  # else the copy's relations read the source's
        rule.rule_set = draft
        rule.save()
        rule.task_types.set(task_types)
        rule.sites.set(sites)
    return draft


# --- rule sets: publication with four eyes, scheduled publish, rollback ----------------------
#
# A draft goes live only when a second manager approves it: the author (whoever created or
# edited it) asks, with the time it should take effect; another manager, who neither wrote nor
# asked for it, approves; at that time `rule_set_publish_due` (a job every minute) activates
# it. The request is for one revision: an edit after it voids it. A rollback to a set that was
# live before takes one manager and a reason, because it is what an emergency needs and it
# restores rules that two people already approved; it is recorded with who and why.

PUBLISHER = "system:publisher"


def _rule_set_event(rule_set: RuleSet, kind: str, actor: Actor, **fields) -> RuleSetEvent:
    values = queues_services.actor_fields(actor)
    return RuleSetEvent.objects.create(
        rule_set=rule_set,
        kind=kind,
        at=fields.pop("at", None) or timezone.now(),
        **values,
        **fields,
    )


def _clear_request(rule_set: RuleSet) -> None:
    rule_set.publish_requested_by = rule_set.publish_approved_by = None
    rule_set.publish_requested_at = rule_set.publish_approved_at = rule_set.publish_at = None
    rule_set.publish_revision = None
    rule_set.publish_note = ""
    rule_set.save(update_fields=PUBLICATION_FIELDS)


PUBLICATION_FIELDS = [
    "publish_requested_by",
    "publish_requested_at",
    "publish_at",
    "publish_note",
    "publish_revision",
    "publish_approved_by",
    "publish_approved_at",
]


def rule_set_authors(rule_set: RuleSet) -> set[int]:
    """Everyone who wrote the draft: who created it and who edited it or its rules."""
    authors = set(
        RuleSetEvent.objects.filter(
            rule_set=rule_set,
            kind__in=[RuleSetEvent.Kind.CREATED, RuleSetEvent.Kind.EDITED],
            actor__isnull=False,
        ).values_list("actor_id", flat=True)
    )
    if rule_set.created_by_id:
        authors.add(rule_set.created_by_id)
    return authors


def rule_set_record_edit(*, rule_set_id: int, actor: Actor) -> RuleSetEvent | None:
    """Note who changed a set or its rules (they become one of its authors). A change to the
    live set bypasses replay and approval: it is recorded as such, for the reviewers."""
    rule_set = RuleSet.objects.filter(pk=rule_set_id).first()
    if rule_set is None:
        return None
    live = rule_set.status == RuleSet.Status.ACTIVE
    kind = RuleSetEvent.Kind.EDITED_LIVE if live else RuleSetEvent.Kind.EDITED
    last = rule_set.events.order_by("-at", "-id").first()
    if (
        last is not None
        and last.kind == kind
        and last.actor_label == queues_services.actor_fields(actor)["actor_label"]
        and timezone.now() - last.at < EDIT_EVENT_WINDOW
    ):
        return last  # one line per sitting, not per save
    return _rule_set_event(rule_set, kind, actor)


EDIT_EVENT_WINDOW = timezone.timedelta(minutes=10)


def _compiles(rule_set: RuleSet) -> None:
    try:
        selectors.build_snapshot(rule_set.pk)
    except engine.RuleSetError as error:
        raise ValidationError(f"{rule_set} cannot route tasks: {error}") from error


@transaction.atomic
def rule_set_request_publication(
    *, rule_set_id: int, actor, publish_at: datetime | None = None, note: str = ""
) -> RuleSet:
    """The author asks for a draft to go live at `publish_at` (default: as soon as approved)."""
    _lock_rule_sets()
    rule_set = RuleSet.objects.get(pk=rule_set_id)
    if rule_set.status != RuleSet.Status.DRAFT:
        raise ValidationError(f"{rule_set} is not a draft: only a draft is published.")
    if rule_set.publication_state:
        raise ValidationError(
            f"Publication of {rule_set} is already {rule_set.publication_state}; withdraw it first."
        )
    _compiles(rule_set)
    now = timezone.now()
    rule_set.publish_requested_by = actor
    rule_set.publish_requested_at = now
    rule_set.publish_at = publish_at or now
    rule_set.publish_note = note.strip()
    rule_set.publish_revision = rule_set.revision
    rule_set.publish_approved_by = None
    rule_set.publish_approved_at = None
    rule_set.save(update_fields=PUBLICATION_FIELDS)
    _rule_set_event(
        rule_set,
        RuleSetEvent.Kind.REQUESTED,
        actor,
        note=rule_set.publish_note,
        publish_at=rule_set.publish_at,
    )
    return rule_set


@transaction.atomic
def rule_set_approve_publication(
    *, rule_set_id: int, actor, now: datetime | None = None
) -> tuple[RuleSet, bool]:
    """A second manager approves. Returns the set and whether it went live at once (its
    effective time has come); otherwise the publish job activates it at that time."""
    _lock_rule_sets()
    rule_set = RuleSet.objects.get(pk=rule_set_id)
    if rule_set.publication_state != "requested":
        raise ValidationError(f"Nobody has asked to publish {rule_set}, or it is already approved.")
    if actor.pk == rule_set.publish_requested_by_id or actor.pk in rule_set_authors(rule_set):
        raise ValidationError(
            "Four eyes: a manager who neither wrote this draft nor asked to publish it approves it."
        )
    if rule_set.revision != rule_set.publish_revision:
        raise ValidationError(
            f"{rule_set} was changed after publication was requested; the author requests again."
        )
    now = now or timezone.now()
    rule_set.publish_approved_by = actor
    rule_set.publish_approved_at = now
    rule_set.save(update_fields=["publish_approved_by", "publish_approved_at"])
    _rule_set_event(
        rule_set, RuleSetEvent.Kind.APPROVED, actor, at=now, publish_at=rule_set.publish_at
    )
    if rule_set.publish_at <= now:
        _publish(rule_set, actor=actor, now=now)
        return rule_set, True
    return rule_set, False


@transaction.atomic
def rule_set_withdraw_publication(*, rule_set_id: int, actor: Actor, reason: str = "") -> RuleSet:
    """Cancel a request, approved or not, before the set goes live."""
    _lock_rule_sets()
    rule_set = RuleSet.objects.get(pk=rule_set_id)
    if not rule_set.publication_state:
        raise ValidationError(f"There is no pending publication of {rule_set} to withdraw.")
    _clear_request(rule_set)
    _rule_set_event(rule_set, RuleSetEvent.Kind.WITHDRAWN, actor, note=reason.strip())
    return rule_set


def _publish(rule_set: RuleSet, *, actor: Actor, now: datetime) -> RuleSet | None:
    rule_set, previous, _problems = rule_set_activate(rule_set_id=rule_set.pk)
    _rule_set_event(
        rule_set,
        RuleSetEvent.Kind.PUBLISHED,
        actor,
        at=now,
        other_version=previous.version if previous else None,
    )
    if previous is not None:
        _rule_set_event(
            previous, RuleSetEvent.Kind.RETIRED, actor, at=now, other_version=rule_set.version
        )
    return previous


@transaction.atomic
def rule_set_publish_due(*, now: datetime | None = None) -> list[RuleSet]:
    """Activate the approved drafts whose time has come, earliest first (when two are due, the
    later one ends up live, as scheduled). A draft changed since its request is not published:
    its request is withdrawn. Returns the sets published."""
    now = now or timezone.now()
    _lock_rule_sets()
    due = list(
        RuleSet.objects.filter(
            status=RuleSet.Status.DRAFT,
            publish_approved_at__isnull=False,
            publish_at__lte=now,
        ).order_by("publish_at", "version")
    )
    published = []
    for rule_set in due:
        if rule_set.revision != rule_set.publish_revision:
            _clear_request(rule_set)
            _rule_set_event(
                rule_set,
                RuleSetEvent.Kind.WITHDRAWN,
                PUBLISHER,
                note="Changed after approval; not published. The author requests again.",
            )
            continue
        try:
            with transaction.atomic():
                _publish(rule_set, actor=PUBLISHER, now=now)
        except ValidationError as error:
            _clear_request(rule_set)
            _rule_set_event(
                rule_set, RuleSetEvent.Kind.WITHDRAWN, PUBLISHER, note=" ".join(error.messages)
            )
            continue
        published.append(rule_set)
    return published


@transaction.atomic
def rule_set_roll_back(*, rule_set_id: int, actor, reason: str) -> tuple[RuleSet, RuleSet | None]:
    """Make a set that was live before the active one again, at once. Pending publications
    are withdrawn, so that a scheduled draft does not undo the rollback an hour later."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the rules are rolled back."})
    _lock_rule_sets()
    target = RuleSet.objects.get(pk=rule_set_id)
    if target.status != RuleSet.Status.RETIRED:  # retired: it was live once
        raise ValidationError(f"{target} was never live: only a retired set is rolled back to.")
    now = timezone.now()
    for pending in RuleSet.objects.filter(
        status=RuleSet.Status.DRAFT, publish_requested_at__isnull=False
    ):
        _clear_request(pending)
        _rule_set_event(
            pending,
            RuleSetEvent.Kind.WITHDRAWN,
            actor,
            note=f"Withdrawn by the rollback to v{target.version}.",
        )
    target, previous, _problems = rule_set_activate(rule_set_id=target.pk)
    _rule_set_event(
        target,
        RuleSetEvent.Kind.ROLLED_BACK,
        actor,
        at=now,
        note=reason.strip(),
        other_version=previous.version if previous else None,
    )
    if previous is not None:
        _rule_set_event(
            previous,
            RuleSetEvent.Kind.RETIRED,
            actor,
            at=now,
            note=reason.strip(),
            other_version=target.version,
        )
    return target, previous


# --- batch intake ----------------------------------------------------------------------------

LOCK_STAFF_SQL = """
SELECT user_id, active_load, capacity, last_assigned_at
  FROM accounts_staffprofile
 WHERE user_id = ANY(%(ids)s)
 ORDER BY id
   FOR UPDATE
"""

OPEN_BY_PATIENT_SQL = """
SELECT DISTINCT assignee_id, patient_mrn FROM queues_task
 WHERE patient_mrn = ANY(%(mrns)s) AND patient_mrn <> '' AND assignee_id IS NOT NULL
   AND status IN ('assigned', 'in_progress', 'on_hold')
"""

ADD_LOAD_SQL = """
UPDATE accounts_staffprofile sp
   SET active_load = sp.active_load + v.units, last_assigned_at = v.at
  FROM (SELECT unnest(%(ids)s::bigint[]) AS user_id, unnest(%(units)s::int[]) AS units,
               unnest(%(at)s::timestamptz[]) AS at) v
 WHERE sp.user_id = v.user_id
"""


ROUTED_UPDATE_SQL = """
UPDATE queues_task t
   SET task_type_id = v.task_type_id, weight = v.weight, priority = v.priority,
       tags = CASE WHEN v.tags = '' THEN '{}'::varchar[] ELSE string_to_array(v.tags, ',') END,
       queue_id = v.queue_id, required_skill_id = v.required_skill_id,
       min_skill_level = v.min_skill_level, rule_set_version = v.rule_set_version,
       routed_by_rule_id = v.routed_by_rule_id, status = v.status, assignee_id = v.assignee_id,
       waiting_for_capacity = v.waiting, first_assigned_at = v.first_assigned_at,
       version = v.version, updated_at = now()
  FROM (SELECT unnest(%(id)s::bigint[]) AS id, unnest(%(task_type_id)s::bigint[]) AS task_type_id,
               unnest(%(weight)s::int[]) AS weight, unnest(%(priority)s::int[]) AS priority,
               unnest(%(tags)s::text[]) AS tags, unnest(%(queue_id)s::bigint[]) AS queue_id,
               unnest(%(required_skill_id)s::bigint[]) AS required_skill_id,
               unnest(%(min_skill_level)s::int[]) AS min_skill_level,
               unnest(%(rule_set_version)s::int[]) AS rule_set_version,
               unnest(%(routed_by_rule_id)s::int[]) AS routed_by_rule_id,
               unnest(%(status)s::text[]) AS status,
               unnest(%(assignee_id)s::bigint[]) AS assignee_id,
               unnest(%(waiting)s::bool[]) AS waiting,
               unnest(%(first_assigned_at)s::timestamptz[]) AS first_assigned_at,
               unnest(%(version)s::int[]) AS version) v
 WHERE t.id = v.id
"""


def _write_routed(tasks: list[Task]) -> None:
    """The batch's routing outcome in one UPDATE (the ORM's bulk_update builds a CASE per row
    and field, which cost more than the routing itself)."""
    columns = {
        "id": [t.pk for t in tasks],
        "task_type_id": [t.task_type_id for t in tasks],
        "weight": [t.weight for t in tasks],
        "priority": [t.priority for t in tasks],
        "tags": [",".join(t.tags) for t in tasks],
        "queue_id": [t.queue_id for t in tasks],
        "required_skill_id": [t.required_skill_id for t in tasks],
        "min_skill_level": [t.min_skill_level for t in tasks],
        "rule_set_version": [t.rule_set_version for t in tasks],
        "routed_by_rule_id": [t.routed_by_rule_id for t in tasks],
        "status": [t.status for t in tasks],
        "assignee_id": [t.assignee_id for t in tasks],
        "waiting": [t.waiting_for_capacity for t in tasks],
        "first_assigned_at": [t.first_assigned_at for t in tasks],
        "version": [t.version for t in tasks],
    }
    with connection.cursor() as cursor:
        cursor.execute(ROUTED_UPDATE_SQL, columns)


@transaction.atomic
def task_submit_batch(
    *, actor: Actor, drafts: list[dict], now: datetime | None = None
) -> list[Task]:
    """Intake → classify → route → assign for many tasks in one transaction (a clinic morning
    replayed, a FHIR Bundle): the same engine and the same rules as `task_submit`, but each
    read and write is made once for the batch instead of once per task.

    The staff rows of everyone who could take work are locked for the transaction, so the
    loads the engine sees are exact and the capacity written back can never exceed anyone's.
    Each draft is a dict of `queues.services.task_create` fields, with an optional `now` (its
    routing time, e.g. its arrival) overriding the batch's.
    """
    if not drafts:
        return []
    batch_now = now or timezone.now()
    snapshot = selectors.routing_snapshot()
    with disable_auditlog():
        tasks = Task.objects.bulk_create(
            [
                Task(
                    status=Task.Status.NEW,
                    **{k: v for k, v in draft.items() if k != "now"},
                )
                for draft in drafts
            ],
            batch_size=200,
        )
    actor_values = queues_services.actor_fields(actor)

    # Everyone who works a push queue, with their exact loads under lock.
    people = {c.staff_id: c for c in selectors.candidates()}
    with connection.cursor() as cursor:
        cursor.execute(LOCK_STAFF_SQL, {"ids": list(people)})
        for user_id, load, capacity, last in cursor.fetchall():
            people[user_id] = dataclasses.replace(
                people[user_id], active_load=load, capacity=capacity, last_assigned_at=last
            )
        mrns = sorted({t.patient_mrn for t in tasks if t.patient_mrn})
        holds: dict[int, set[str]] = {}
        if mrns:
            cursor.execute(OPEN_BY_PATIENT_SQL, {"mrns": mrns})
            for user_id, mrn in cursor.fetchall():
                holds.setdefault(user_id, set()).add(mrn)
    for user_id, keys in holds.items():
        if user_id in people:
            people[user_id] = dataclasses.replace(
                people[user_id], open_patient_keys=frozenset(keys)
            )

    pool = engine.CandidatePool(people.values())
    added: dict[int, tuple[int, datetime]] = {}
    events: list[TaskEvent] = []
    for task, draft in zip(tasks, drafts, strict=True):
        task_now = draft.get("now") or batch_now
        decision = engine.decide(
            snapshot.compiled, _facts(task, snapshot, task_now), _NOBODY, task_now
        )
        type_id, weight = snapshot.task_types.get(decision.task_type, (None, 1))
        queue = snapshot.queue(decision.queue_id)
        assignment = engine.choose_assignee(
            queue,
            decision.required_skill,
            decision.min_skill_level,
            weight,
            pool,
            task.patient_mrn,
            task_now,
        )
        explanation = _routed_explanation(decision)
        task.task_type_id = type_id
        task.weight = weight
        task.priority = decision.priority
        task.tags = sorted(set(decision.tags))
        task.queue_id = queue.id
        task.required_skill_id = snapshot.skills.get(decision.required_skill)
        task.min_skill_level = max(decision.min_skill_level, 1)
        task.rule_set_version = decision.rule_set_version
        task.routed_by_rule_id = decision.routing_rule_id
        task.status = Task.Status.QUEUED
        task.version += 1
        events.append(
            TaskEvent(
                task=task,
                kind=TaskEvent.Kind.CREATED,
                **actor_values,
            )
        )
        events.append(
            TaskEvent(
                task=task,
                kind=TaskEvent.Kind.ROUTED,
                actor=None,
                actor_label=ROUTER,
                to_queue_id=queue.id,
                rule_id=decision.routing_rule_id,
                rule_set_version=decision.rule_set_version,
                reason=_summary(decision, snapshot),
                explanation=explanation,
            )
        )
        if assignment.pull_only:
            continue
        if assignment.assignee_id is None:
            task.waiting_for_capacity = True
            events.append(
                TaskEvent(
                    task=task,
                    kind=TaskEvent.Kind.WAITING_FOR_CAPACITY,
                    actor=None,
                    actor_label=ROUTER,
                    to_queue_id=queue.id,
                    explanation=assignment.explanation_dict(),
                )
            )
            continue
        person = people[assignment.assignee_id]
        task.status = Task.Status.ASSIGNED
        task.assignee_id = person.staff_id
        task.first_assigned_at = task_now
        events.append(
            TaskEvent(
                task=task,
                kind=TaskEvent.Kind.ASSIGNED,
                actor=None,
                actor_label=ROUTER,
                to_user_id=person.staff_id,
                to_queue_id=queue.id,
                rule_set_version=decision.rule_set_version,
                explanation=assignment.explanation_dict(),
            )
        )
        units, _ = added.get(person.staff_id, (0, task_now))
        added[person.staff_id] = (units + weight, task_now)
        people[person.staff_id] = dataclasses.replace(
            person,
            active_load=person.active_load + weight,
            last_assigned_at=task_now,
            open_patient_keys=person.open_patient_keys | {task.patient_mrn}
            if task.patient_mrn
            else person.open_patient_keys,
        )
        pool = engine.CandidatePool(people.values())

    _write_routed(tasks)
    TaskEvent.objects.bulk_create(events, batch_size=500)
    if added:
        with connection.cursor() as cursor:
            ids = list(added)
            cursor.execute(
                ADD_LOAD_SQL,
                {
                    "ids": ids,
                    "units": [added[i][0] for i in ids],
                    "at": [added[i][1] for i in ids],
                },
            )
    return tasks
