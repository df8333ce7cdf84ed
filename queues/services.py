from __future__ import annotations

from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from queues.models import Queue

QUEUE_PERMISSIONS = ("queues.view_queue", "queues.work_queue")


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
