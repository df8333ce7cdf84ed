"""Who read which task: django-auditlog access entries, and the actor of auditlog's field diffs.

Here, in `queues`, because the task page and the API record their reads (the compliance audit
pages in `clinicdesk.audit` read them back); nothing here knows of those pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from auditlog.cid import get_cid
from auditlog.context import auditlog_value
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from clinicdesk.audit.actor import audit_context
from queues.models import IntegrationClient, Task

User = get_user_model()

# How a task was read: the ways the application shows a task to someone.
VIA = {
    "page": "Task page",
    "api": "API",
    "export": "Export",
    "audit": "Audit history",
    # Under an emergency access grant ("break the glass"): flagged in the task's history.
    "emergency": "Emergency access",
}


def actor_parts(actor) -> tuple[object | None, str]:
    """(user or None, label) for a person, an integration client or a `system:<job>` label.
    A client acts as its service user, so its entries also carry that user."""
    if isinstance(actor, IntegrationClient):
        return actor.user, actor.actor_label
    if isinstance(actor, User):
        return actor, actor.get_username()
    if isinstance(actor, str) and actor:
        return None, actor
    raise ValueError(f"An audit record needs an actor, not {actor!r}")


@contextlib.contextmanager
def audit_actor(actor) -> Iterator[None]:
    """Name who acts for the field diffs django-auditlog writes inside the block: a person,
    an integration client, or a job (`system:<job>`). Requests get the signed-in person from
    the middleware; jobs, commands and API calls wrap their work in this."""
    user, label = actor_parts(actor)
    with audit_context({"actor": user, "additional_data": {"actor": label}}):
        yield


def _request_context() -> dict:
    try:
        return auditlog_value.get()
    except LookupError:
        return {}


def record_task_access(actor, task: Task | int, *, via: str, detail: dict | None = None) -> None:
    """Record that `actor` read the task (`via`: page, api, export, audit, emergency). One
    INSERT. `detail` adds to the entry's additional data (an emergency read names its grant)."""
    record_tasks_access(
        actor, [task.pk if isinstance(task, Task) else task], via=via, detail=detail
    )


def record_tasks_access(
    actor, task_ids: Iterable[int], *, via: str, detail: dict | None = None
) -> int:
    """Record that `actor` read each of the tasks, in one INSERT. Returns how many."""
    if via not in VIA:
        raise ValueError(f"Unknown way of reading a task: {via!r}")
    user, label = actor_parts(actor)
    context = _request_context()
    content_type = ContentType.objects.get_for_model(Task)
    cid = get_cid()
    entries = [
        LogEntry(
            content_type=content_type,
            object_pk=str(task_id),
            object_id=task_id,
            object_repr=f"Task #{task_id}",
            action=LogEntry.Action.ACCESS,
            changes_text="",
            actor=user,
            actor_email=getattr(user, "email", None) or None,
            cid=cid,
            remote_addr=context.get("remote_addr"),
            additional_data={**(detail or {}), "via": via, "actor": label},
        )
        for task_id in dict.fromkeys(task_ids)
    ]
    # bulk_create: one statement, and auditlog's context hook (which would overwrite
    # `additional_data` inside an `audit_actor` block) does not run; the actor is explicit.
    LogEntry.objects.bulk_create(entries)
    return len(entries)
