"""Who acts, for the field diffs django-auditlog writes: a context, and one receiver.

django-auditlog names the actor of its LogEntry rows through `set_actor` / `set_extra_data`,
which connect a `pre_save` receiver on entering and disconnect it on leaving. Connecting and
disconnecting walk every `pre_save` receiver (one per audited model and more) and empty the
signal's receiver cache, so every save of the request looks its receivers up again: about
0.6 ms of each request, twice over on the API (the middleware, then DRF's caller). Here the
receiver is connected once, at start-up, and reads the same context variable auditlog's own
receivers read (`auditlog.context.auditlog_value`), marked as ours the way auditlog marks its
own (`signal_duid`): each receiver fills in only what its own context set, and auditlog's
`set_actor` still works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import Token
from typing import Any

from auditlog import get_logentry_model
from auditlog.context import auditlog_value
from auditlog.middleware import AuditlogMiddleware
from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save

RECEIVER_UID = "clinicdesk.audit.actor"


@contextlib.contextmanager
def audit_context(data: dict[str, Any]) -> Iterator[None]:
    """Inside the block, LogEntry rows take their actor (a user, or None) and the other
    LogEntry fields named in `data` (remote_addr, additional_data, …) from `data`. Blocks
    nest; leaving one restores the outer context."""
    token = audit_context_enter(data)
    try:
        yield
    finally:
        audit_context_leave(token)


def audit_context_enter(data: dict[str, Any]) -> Token:
    """`audit_context` for code that enters and leaves in two places (DRF's `initial` and
    `dispatch`): pass the token to `audit_context_leave`, in the same thread."""
    return auditlog_value.set({**data, "signal_duid": RECEIVER_UID})


def audit_context_leave(token: Token) -> None:
    auditlog_value.reset(token)


def _stamp(sender, instance, **kwargs) -> None:
    """On a LogEntry about to be saved, what auditlog's own receiver does: the context's
    person as actor unless one is named already, and the context's other LogEntry fields."""
    try:
        data = auditlog_value.get()
    except LookupError:
        return
    if data.get("signal_duid") != RECEIVER_UID:
        # Set by auditlog's own `set_actor`, whose receiver does this (while connected: it
        # leaves its value behind when done).
        return
    actor = data.get("actor")
    if instance.actor_id is None and isinstance(actor, get_user_model()):
        instance.actor = actor
        instance.actor_email = getattr(actor, "email", None)
    for key, value in data.items():
        if key not in ("actor", "signal_duid") and hasattr(sender, key):
            setattr(instance, key, value() if callable(value) else value)


def connect_receiver() -> None:
    pre_save.connect(_stamp, sender=get_logentry_model(), dispatch_uid=RECEIVER_UID)


class AuditActorMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware (the correlation id, the signed-in person, the remote
    address and port), without connecting a signal receiver for each request."""

    def __call__(self, request):
        from auditlog.cid import set_cid

        set_cid(request)
        with audit_context(self.get_extra_data(request)):
            return self.get_response(request)
