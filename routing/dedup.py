"""Dedup across channels: a new request about a matter already open joins that task.

A DedupPolicy per task type says what "the same matter" is: the same patient and type, the
same conversation thread (`metadata["thread_key"]`: an email thread, an EHR request chain), or
either, within a window. `routing.intake.intake_submit` calls `find_original` after
classification, inside its transaction; the function first takes an advisory lock per matter,
so that two requests about one matter arriving at once are serialised: the second waits, then
sees the first committed and links to it, instead of both becoming originals.

A person who can work the queue may split a wrong merge back out (`task_split`): the
duplicate is routed as a request of its own. Anyone who works the queue, not only a
supervisor: the merge was made by a machine, the person working the original is the one who
sees that it is wrong, and the split is recorded with its reason on both timelines, like a
reroute.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.text import Truncator

from queues import services as queues_services
from queues.models import Task
from queues.services import Actor
from routing import engine, selectors, services, workflows
from routing.models import DedupPolicy

EXCERPT_CHARS = 300


def thread_key(task: Task) -> str:
    metadata = task.metadata if isinstance(task.metadata, dict) else {}
    key = metadata.get("thread_key")
    return str(key)[:200] if key else ""


def policy_for(
    task_type_code: str, snapshot: selectors.RoutingSnapshot | None = None
) -> DedupPolicy | None:
    if not task_type_code:
        return None
    if snapshot is not None:
        return snapshot.dedup_policies.get(task_type_code)
    return (
        DedupPolicy.objects.filter(task_type__code=task_type_code, is_active=True)
        .select_related("task_type")
        .first()
    )


def _matter(task: Task, policy: DedupPolicy) -> tuple[Q, list[str]]:
    """What "the same matter" is for this task under the policy: the condition on other tasks,
    and the advisory-lock keys of the matter (sorted, so every intake locks in one order)."""
    same, keys = Q(), []
    if policy.by_patient and task.patient_mrn:
        same |= Q(
            patient_mrn=task.patient_mrn,
            patient_mrn__nonblank=True,  # the generic plan may then use `task_by_patient`
            task_type_id=policy.task_type_id,
        )
        keys.append(f"dedup:patient:{policy.task_type_id}:{task.patient_mrn}")
    thread = thread_key(task)
    if policy.by_thread and thread:
        # The thread's first message may itself be the task (its id is the thread's key).
        same |= Q(metadata__thread_key=thread) | Q(channel=task.channel, external_id=thread)
        keys.append(f"dedup:thread:{thread}")
    return same, sorted(keys)


def _lock(keys: list[str]) -> None:
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def find_original(
    *,
    task: Task,
    task_type_code: str,
    now: datetime,
    snapshot: selectors.RoutingSnapshot | None = None,
) -> Task | None:
    """The open task the new one duplicates under the type's DedupPolicy, or None.

    Call it inside the transaction that creates the task: it holds the matter's lock until that
    transaction ends, so a concurrent request about the same matter finds this one."""
    policy = policy_for(task_type_code, snapshot)
    if policy is None:
        return None
    same, keys = _matter(task, policy)
    if not keys:
        return None
    _lock(keys)
    since = now - timedelta(hours=policy.window_hours)
    original_id = (
        Task.objects.open()
        .filter(same, created_at__gte=since)
        .exclude(pk=task.pk)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
        .first()
    )
    # Most requests have no original: only then is the whole row read.
    return None if original_id is None else Task.objects.get(pk=original_id)


def _content(task: Task, attachments: int) -> str:
    lines = [task.subject]
    if task.body.strip():
        lines.append(Truncator(task.body.strip()).chars(EXCERPT_CHARS))
    if attachments:
        lines.append(f"{attachments} attachment{'s' if attachments != 1 else ''} (on #{task.pk}).")
    return "\n".join(lines)


def link_duplicate(*, task: Task, original: Task, decision: engine.Decision, actor: Actor) -> Task:
    """Close the new task as a duplicate of the original and tell the original's timeline:
    "Same request also arrived by voicemail at 9:12 AM on Tue Mar 3 (#58)", with its content."""
    snapshot = selectors.routing_snapshot()
    type_id, weight = snapshot.task_types.get(decision.task_type, (None, 1))
    thread = thread_key(task)
    matched_by = "thread" if thread and thread == thread_key(original) else "patient_and_type"
    moment = timezone.localtime(task.received_at or task.created_at)
    arrived = (
        f"Same request also arrived {workflows.arrived_by(task.channel)} at "
        f"{date_format(moment, 'g:i A')} on {date_format(moment, 'D M j')} (#{task.pk})"
    )
    classification = {
        "task_type": decision.task_type,
        "priority": decision.priority,
        "classification_rule_ids": list(decision.classification_rule_ids),
        "rule_set_version": decision.rule_set_version,
    }
    task, _ = queues_services.task_link_duplicate(
        task_id=task.pk,
        original_id=original.pk,
        actor=actor,
        task_type_id=type_id,
        weight=weight,
        priority=decision.priority,
        tags=list(decision.tags),
        explanation={
            "headline": f"Linked to #{original.pk} as a duplicate",
            "original_id": original.pk,
            "matched_by": matched_by,
            **classification,
        },
        original_note=_content(task, task.attachments.count()),
        original_explanation={
            "headline": arrived,
            "duplicate_id": task.pk,
            "channel": task.channel,
            "matched_by": matched_by,
        },
    )
    return Task.objects.select_related("duplicate_of").get(pk=task.pk)


@transaction.atomic
def task_split(
    *, task_id: int, actor: Actor, reason: str, expected_version: int | None = None
) -> Task:
    """A wrongly merged request becomes work of its own: unlinked, then routed by the rules as
    any new request is, and its workflow follow-ups created."""
    task = queues_services.task_split_duplicate(
        task_id=task_id, actor=actor, reason=reason, expected_version=expected_version
    )
    now = timezone.now()
    services.task_route(task=task, now=now)
    task.refresh_from_db()
    workflows.on_created(task=task, actor=actor, now=now)
    task.refresh_from_db()
    return task
