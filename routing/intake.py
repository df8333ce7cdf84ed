"""Intake's one orchestrating function: a parsed draft becomes a routed task, exactly once.

Every channel (the REST API, FHIR, email, phone, fax, the front-desk form) stores its raw
payload first (`queues.intake.store.inbound_store`), parses it into a `TaskDraft` with its
adapter, and hands the draft here. This module then, in one transaction:

1. returns the existing task when the same `(channel, external_id)` was seen before
   (concurrent resends wait on one advisory lock, so exactly one of them creates);
2. joins a reply (email In-Reply-To / References) to the task it answers, as a comment;
3. classifies, and links a request about a matter already open (DedupPolicy) to that task
   instead of creating a second piece of work;
4. otherwise routes and assigns the new task, and spawns its workflow follow-ups;
5. either way, resumes a task on hold for the same patient and matter (`routing.workflows`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from queues import intake as adapters
from queues import services as queues_services
from queues.intake import store
from queues.intake.draft import IntakeError, TaskDraft
from queues.models import InboundMessage, Task
from queues.services import Actor
from routing import dedup, engine, selectors, services, workflows


@dataclasses.dataclass(frozen=True)
class IntakeResult:
    task: Task
    created: bool
    outcome: str  # one of InboundMessage.Status: parsed, resent, duplicate, reply

    @property
    def duplicate_of(self) -> Task | None:
        return self.task.duplicate_of


@dataclasses.dataclass(frozen=True)
class _Opening:
    existing_id: int | None  # the task this request already became (a resend)
    fingerprint: tuple | None  # the active rule set's FINGERPRINT_SQL row
    task_id: int  # drawn for the new task (unused by a resend: a gap in the ids)
    patient_has_held_work: bool


def _open(draft: TaskDraft) -> _Opening:
    """What every intake reads first, in one round trip (psycopg's pipeline mode sends the
    statements together, and PostgreSQL runs them in order):

    - with an external id, serialise resends of one request (different requests never wait
      on each other), then the id of the task it already became, if any: two statements, as
      the check must see what the lock's previous holder committed;
    - the rule set's fingerprint (the routing snapshot is rebuilt only when it changed);
    - a new task id;
    - whether the patient has work on hold (that a new item may wake up).
    """
    cursors = []

    def run(sql: str, params=None):
        cursor = connection.cursor()
        cursor.execute(sql, params)
        cursors.append(cursor)
        return cursor

    try:
        with services.pipeline():
            if draft.external_id:
                run(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [f"intake:{draft.channel}:{draft.external_id}"],
                )
                check = run(
                    "SELECT id FROM queues_task WHERE channel = %s AND external_id = %s",
                    [draft.channel, draft.external_id],
                )
            fingerprint = run(selectors.FINGERPRINT_SQL, [None])
            task_id = run(services.NEXT_TASK_ID_SQL)
            if draft.patient_mrn:
                held = run(workflows.HELD_WORK_SQL, [draft.patient_mrn, Task.Status.ON_HOLD])
        existing = check.fetchone() if draft.external_id else None
        return _Opening(
            existing_id=existing[0] if existing else None,
            fingerprint=fingerprint.fetchone(),
            task_id=task_id.fetchone()[0],
            patient_has_held_work=bool(held.fetchone()[0]) if draft.patient_mrn else False,
        )
    finally:
        for cursor in cursors:
            cursor.close()


def _classify(task: Task, snapshot: selectors.RoutingSnapshot, now: datetime) -> engine.Decision:
    return engine.decide(
        snapshot.compiled, services._facts(task, snapshot, now), services._NOBODY, now
    )


@transaction.atomic
def intake_submit(
    *,
    draft: TaskDraft,
    actor: Actor,
    inbound: InboundMessage | None = None,
    now: datetime | None = None,
) -> IntakeResult:
    now = now or timezone.now()
    opening = _open(draft)
    if opening.existing_id is not None:
        existing = Task.objects.select_related("duplicate_of").get(pk=opening.existing_id)
        _finish(inbound, InboundMessage.Status.RESENT, existing)
        return IntakeResult(existing, False, InboundMessage.Status.RESENT)

    if draft.in_reply_to:
        original = Task.objects.filter(
            channel=draft.channel, external_id__in=draft.in_reply_to
        ).first()
        if original is not None:
            task = workflows.reply_join(task=original, draft=draft, actor=actor, inbound=inbound)
            _finish(inbound, InboundMessage.Status.REPLY, task)
            return IntakeResult(task, False, InboundMessage.Status.REPLY)

    # Decide before writing anything: the new task and its events are then inserted in their
    # final state (`task_insert_routed`), a handful of statements instead of a dozen.
    snapshot = selectors.snapshot_for(opening.fingerprint)
    task = services.task_new(task_id=opening.task_id, **draft.task_fields())
    decision = _classify(task, snapshot, now)
    original = (
        None
        if decision.needs_review
        else dedup.find_original(
            task=task, task_type_code=decision.task_type, now=now, snapshot=snapshot
        )
    )
    if original is not None:
        queues_services.task_insert_new(task=task, actor=actor)
        _store_attachments(draft, task, inbound)
        task = dedup.link_duplicate(task=task, original=original, decision=decision, actor=actor)
        # The missing documents a held task waits for land on it, and wake it up.
        workflows.resume_waiting_for(
            task=task, actor=actor, patient_has_held_work=opening.patient_has_held_work
        )
        _finish(inbound, InboundMessage.Status.DUPLICATE, task)
        return IntakeResult(task, True, InboundMessage.Status.DUPLICATE)

    task = services.task_insert_routed(
        task=task, decision=decision, snapshot=snapshot, actor=actor, now=now
    )
    _store_attachments(draft, task, inbound)
    workflows.on_created(task=task, actor=actor, now=now, snapshot=snapshot)
    workflows.resume_waiting_for(
        task=task, actor=actor, patient_has_held_work=opening.patient_has_held_work
    )
    _finish(inbound, InboundMessage.Status.PARSED, task)
    return IntakeResult(task, True, InboundMessage.Status.PARSED)


def _store_attachments(draft: TaskDraft, task: Task, inbound: InboundMessage | None) -> None:
    # The draft's files (a fax's PDF, a voicemail's audio, an email's attachments) are stored
    # here, once, with the message and the task; adapters only put them in the draft.
    if draft.attachments:
        store.attachments_store(drafts=draft.attachments, task=task, inbound=inbound)


def _finish(inbound: InboundMessage | None, status: str, task: Task) -> None:
    if inbound is not None:
        store.inbound_mark(
            inbound=inbound,
            status=status,
            task=task,
            external_id=task.external_id,
            channel=task.channel,
        )


def intake_fail(*, inbound: InboundMessage, error: IntakeError) -> InboundMessage:
    """Keep a payload that could not become a task, with its error, for the Failed intake page."""
    return store.inbound_mark(inbound=inbound, status=InboundMessage.Status.FAILED, error=error)


def intake_receive(
    *,
    channel: str,
    payload: bytes,
    content_type: str,
    actor: Actor,
    client=None,
    headers: dict | None = None,
    parent: InboundMessage | None = None,
    sender: str = "",
) -> tuple[InboundMessage, IntakeResult | None]:
    """Store a payload raw, parse it with its channel's adapter and submit it.

    Returns the stored message and the result; when the payload cannot become a task, the
    result is None and the message keeps the error (`inbound.error_fields` names the fields)
    for the Failed intake page. Call it outside a transaction: the raw row commits first.
    """
    inbound = store.inbound_store(
        channel=channel,
        payload=payload,
        content_type=content_type,
        client=client,
        headers=headers,
        sender=sender,
    )
    if parent is not None:
        inbound.parent = parent
        inbound.save(update_fields=["parent"])
    return inbound, intake_process(inbound=inbound, actor=actor)


def intake_process(*, inbound: InboundMessage, actor: Actor) -> IntakeResult | None:
    """Parse a stored message and submit its draft; on failure keep the error with it.

    Also what the Failed intake page's Retry calls, after a supervisor's correction."""
    try:
        draft = adapters.parse(inbound)
        return intake_submit(draft=draft, actor=actor, inbound=inbound)
    except IntakeError as error:
        intake_fail(inbound=inbound, error=error)
        return None
    except ValidationError as error:
        intake_fail(inbound=inbound, error=IntakeError(_validation_errors(error)))
        return None


def _validation_errors(error: ValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {
            field: [str(m) for e in errors for m in e.messages]
            for field, errors in error.error_dict.items()
        }
    return {"non_field_errors": list(error.messages)}
