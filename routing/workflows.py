"""Workflow follow-ups and replies: the work one request sets off for other teams.

- A WorkflowTemplate says: when a task of type X is created (through intake) or resolved,
  create tasks of types Y, Z for the same patient, each routed by the routing rules for its
  type; a step may wait until another step of the same run is resolved (`blocked_by`: visible,
  not claimable). A template fires once per trigger task: a WorkflowRun row, unique on
  (template, trigger task), is claimed first.
- When a task is resolved, the tasks that waited for it are unblocked and offered.
- A reply (email In-Reply-To / References) joins the task it answers as a comment, reopening
  it when resolved and resuming it when on hold.
- A task on hold for the same patient and matter resumes when a new inbound item arrives: the
  same type, or a workflow relative (its parent, or a sibling under the same parent, has the
  new item's type), or the task the item was linked to as a duplicate.

`routing.intake` calls `on_created`, `resume_waiting_for` and `reply_join`;
`routing.services.task_resolve` calls `on_resolved`, in its own transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from queues import services as queues_services
from queues.intake import store
from queues.intake.draft import TaskDraft
from queues.models import Channel, InboundMessage, Task
from queues.services import Actor
from routing import engine, selectors, services
from routing.models import WorkflowStep, WorkflowTemplate

logger = logging.getLogger(__name__)

WORKFLOW = "system:workflow"


class WorkflowError(ValueError):
    """A template whose steps cannot be created in any order."""


def steps_in_order(steps: Sequence[tuple[Hashable, Hashable | None]]) -> list[int]:
    """The positions of a template's steps in the order to create them, each after the step it
    waits for. A step is (its task type, the type of the step it waits for, or None).

    Raises WorkflowError naming the problem: a type used twice, a wait for a type that is not
    a step of the template, steps waiting for each other in a circle. The admin validates a
    template with this same function, so what saves is what runs."""
    types = [step_type for step_type, _ in steps]
    twice = sorted({str(t) for t in types if types.count(t) > 1})
    if twice:
        raise WorkflowError(f"Each type may be one step only; {', '.join(twice)} is there twice.")
    position = {step_type: index for index, step_type in enumerate(types)}
    for step_type, blocker in steps:
        if blocker is not None and blocker not in position:
            raise WorkflowError(
                f"The {step_type} step waits for {blocker}, which is not a step of this "
                "template: add that step or clear the wait."
            )
        if blocker == step_type:
            raise WorkflowError(f"The {step_type} step cannot wait for itself.")
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(steps):
        ready = [
            index
            for index, (_, blocker) in enumerate(steps)
            if index not in placed and (blocker is None or position[blocker] in placed)
        ]
        if not ready:
            circle = ", ".join(str(types[i]) for i in range(len(steps)) if i not in placed)
            raise WorkflowError(f"The steps {circle} wait for each other in a circle.")
        order.extend(ready)
        placed.update(ready)
    return order


# --- spawning follow-ups ----------------------------------------------------------------------


CLAIM_RUN_SQL = """
INSERT INTO routing_workflowrun (template_id, trigger_task_id, created_at)
VALUES (%s, %s, %s)
ON CONFLICT ON CONSTRAINT workflowrun_once_per_task DO NOTHING
RETURNING id
"""


def _claim_run(template_id: int, task_id: int, now: datetime) -> bool:
    """True for the one call that records the run; every later call (a retry, a resolve after
    a reopen, a concurrent transaction) gets False and creates nothing."""
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_RUN_SQL, [template_id, task_id, now])
        return cursor.fetchone() is not None


def _templates(
    task: Task, trigger: str, snapshot: selectors.RoutingSnapshot | None = None
) -> list[WorkflowTemplate]:
    if task.task_type_id is None:
        return []
    if snapshot is not None:
        return snapshot.workflow_templates.get((task.task_type_id, trigger), [])
    steps = WorkflowStep.objects.select_related("task_type").order_by("order", "id")
    return list(
        WorkflowTemplate.objects.filter(
            trigger_type_id=task.task_type_id, trigger=trigger, is_active=True
        )
        .prefetch_related(Prefetch("steps", queryset=steps))
        .order_by("name", "id")
    )


def _route_as(
    task: Task, type_code: str, snapshot: selectors.RoutingSnapshot, now: datetime
) -> None:
    """Route a follow-up whose type the workflow decided: the routing rules run for that type
    (classification rules do not, the type is not in question), then it is offered."""
    type_spec = snapshot.spec.task_types.get(type_code)
    if type_spec is None:
        # A type the active rules do not know (switched off): a person classifies it.
        services.task_route(task=task, now=now, snapshot=snapshot)
        return
    facts = services._facts(task, snapshot, now)
    route = engine.route_classified(
        snapshot.compiled, facts, type_code, type_spec.default_priority, ()
    )
    type_id, weight = snapshot.task_types[type_code]
    queue = snapshot.queue(route.queue_id)
    if route.routing_rule_id:
        how = {"by": "rule", "rule_id": route.routing_rule_id, "rule_name": route.routing_rule_name}
    else:
        how = {"by": "default", "text": f"default queue of {type_spec.name}"}
    queues_services.task_classify(
        task_id=task.pk,
        actor=services.ROUTER,
        task_type_id=type_id,
        weight=weight,
        priority=route.priority,
        tags=[],
        queue_id=route.queue_id,
        required_skill_id=snapshot.skills.get(route.required_skill),
        min_skill_level=max(route.min_skill_level, 1),
        rule_id=route.routing_rule_id,
        rule_set_version=snapshot.version,
        explanation={
            "task_type": type_code,
            "route": {
                **how,
                "queue_id": queue.id,
                "queue": queue.name,
                "required_skill": route.required_skill or None,
                "min_skill_level": route.min_skill_level or None,
            },
            "priority": {"final": route.priority, "why": "the default of the follow-up's type"},
            "rule_set_version": snapshot.version,
        },
        reason=f"Follow-up classified as {type_spec.name} by its workflow; routed to {queue.name}.",
    )
    services.task_offer(task_id=task.pk, now=now)


def _spawn(template: WorkflowTemplate, trigger: Task, actor: Actor, now: datetime) -> list[Task]:
    steps = list(template.steps.all())
    try:
        order = steps_in_order([(s.task_type_id, s.blocked_until_id) for s in steps])
    except WorkflowError as error:
        # The admin refuses such a template; one written around it must not fail the resolve.
        logger.error("Workflow template %s not run for task %s: %s", template.pk, trigger.pk, error)
        return []
    if not _claim_run(template.pk, trigger.pk, now):
        return []
    snapshot = selectors.routing_snapshot()
    by_type: dict[int, Task] = {}
    for index in order:
        step = steps[index]
        blocker = by_type.get(step.blocked_until_id) if step.blocked_until_id else None
        child = queues_services.task_create(
            actor=WORKFLOW,
            channel=trigger.channel,
            subject=step.subject or f"{step.task_type.name}: {trigger.subject}",
            body=(
                f"Follow-up of task #{trigger.pk} ({trigger.subject}), created by the "
                f"workflow “{template.name}”."
            ),
            site_id=trigger.site_id,
            patient_mrn=trigger.patient_mrn,
            patient_name=trigger.patient_name,
            patient_birth_date=trigger.patient_birth_date,
            request_type=step.task_type.code,
            source_system=trigger.source_system,
            metadata={
                "workflow": {
                    "template_id": template.pk,
                    "template": template.name,
                    "step_id": step.pk,
                    "trigger_task_id": trigger.pk,
                }
            },
            parent_id=trigger.pk,
            blocked_by_id=blocker.pk if blocker else None,
            reason=f"Follow-up of #{trigger.pk}, by the workflow “{template.name}”.",
        )
        _route_as(child, step.task_type.code, snapshot, now)
        child.refresh_from_db()
        waits = f", waiting until #{blocker.pk} is resolved" if blocker else ""
        queues_services.task_follow_up_record(
            task_id=trigger.pk,
            child=child,
            actor=WORKFLOW,
            explanation={
                "headline": f"Follow-up #{child.pk} created: {step.task_type.name}{waits}",
                "child_id": child.pk,
                "template_id": template.pk,
                "template": template.name,
                "blocked_by": blocker.pk if blocker else None,
            },
        )
        by_type[step.task_type_id] = child
    return list(by_type.values())


def _fire(
    task: Task,
    trigger: str,
    actor: Actor,
    now: datetime,
    snapshot: selectors.RoutingSnapshot | None = None,
) -> list[Task]:
    spawned: list[Task] = []
    for template in _templates(task, trigger, snapshot):
        spawned.extend(_spawn(template, task, actor, now))
    return spawned


def on_created(
    *,
    task: Task,
    actor: Actor,
    now: datetime,
    snapshot: selectors.RoutingSnapshot | None = None,
) -> list[Task]:
    """The follow-ups of a task that intake just created (or a split just made its own).

    A follow-up a workflow created does not set off "when created" templates itself: a
    template creating its own trigger type would otherwise never end."""
    if task.parent_id is not None and (task.metadata or {}).get("workflow"):
        return []
    return _fire(task, WorkflowTemplate.Trigger.CREATED, actor, now, snapshot)


@transaction.atomic(savepoint=False)
def on_resolved(*, task: Task, actor: Actor, now: datetime | None = None) -> list[Task]:
    """After a resolve, in its transaction: the tasks that waited for this one are unblocked
    and offered, then the "when resolved" templates of its type fire. Returns the new tasks."""
    now = now or timezone.now()
    waiting = list(
        Task.objects.filter(blocked_by_id=task.pk).order_by("id").values_list("pk", flat=True)
    )
    for dependant_id in waiting:
        if queues_services.task_unblock(task_id=dependant_id, actor=WORKFLOW, blocker_id=task.pk):
            services.task_offer(task_id=dependant_id, now=now)
    return _fire(task, WorkflowTemplate.Trigger.RESOLVED, actor, now)


# --- replies and waiting tasks ------------------------------------------------------------------


def _resume(task_id: int, actor: Actor, reason: str) -> Task:
    task = queues_services.task_resume(task_id=task_id, actor=actor, reason=reason)
    if task.status == Task.Status.QUEUED:
        services.task_offer(task_id=task.pk)
        task.refresh_from_db()
    return task


def _sender(draft: TaskDraft, inbound: InboundMessage | None) -> str:
    metadata = draft.metadata if isinstance(draft.metadata, dict) else {}
    email = metadata.get("email") if isinstance(metadata.get("email"), dict) else {}
    sender = email.get("from") or metadata.get("from") or metadata.get("sender")
    if sender:
        return str(sender)[:200]
    return inbound.sender if inbound is not None else ""


@transaction.atomic(savepoint=False)
def reply_join(
    *, task: Task, draft: TaskDraft, actor: Actor, inbound: InboundMessage | None
) -> Task:
    """A reply joins the task it answers as a comment, with its attachments; a resolved task
    is reopened ("Reply received") and a held one resumed. A resend of the same reply (the
    same message id) adds nothing."""
    if task.status == Task.Status.DUPLICATE and task.duplicate_of_id:
        task = Task.objects.get(pk=task.duplicate_of_id)  # the matter lives on the original
    parts = [draft.subject.strip(), draft.body.strip()]
    event = queues_services.task_reply_record(
        task_id=task.pk,
        actor=actor,
        text="\n\n".join(part for part in parts if part),
        sender=_sender(draft, inbound),
        message_id=draft.external_id,
    )
    if event is None:
        return Task.objects.get(pk=task.pk)
    if draft.attachments:
        store.attachments_store(drafts=draft.attachments, task=task, inbound=inbound)
    if inbound is not None:
        store.attachments_link(inbound=inbound, task=task)
    task = Task.objects.get(pk=task.pk)
    if task.status == Task.Status.RESOLVED:
        return services.task_reopen(task_id=task.pk, actor=actor, reason="Reply received")
    if task.status == Task.Status.ON_HOLD:
        return _resume(task.pk, actor, "Resumed: reply received")
    return task


def _same_matter(task: Task) -> Q:
    matter = Q(pk__in=[])
    if task.patient_mrn and task.task_type_id:
        type_id = task.task_type_id
        matter = Q(patient_mrn=task.patient_mrn, patient_mrn__nonblank=True) & (
            Q(task_type_id=type_id)
            | Q(parent__task_type_id=type_id)
            | Q(parent__children__task_type_id=type_id)
        )
    if task.duplicate_of_id:
        matter |= Q(pk=task.duplicate_of_id)
    return matter


# `patient_mrn <> ''` follows from the first condition, but a prepared statement's generic
# plan cannot see it: spelled out, the partial index `task_by_patient` answers.
HELD_WORK_SQL = """
SELECT EXISTS (SELECT 1 FROM queues_task
                WHERE patient_mrn = %s AND patient_mrn <> '' AND status = %s)
