"""Recording what the timeline and auditlog's field diffs do not see: who read a task, who
signed in or out or failed to, who was refused, and which exports were made.

Reads of a task are django-auditlog access entries (`LogEntry.Action.ACCESS`) for the task,
so a task's changes and its reads sit in one log under one hash chain. Sign-ins, sign-outs,
idle logoffs, denials and exports are `AuditEvent` rows.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model

from clinicdesk.audit.models import AuditEvent
from queues.access import (  # noqa: F401  (re-exported for the audit pages and tests)
    VIA,
    actor_parts,
    audit_actor,
    record_task_access,
    record_tasks_access,
)

logger = logging.getLogger(__name__)

User = get_user_model()


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_event_record(
    *,
    kind: str,
    actor=None,
    username: str = "",
    request=None,
    status_code: int | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    """Write one AuditEvent (sign-in, sign-out, failure, idle logoff, denial, export)."""
    user, label = (None, username) if actor is None else actor_parts(actor)
    return AuditEvent.objects.create(
        kind=kind,
        user=user,
        actor_label=(label or "anonymous")[:150],
        ip=client_ip(request),
        method=(request.method or "")[:8] if request is not None else "",
        path=request.path[:300] if request is not None else "",
        status_code=status_code,
        detail=detail or {},
    )


# --- Sign-in receivers -----------------------------------------------------------------------
# Django announces sign-ins, sign-outs and failures with signals and nothing else (the log-in
# view is Django's): these receivers are the one place that records them. django-axes keeps
# its own tables for lock-outs, but updates and prunes them, so they cannot be the record.


def on_logged_in(sender, request, user, **kwargs) -> None:
    audit_event_record(kind=AuditEvent.Kind.LOGIN, actor=user, request=request)


def on_logged_out(sender, request, user, **kwargs) -> None:
    if user is None:  # signing out with no session: nothing happened
        return
    kind = getattr(request, "audit_logout_kind", AuditEvent.Kind.LOGOUT)
    audit_event_record(kind=kind, actor=user, request=request)


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # `credentials` has the password removed by Django (cleanse_setting); keep the username.
    username = str(credentials.get("username", ""))[:150]
    audit_event_record(kind=AuditEvent.Kind.LOGIN_FAILED, username=username, request=request)


def connect_receivers() -> None:
    from django.contrib.auth import signals

    signals.user_logged_in.connect(on_logged_in, dispatch_uid="clinicdesk.audit.login")
    signals.user_logged_out.connect(on_logged_out, dispatch_uid="clinicdesk.audit.logout")
    signals.user_login_failed.connect(on_login_failed, dispatch_uid="clinicdesk.audit.failed")
