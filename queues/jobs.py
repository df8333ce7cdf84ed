"""Queues' scheduled jobs (django-q2) and what they share with the commands: reading mail in.

Schedules are declared in code by `manage.py setup_schedules` (poll-imap exists only where
IMAP_HOST is set).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from django.conf import settings

from queues.intake.mailbox import ImapConfig, MailItem, imap_items, imap_session
from queues.models import Channel, InboundMessage

# Routing sits above queues: intake's orchestrator classifies, dedups and routes what the
# mailbox brings (the pages and the API import it the same way).
from routing.intake import intake_receive

logger = logging.getLogger(__name__)

EMAIL_ACTOR = "system:email"
IMAP_BATCH = 200  # per run, well inside the q2 timeout; the rest waits for the next minute


@dataclasses.dataclass
class IngestSummary:
    """What became of each message, by the id of its stored InboundMessage."""

    created: list[int] = dataclasses.field(default_factory=list)
    resent: list[int] = dataclasses.field(default_factory=list)
    replies: list[int] = dataclasses.field(default_factory=list)
    duplicates: list[int] = dataclasses.field(default_factory=list)
    failed: list[int] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)  # labels: never stored

    OUTCOMES = {
        InboundMessage.Status.PARSED: "created",
        InboundMessage.Status.RESENT: "resent",
        InboundMessage.Status.REPLY: "replies",
        InboundMessage.Status.DUPLICATE: "duplicates",
        InboundMessage.Status.FAILED: "failed",
    }

    def add(self, outcome: str, inbound_id: int) -> None:
        getattr(self, self.OUTCOMES[outcome]).append(inbound_id)

    def counts(self) -> dict[str, int | list]:
        """Counts and inbound ids: what a job result may keep (no patient data)."""
        return {
            **{name: len(getattr(self, name)) for name in self.OUTCOMES.values()},
            "errors": len(self.errors),
            "failed_inbound_ids": list(self.failed),
        }


def email_ingest(items: Iterable[MailItem]) -> IngestSummary:
    """Each message through intake (stored raw, parsed, routed or kept as failed), then
    acknowledged at its source (IMAP: \\Seen or moved)."""
    summary = IngestSummary()
    for item in items:
        try:
            inbound, result = intake_receive(
                channel=Channel.EMAIL,
                payload=item.raw,
                content_type="message/rfc822",
                actor=EMAIL_ACTOR,
            )
        except Exception:
            # Left unacknowledged: read again next time, and recognised then as a resend.
            logger.exception("email %s could not be taken in", item.label)
            summary.errors.append(item.label)
            continue
        summary.add(result.outcome if result is not None else inbound.status, inbound.pk)
        item.done()
    return summary


def poll_imap(limit: int = IMAP_BATCH) -> dict:
    """Read the unseen messages of the IMAP mailbox (settings IMAP_*) into tasks."""
    if not settings.IMAP_HOST:
        return {"skipped": "IMAP_HOST is not set"}
    config = ImapConfig.from_settings()
    with imap_session(config) as connection:
        summary = email_ingest(imap_items(connection, config, limit))
    if summary.errors:
        logger.warning("poll_imap: %d message(s) left for the next run", len(summary.errors))
    return summary.counts()
