"""The notification outbox: what an escalation tells people, and how it is delivered.

A body carries the minimum necessary (task number, type, priority, queue, age, link) and never
the subject, the body or anything about the patient: email and chat leave the clinic's
systems. Rows are written in the sweep's transaction and sent by `send_due`, which claims one
row at a time so that two senders never send the same row, and backs off after a failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from escalation.models import Escalation, EscalationStep, Notification
from queues.models import Queue, Task

logger = logging.getLogger(__name__)

# The role group of supervisors (clinicdesk.roles.SUPERVISOR; clinicdesk sits above us).
SUPERVISOR_GROUP = "Supervisor"
MAX_ATTEMPTS = 5
WEBHOOK_TIMEOUT = 5
# A claimed row is not offered again for this long: longer than one send can take, so a
# sender that died after claiming is retried, and a slow one is not doubled.
LEASE = timedelta(minutes=2)
BODY_KEYS = ("task", "type", "priority", "queue", "age_minutes", "link")


def backoff(attempts: int) -> timedelta:
    return timedelta(minutes=min(60, 2 ** (attempts - 1)))


def body_for(task: Task, *, now: datetime) -> dict:
    """The only facts about a task that leave the clinic."""
    started = task.received_at or task.created_at
    return {
        "task": task.pk,
        "type": task.task_type.name if task.task_type_id else "",
        "priority": f"P{task.priority}",
        "queue": task.queue.name if task.queue_id else "",
        "age_minutes": max(0, int((now - started).total_seconds() // 60)),
        "link": settings.SITE_URL + reverse("queues:task", args=[task.pk]),
    }


def text_for(body: dict) -> str:
    return (
        f"Task #{body['task']} ({body['type'] or 'untyped'}, {body['priority']}, "
        f"{body['queue'] or 'no queue'}) is escalated: {body['age_minutes']} minutes old. "
        f"{body['link']}"
    )


def supervisor_addresses(task: Task) -> list[str]:
    if not task.queue_id:
        return []
    return sorted(
        set(
            get_user_model()
            .objects.filter(is_active=True, groups__name=SUPERVISOR_GROUP)
            .filter(groups=task.queue.department.group_id)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )


def supervisor_addresses_by_queue() -> dict[int, list[str]]:
    """`supervisor_addresses` for every queue at once (two queries), for the set-based sweep."""
    group_of_queue = dict(Queue.objects.values_list("id", "department__group_id"))
    users = get_user_model().objects
    supervisors = users.filter(is_active=True, groups__name=SUPERVISOR_GROUP).exclude(email="")
    by_group: dict[int, set[str]] = {}
    # Every group of each supervisor (a second join, not the one the filter made).
    for email, group_id in users.filter(pk__in=supervisors.values("pk")).values_list(
        "email", "groups__id"
    ):
        by_group.setdefault(group_id, set()).add(email)
    return {
        queue_id: sorted(by_group[group_id])
        for queue_id, group_id in group_of_queue.items()
        if group_id in by_group
    }


def notifications_for(
    *, escalation: Escalation, step: EscalationStep, task: Task, now: datetime
) -> list[Notification]:
    """The outbox rows one fired step asks for (none for steps that notify nobody)."""
    Action = EscalationStep.Action
    if step.action == Action.NOTIFY_SUPERVISOR:
        targets = [(Notification.Channel.EMAIL, a) for a in supervisor_addresses(task)]
    elif step.action == Action.NOTIFY_ADDRESS:
        targets = [(Notification.Channel.EMAIL, step.address)]
    elif step.action == Action.NOTIFY_WEBHOOK:
        targets = [(Notification.Channel.WEBHOOK, step.webhook_url)]
    else:
        return []
    body = body_for(task, now=now)
    return [
        Notification(
            escalation=escalation, channel=channel, target=target, body=body, next_attempt_at=now
        )
        for channel, target in targets
    ]


# --- delivery ------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, payload: bytes) -> str:
    message = timestamp.encode() + b"." + payload
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def delivery_key(notification_id: int) -> str:
    """The same on every attempt at one notification: a sender killed after sending and
    before recording it sends again when the lease ends, and the receiver drops the repeat
    by this key (webhook: `Idempotency-Key` header and signed `delivery` field; email: the
    Message-ID)."""
    return f"clinicdesk-notification-{notification_id}"


def post_webhook(
    *, url: str, secret: str, body: dict, now: datetime, key: str | None = None
) -> None:
    fields = {"text": text_for(body), **body}
    if key:
        fields["delivery"] = key
    payload = json.dumps(fields, separators=(",", ":")).encode()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "X-ClinicDesk-Timestamp": timestamp,
        "X-ClinicDesk-Signature": sign(secret, timestamp, payload),
    }
    if key:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(  # noqa: S310 - the URL is a manager's http(s) setting
        url, data=payload, method="POST", headers=headers
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
        response.read(1024)


def send_email(*, address: str, body: dict, key: str | None = None) -> None:
    host = urlsplit(settings.SITE_URL).hostname or "clinicdesk.invalid"
    EmailMessage(
        subject=f"ClinicDesk: task #{body['task']} escalated",
        body=text_for(body),
        to=[address],
        headers={"Message-ID": f"<{key}@{host}>"} if key else None,
    ).send()


CLAIM_SQL = """
UPDATE escalation_notification
   SET attempts = attempts + 1, next_attempt_at = %(lease)s
 WHERE id = (SELECT id FROM escalation_notification
              WHERE status = 'pending' AND next_attempt_at <= %(now)s
              ORDER BY next_attempt_at, id
              LIMIT 1
              FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def _claim(now: datetime) -> Notification | None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, {"now": now, "lease": now + LEASE})
        row = cursor.fetchone()
    if row is None:
        return None
    return Notification.objects.select_related("escalation__step").get(pk=row[0])


def _deliver(notification: Notification, now: datetime) -> None:
    if notification.channel == Notification.Channel.WEBHOOK:
        post_webhook(
            url=notification.target,
            secret=notification.escalation.step.webhook_secret,
            body=notification.body,
            now=now,
            key=delivery_key(notification.pk),
        )
    else:
        send_email(
            address=notification.target, body=notification.body, key=delivery_key(notification.pk)
        )


def send_due(*, now: datetime | None = None, limit: int = 100) -> int:
    """Send pending notifications whose time has come; returns how many were sent.

    Each row is claimed first (attempts + 1, leased), sent outside any transaction, then
    marked sent, or put back with a backoff, or failed after MAX_ATTEMPTS.
    """
    sent = 0
    for _ in range(limit):
        now_ = now or timezone.now()
        notification = _claim(now_)
        if notification is None:
            break
        try:
            _deliver(notification, now_)
        except Exception as error:  # any failure of the far side is retried, not raised
            logger.warning("Notification %s not sent: %s", notification.pk, error)
            failed = notification.attempts >= MAX_ATTEMPTS
            Notification.objects.filter(pk=notification.pk).update(
                status=Notification.Status.FAILED if failed else Notification.Status.PENDING,
                next_attempt_at=now_ + backoff(notification.attempts),
                last_error=f"{type(error).__name__}: {error}"[:2000],
            )
        else:
            Notification.objects.filter(pk=notification.pk).update(
                status=Notification.Status.SENT, sent_at=timezone.now(), last_error=""
            )
            sent += 1
    return sent
