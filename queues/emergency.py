"""Emergency access ("break the glass"): a person reads a task outside their departments after
giving a reason, for a limited time, read-only.

Here, in `queues`, the grant itself and the reads made under it. The project shell writes the
audit event and alerts compliance around `emergency_access_open`
(`clinicdesk.audit.emergency.emergency_access_request`), so that the three happen together.

A number that names no task is answered truthfully ("no task has that number"), but only after
the request and its reason are recorded, exactly as for a real task, and compliance is alerted
either way. Existence is therefore never confirmed without a recorded, alerted reason: probing
numbers costs the same trace as opening a task. Pretending to grant access to a task that
does not exist would only mislead the person who mistyped a number.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from queues.access import record_task_access
from queues.models import EmergencyAccess, Task

PERMISSION = "queues.add_emergencyaccess"
REASON_MIN_LENGTH = 15
REASON_MAX_LENGTH = 2000


class EmergencyAccessNotNeeded(Exception):
    """The person can already open the task: nothing to grant, nothing recorded."""


def clean_reason(value: str) -> str:
    """The reason as recorded (whitespace runs collapsed), or a ValidationError saying what
    is missing. The form and the service both use it."""
    reason = " ".join((value or "").split())
    if len(reason) < REASON_MIN_LENGTH:
        raise ValidationError(
            f"Say why you need this task now, in at least {REASON_MIN_LENGTH} characters "
            "(for example the patient's call you are answering). It is recorded and "
            "compliance is told.",
            code="reason_too_short",
        )
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationError(
            f"Keep the reason under {REASON_MAX_LENGTH} characters.", code="reason_too_long"
        )
    return reason


def emergency_access_open(
    *,
    user,
    task_number: int,
    reason: str,
    ip: str | None = None,
    now: datetime | None = None,
) -> EmergencyAccess:
    """Record `user`'s request to read task `task_number` and, when the task exists, grant
    read-only access to it for EMERGENCY_ACCESS_HOURS. Raises EmergencyAccessNotNeeded when
    the user can already open the task, ValidationError for a missing reason."""
    reason = clean_reason(reason)
    now = now or timezone.now()
    with transaction.atomic():
        if Task.objects.visible_to(user).filter(pk=task_number).exists():
            raise EmergencyAccessNotNeeded(f"You can already open task #{task_number}.")
        task_id = Task.objects.filter(pk=task_number).values_list("pk", flat=True).first()
        hours = timedelta(hours=settings.EMERGENCY_ACCESS_HOURS)
        return EmergencyAccess.objects.create(
            user=user,
            task_id=task_id,
            task_number=task_number,
            reason=reason,
            granted_at=now,
            # A request for no task grants nothing: it ends as it starts.
            expires_at=now + hours if task_id is not None else now,
            ip=ip,
        )


def record_emergency_read(user, task: Task, *, read: str) -> bool:
    """Record a read of a task opened under an emergency access grant (`read`: page,
    attachment), flagged in the task's audit history. False, and nothing recorded, when the
    task was not opened under a grant."""
    grant_id = getattr(task, "emergency_grant_id", None)
    if grant_id is None:
        return False
    record_task_access(user, task, via="emergency", detail={"read": read, "grant": grant_id})
    return True
