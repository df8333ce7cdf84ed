"""The audit's scheduled jobs (django-q2, declared in `setup_schedules`): seal the new rows
into the hash chain every few minutes, and verify the whole chain every night."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import mail_admins, send_mail

from clinicdesk.audit.chain import audit_seal, audit_verify

logger = logging.getLogger(__name__)

# Who hears of a broken chain: the roles that read the audit (clinicdesk.roles).
ALERT_ROLES = ("Compliance", "Manager")


def seal_job() -> int:
    return sum(result.rows for result in audit_seal())


def verify_job() -> bool:
    result = audit_verify()
    if result.ok:
        logger.info("Audit chain verified: %s; head %s", result.checked, result.head.hex())
        return True
    lines = [str(problem) for problem in result.breaks]
    logger.error("Audit chain broken: %s", "; ".join(lines))
    alert(lines, result.head.hex())
    return False


def alert(lines: list[str], head: str) -> None:
    subject = "ClinicDesk: the audit trail failed verification"
    body = (
        "The nightly check of the audit trail found records that no longer match their "
        "hash chain. Someone may have altered the audit or timeline tables.\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + f"\n\nChain head: {head}\nRun `manage.py verify_audit` to see it again.\n"
    )
    recipients = sorted(
        set(
            get_user_model()
            .objects.filter(is_active=True, groups__name__in=ALERT_ROLES)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )
    if recipients:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    mail_admins(subject, body)
