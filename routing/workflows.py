"""Workflow follow-ups and replies: the work one request sets off for other teams."""

from __future__ import annotations

from datetime import datetime

from queues import services as queues_services
from queues.intake.draft import TaskDraft
from queues.models import InboundMessage, Task
from queues.services import Actor


def reply_join(
    *, task: Task, draft: TaskDraft, actor: Actor, inbound: InboundMessage | None
) -> Task:
    """A reply joins the task it answers as a comment (reopening it when resolved)."""
    queues_services.task_comment(task_id=task.pk, actor=actor, text=draft.body or draft.subject)
    return Task.objects.get(pk=task.pk)


def on_created(*, task: Task, actor: Actor, now: datetime) -> list[Task]:
    return []


def resume_waiting_for(*, task: Task, actor: Actor) -> list[Task]:
    return []