"""


def _patient_has_held_work(patient_mrn: str) -> bool:
    if not patient_mrn:
        return False
    with connection.cursor() as cursor:
        cursor.execute(HELD_WORK_SQL, [patient_mrn, Task.Status.ON_HOLD])
        return cursor.fetchone()[0]


@transaction.atomic(savepoint=False)
def resume_waiting_for(
    *, task: Task, actor: Actor, patient_has_held_work: bool | None = None
) -> list[Task]:
    """Resume the tasks on hold for the same patient and matter as a new inbound item: "Resumed:
    new documents arrived by fax (#N)". Returns the resumed tasks. `patient_has_held_work`:
    the answer of HELD_WORK_SQL for the task's patient when the caller has read it already."""
    if patient_has_held_work is None:
        patient_has_held_work = _patient_has_held_work(task.patient_mrn)
    if not task.duplicate_of_id and not patient_has_held_work:
        return []  # the common case, answered by one indexed probe
    held = list(
        Task.objects.filter(_same_matter(task), status=Task.Status.ON_HOLD)
        .exclude(pk=task.pk)
        .order_by("id")
        .values_list("pk", flat=True)
        .distinct()
    )
    if not held:
        return []
    documents = task.channel == Channel.FAX or task.attachments.exists()
    what = "new documents" if documents else "a new message"
    reason = f"Resumed: {what} arrived {arrived_by(task.channel)} (#{task.pk})"
    return [_resume(task_id, actor, reason) for task_id in held]


# How a timeline says where an item came from: "also arrived by voicemail".
ARRIVED_BY = {
    Channel.PORTAL: "through the patient portal",
    Channel.EMAIL: "by email",
    Channel.PHONE: "by voicemail",
    Channel.FAX: "by fax",
    Channel.FHIR: "from the EHR",
    Channel.API: "through the API",
    Channel.FORM: "at the front desk",
}


def arrived_by(channel: str) -> str:
    return ARRIVED_BY.get(channel, f"by {channel}")
