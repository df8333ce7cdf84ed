"""Who may read and work the intake messages that did not become tasks.

A failed payload has no queue yet, so queue permissions cannot decide who sees it. The rule:

- Managers and compliance reviewers read every message (both roles already hold the
  model-wide `view_inboundmessage`); managers also correct and retry, compliance only reads.
- A supervisor reads and works the messages of the integration clients that serve one of
  their departments (the client's service user is a member of the department's group), and
  those that no department owns: messages without a client (the front-desk form, a mailbox
  read by `ingest_email`) and clients outside any department. Unrouted work must reach
  *some* supervisor, but a billing supervisor has no need to read the lab feed's payloads;
  scoping by the client's departments is the minimum necessary that still leaves nothing
  unowned.
- Everyone else (agents) does not learn the page exists: 404.

Once a message has become a task, its payload is shown only to those who may see the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404

from queues.models import InboundMessage, Task

# The role groups belong to the project shell (clinicdesk.roles), above this app.
ROLE_SUPERVISOR = "Supervisor"
ROLE_MANAGER = "Manager"
ROLE_COMPLIANCE = "Compliance"
# A message still "received" this long after it arrived was never parsed: a crash between
# storing and parsing. Intake normally takes milliseconds.
STUCK_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class IntakeAccess:
    may_read: bool
    may_act: bool
    # A supervisor's view: only the clients of their departments and unowned messages.
    scoped: bool
    read_only_reason: str = ""


def intake_access(user) -> IntakeAccess:
    """What the user may do on the Failed intake pages: one query for their roles."""
    if not user.is_authenticated or not user.is_active:
        return IntakeAccess(False, False, False)
    if user.is_superuser:
        return IntakeAccess(True, True, False)
    roles = set(
        Group.objects.filter(
            user=user, name__in=[ROLE_SUPERVISOR, ROLE_MANAGER, ROLE_COMPLIANCE]
        ).values_list("name", flat=True)
    )
    if ROLE_COMPLIANCE in roles:
        return IntakeAccess(
            True, False, False, "Compliance reviewers can read failed intake but not change it."
        )
    if ROLE_MANAGER in roles:
        return IntakeAccess(True, True, False)
    if ROLE_SUPERVISOR in roles:
        return IntakeAccess(True, True, True)
    return IntakeAccess(False, False, False)


def inbound_visible_to(user, access: IntakeAccess) -> QuerySet[InboundMessage]:
    """The inbound messages the user may read (see the module's docstring). One query."""
    messages = InboundMessage.objects.all()
    if not access.may_read:
        return messages.none()
    if not access.scoped:
        return messages
    departments_of_client = Group.objects.filter(
        user=OuterRef("client__user"), department__isnull=False
    )
    mine = Group.objects.filter(user=user, department__isnull=False).values("pk")
    return messages.filter(
        Q(client__isnull=True)
        | ~Exists(departments_of_client)
        | Exists(departments_of_client.filter(pk__in=mine))
    )


def not_processed(now: datetime) -> Q:
    """Failed messages, and ones stored but never parsed."""
    return Q(status=InboundMessage.Status.FAILED) | Q(
        status=InboundMessage.Status.RECEIVED, received_at__lt=now - STUCK_AFTER
    )


def is_unprocessed(inbound: InboundMessage, now: datetime) -> bool:
    return inbound.status == InboundMessage.Status.FAILED or (
        inbound.status == InboundMessage.Status.RECEIVED and inbound.received_at < now - STUCK_AFTER
    )


def get_inbound_for_user(user, access: IntakeAccess, inbound_id: int) -> InboundMessage:
    """One message the user may read, with its client; 404 otherwise."""
    inbound = (
        inbound_visible_to(user, access)
        .select_related("client", "task", "parent")
        .filter(pk=inbound_id)
        .first()
    )
    if inbound is None:
        raise Http404("No intake message with that number is visible to you.")
    return inbound


def task_visible(user, task_id: int | None) -> bool:
    return bool(task_id) and Task.objects.visible_to(user).filter(pk=task_id).exists()
