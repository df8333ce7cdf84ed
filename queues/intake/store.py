"""Writes of the intake side of `queues`: raw payloads, their outcome, attachments, clients."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from accounts.models import Department
from queues.intake import credentials
from queues.intake.draft import AttachmentDraft, IntakeError
from queues.models import Attachment, Channel, InboundMessage, IntegrationClient, Task

# Headers worth keeping with a payload; never the Authorization header or cookies.
KEPT_HEADERS = (
    "Content-Type",
    "Content-Length",
    "User-Agent",
    credentials.TIMESTAMP_HEADER,
    "X-Request-Id",
    "X-Forwarded-For",
)


def inbound_store(
    *,
    channel: str,
    payload: bytes,
    content_type: str = "",
    client: IntegrationClient | None = None,
    sender: str = "",
    headers: dict | None = None,
    external_id: str = "",
) -> InboundMessage:
    """Keep a payload exactly as it came, before anything reads it.

    Call it outside any transaction (views run in autocommit): the row is committed at once,
    so a payload survives even when turning it into a task fails and rolls back.
    """
    kept = {k: v for k, v in (headers or {}).items() if k in KEPT_HEADERS}
    return InboundMessage.objects.create(
        channel=channel,
        payload=payload,
        content_type=content_type[:100],
        client=client,
        sender=(sender or (client.actor_label if client else ""))[:120],
        headers=kept,
        external_id=external_id[:200],
    )


def inbound_mark(
    *,
    inbound: InboundMessage,
    status: str,
    task: Task | None = None,
    external_id: str | None = None,
    channel: str | None = None,
    error: IntakeError | None = None,
) -> InboundMessage:
    inbound.status = status
    inbound.task = task
    inbound.processed_at = timezone.now()
    inbound.attempts += 1
    fields = ["status", "task", "processed_at", "attempts", "error", "error_fields"]
    inbound.error = error.summary if error else ""
    inbound.error_fields = error.errors if error else {}
    if external_id is not None:
        inbound.external_id = external_id[:200]
        fields.append("external_id")
    if channel is not None:
        inbound.channel = channel
        fields.append("channel")
    inbound.save(update_fields=fields)
    return inbound


def inbound_correct(*, inbound: InboundMessage, payload: bytes, user) -> InboundMessage:
    """Store a supervisor's corrected payload next to the untouched original."""
    if inbound.status != InboundMessage.Status.FAILED:
        raise IntakeError("Only a failed message can be corrected; this one became a task.")
    inbound.corrected_payload = payload
    inbound.corrected_by = user.get_username()
    inbound.corrected_at = timezone.now()
    inbound.save(update_fields=["corrected_payload", "corrected_by", "corrected_at"])
    return inbound


MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024


def attachments_store(
    *, drafts: Iterable[AttachmentDraft], task: Task | None, inbound: InboundMessage | None
) -> list[Attachment]:
    stored = []
    for draft in drafts:
        digest = hashlib.sha256(draft.content).hexdigest()
        attachment = Attachment(
            task=task,
            inbound=inbound,
            filename=(draft.filename or "attachment")[:255],
            content_type=(draft.content_type or "application/octet-stream")[:100],
            size=len(draft.content),
            sha256=digest,
        )
        attachment.file.save(digest, ContentFile(draft.content), save=False)
        attachment.save()
        stored.append(attachment)
    return stored


def attachments_link(*, inbound: InboundMessage, task: Task) -> int:
    return Attachment.objects.filter(inbound=inbound, task__isnull=True).update(task=task)


@transaction.atomic
def integration_client_create(
    *,
    name: str,
    channels: list[str],
    departments: Iterable[Department] = (),
    description: str = "",
) -> tuple[IntegrationClient, credentials.IssuedCredentials]:
    """A new client and its service user. The token and secret are returned once, never kept."""
    unknown = sorted(set(channels) - set(Channel.values))
    if unknown:
        raise IntakeError(
            {
                "channels": [
                    f"Unknown channel {', '.join(unknown)}: use {', '.join(Channel.values)}."
                ]
            }
        )
    if not channels:
        raise IntakeError({"channels": ["Give at least one channel the client may submit on."]})
    if IntegrationClient.objects.filter(name=name).exists():
        raise IntakeError({"name": [f"A client named {name!r} exists; choose another name."]})
    User = get_user_model()
    user = User(username=f"client-{name}"[:150], is_active=True)
    user.set_unusable_password()
    user.save()
    for department in departments:
        user.groups.add(department.group)
    issued = credentials.issue_credentials()
    client = IntegrationClient.objects.create(
        name=name,
        description=description,
        channels=sorted(set(channels)),
        user=user,
        token_prefix=issued.token_prefix,
        token_hash=issued.token_hash,
        signing_key=issued.signing_key,
    )
    return client, issued


def integration_client_for_token(token: str) -> IntegrationClient | None:
    client = (
        IntegrationClient.objects.select_related("user")
        .filter(token_hash=credentials.token_hash(token), is_active=True)
        .first()
    )
    if client is not None:
        now = timezone.now()
        # At most one write a minute per client, so busy clients do not contend on their row.
        if client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60:
            IntegrationClient.objects.filter(pk=client.pk).update(last_used_at=now)
    return client
