from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """A record that is neither a task's timeline nor a field diff: signing in and out, a
    failed sign-in, an idle logoff, a refused request, an export. Append-only, like the
    timeline: database triggers refuse UPDATE, DELETE and TRUNCATE."""

    class Kind(models.TextChoices):
        LOGIN = "login", "Signed in"
        LOGOUT = "logout", "Signed out"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        IDLE_LOGOFF = "idle_logoff", "Signed out when idle"
        DENIED = "denied", "Refused (403)"
        NOT_FOUND = "not_found", "Not found (404)"
        EXPORT = "export", "Audit export"
        OTP_ENROLLED = "otp_enrolled", "Two-factor set up"
        OTP_FAILED = "otp_failed", "Wrong two-factor code"
        RECOVERY_USED = "recovery_used", "Recovery code used"
        OTP_RESET = "otp_reset", "Two-factor reset"
        EMERGENCY = "emergency", "Emergency access"

    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The person, when known (a failed sign-in may name nobody).",
    )
    actor_label = models.CharField(
        max_length=150,
        help_text="Who: a username, client:<name>, or the username typed at a failed sign-in.",
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    method = models.CharField(max_length=8, blank=True)
    path = models.CharField(max_length=300, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["at", "id"], name="auditevent_time"),
            models.Index(fields=["actor_label", "at"], name="auditevent_by_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.actor_label}"


class AuditSeal(models.Model):
    """One sealing run over one append-only table: the rows whose inserting transactions
    ended before `xid_to` (and not before `xid_from`, where the previous seal stopped),
    linked in id order after the previous seal's head. Each seal also chains to the seal
    before it (`seal_hash`), so removing or rewriting a seal breaks every later one."""

    source = models.CharField(max_length=16)
    sealed_at = models.DateTimeField(default=timezone.now)
    xid_from = models.BigIntegerField()
    xid_to = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    head_hash = models.BinaryField(help_text="The chain hash of the last row linked.")
    prev_seal_hash = models.BinaryField()
    seal_hash = models.BinaryField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Seal {self.pk} of {self.source} ({self.row_count} rows)"


class AuditLink(models.Model):
    """One row of an append-only table in the chain: the row's content hash as sealed and
    the chain hash sha256(previous link's chain hash || this row's hash)."""

    seal = models.ForeignKey(AuditSeal, on_delete=models.PROTECT, related_name="links")
    source = models.CharField(max_length=16)
    row_id = models.BigIntegerField()
    row_hash = models.BinaryField()
    chain_hash = models.BinaryField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "row_id"], name="auditlink_once_per_row")
        ]

    def __str__(self) -> str:
        return f"{self.source} row {self.row_id}"
