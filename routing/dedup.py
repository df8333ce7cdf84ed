"""Dedup across channels: a new request about a matter already open joins that task."""

from __future__ import annotations

from datetime import datetime

from queues.models import Task
from queues.services import Actor
from routing import engine


def find_original(*, task: Task, task_type_code: str, now: datetime) -> Task | None:
    """The open task the new one duplicates under the type's DedupPolicy, or None."""
    return None


def link_duplicate(*, task: Task, original: Task, decision: engine.Decision, actor: Actor) -> Task:
    raise NotImplementedError
