"""SLA configuration (calendars, policies, steps) and the records of escalation (the steps that
fired, the per-task SLA state the sweep reads, and the notification outbox)."""

from __future__ import annotations

import itertools
import zoneinfo
from collections.abc import Iterable
from datetime import time

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from escalation import business_time
from queues.models import Priority, Queue, Task, TaskType

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def clean_hours(value) -> dict[int, tuple[tuple[time, time], ...]]:
    """Weekly hours as stored (`{"0": [["08:00", "17:00"]], …}`, Monday = 0) → intervals.

    The admin validates with this function and `BusinessCalendar.as_calendar` builds from it,
    so a calendar that saves is a calendar that computes.
    """
    if not isinstance(value, dict):
        raise ValidationError('Weekly hours are an object such as {"0": [["08:00", "17:00"]]}.')
    hours: dict[int, tuple[tuple[time, time], ...]] = {}
    for key, intervals in value.items():
        try:
            weekday = int(key)
        except (TypeError, ValueError):
            weekday = -1
        if not 0 <= weekday <= 6:
            raise ValidationError(f"“{key}” is not a weekday number (0 = Monday … 6 = Sunday).")
        if not isinstance(intervals, list):
            raise ValidationError(f"{WEEKDAYS[weekday]}: give a list of [opens, closes] pairs.")
        parsed = []
        for pair in intervals:
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise ValidationError(f"{WEEKDAYS[weekday]}: each interval is [opens, closes].")
            try:
                opens, closes = (time.fromisoformat(str(p)) for p in pair)
            except ValueError as error:
                raise ValidationError(
                    f"{WEEKDAYS[weekday]}: write times as HH:MM, e.g. 08:30."
                ) from error
            if closes != time(0) and opens >= closes:
                raise ValidationError(
                    f"{WEEKDAYS[weekday]}: {opens:%H:%M} must come before {closes:%H:%M}."
                )
            parsed.append((opens, closes))
        parsed.sort()
        for (_, first_closes), (second_opens, _) in itertools.pairwise(parsed):
            if first_closes == time(0) or second_opens < first_closes:
                raise ValidationError(f"{WEEKDAYS[weekday]}: the intervals overlap.")
        if parsed:
            hours[weekday] = tuple(parsed)
    return hours


def validate_hours(value) -> None:
    clean_hours(value)


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"“{value}” is not a time zone; use a name like America/New_York.")


class BusinessCalendar(models.Model):
    name = models.CharField(max_length=120, unique=True)
    time_zone = models.CharField(
        max_length=60, default="America/New_York", validators=[validate_time_zone]
    )
    hours = models.JSONField(
        default=dict,
        validators=[validate_hours],
        help_text='Opening hours per weekday, 0 = Monday: {"0": [["08:00", "17:00"]], …}. '
        "A weekday that is missing is closed; a closing time of 00:00 means midnight.",
    )
    country = models.CharField(
        max_length=2, blank=True, help_text="ISO country code for public holidays, e.g. US."
    )
    subdivision = models.CharField(
        max_length=10, blank=True, help_text="State or province for public holidays, e.g. NY."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            hours = clean_hours(self.hours)
        except ValidationError:
            hours = {"invalid": ()}  # reported by the field's own validator
        if not hours:
            raise ValidationError({"hours": "Give the opening hours of at least one weekday."})
        if self.subdivision and not self.country:
            raise ValidationError({"country": "A subdivision needs its country."})
        if self.country:
            try:
                business_time.calendar_from(
                    time_zone=self.time_zone or "UTC",
                    hours={},
                    country=self.country,
                    subdivision=self.subdivision,
                    years=(2025,),
                )
            except ValueError as error:
                raise ValidationError(
                    {"country": f"No public holidays known for this place: {error}"}
                ) from error

    def as_calendar(self, years: Iterable[int]) -> business_time.Calendar:
        return business_time.calendar_from(
            time_zone=self.time_zone,
            hours=clean_hours(self.hours),
            country=self.country,
            subdivision=self.subdivision,
            closures=[closure.date for closure in self.closures.all()],
            years=tuple(years),
        )


class CalendarClosure(models.Model):
    """A day the clinic is closed that the public holidays do not cover."""

    calendar = models.ForeignKey(
        BusinessCalendar, on_delete=models.CASCADE, related_name="closures"
    )
    date = models.DateField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="closure_unique_date")
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.reason}".strip()


class SlaPolicy(models.Model):
    """Targets for the tasks it matches; the first active policy by order applies."""

    name = models.CharField(max_length=120, unique=True)
    is_active = models.BooleanField(default=True)
    order = models.PositiveIntegerField(default=100, help_text="Lower is tried first.")
    task_types = models.ManyToManyField(
        TaskType, blank=True, related_name="+", help_text="Empty: any task type."
    )
    priorities = ArrayField(
        models.PositiveSmallIntegerField(choices=Priority.choices),
        default=list,
        blank=True,
        help_text="Empty: any priority.",
    )
    queues = models.ManyToManyField(
        Queue, blank=True, related_name="+", help_text="Empty: any queue."
    )
    first_claim_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="From receipt until someone first claims the task."
    )
    resolution_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="From receipt until the task is resolved."
    )
    calendar = models.ForeignKey(
        BusinessCalendar,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="policies",
        help_text="Count business hours of this calendar; empty: around the clock.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(first_claim_minutes__gt=0) | Q(first_claim_minutes__isnull=True),
                name="slapolicy_claim_positive",
            ),
            models.CheckConstraint(
                condition=Q(resolution_minutes__gt=0) | Q(resolution_minutes__isnull=True),
                name="slapolicy_resolution_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not self.first_claim_minutes and not self.resolution_minutes:
            raise ValidationError("Set a first-claim target, a resolution target, or both.")
        bad = [p for p in self.priorities if not 1 <= p <= 4]
        if bad:
            raise ValidationError({"priorities": "Priorities are 1 (P1) to 4 (P4)."})


class EscalationStep(models.Model):
    class Target(models.TextChoices):
        FIRST_CLAIM = "first_claim", "First claim"
        RESOLUTION = "resolution", "Resolution"

    class When(models.TextChoices):
        PERCENT = "percent", "At a percent of the target"
        AFTER_BREACH = "after_breach", "Minutes after the breach"

    class Action(models.TextChoices):
        MARK_AT_RISK = "mark_at_risk", "Mark at risk"
        NOTIFY_SUPERVISOR = "notify_supervisor", "Email the queue's supervisors"
        NOTIFY_ADDRESS = "notify_address", "Email an address"
        NOTIFY_WEBHOOK = "notify_webhook", "Post to a webhook"
        RAISE_PRIORITY = "raise_priority", "Raise the priority one level"
        MOVE_TO_ESCALATION_QUEUE = "move_to_escalation_queue", "Move to an escalation queue"
        REASSIGN = "reassign", "Offer to someone else"

    policy = models.ForeignKey(SlaPolicy, on_delete=models.CASCADE, related_name="steps")
    level = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    target = models.CharField(max_length=12, choices=Target.choices)
    when = models.CharField(max_length=12, choices=When.choices, default=When.PERCENT)
    percent = models.PositiveSmallIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="With “at a percent”: 75 fires at three quarters of the target, 100 at it.",
    )
    minutes_after = models.PositiveIntegerField(
        default=0, help_text="With “after the breach”: minutes past the target (same clock)."
    )
    action = models.CharField(max_length=30, choices=Action.choices)
    address = models.EmailField(blank=True, help_text="For “email an address”.")
    webhook_url = models.URLField(blank=True, help_text="For “post to a webhook”.")
    webhook_secret = models.CharField(
        max_length=200, blank=True, help_text="Signs each webhook post (HMAC-SHA256)."
    )
    escalation_queue = models.ForeignKey(
        Queue,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"kind": Queue.Kind.ESCALATION},
        help_text="For “move to an escalation queue”.",
    )

    class Meta:
        ordering = ["policy", "level"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "level"], name="step_unique_level")
        ]

    def __str__(self) -> str:
        return f"{self.policy} · level {self.level}: {self.get_action_display()}"

    def clean(self) -> None:
        errors = {}
        if self.action == self.Action.NOTIFY_ADDRESS and not self.address:
            errors["address"] = "Give the address to email."
        if self.action == self.Action.NOTIFY_WEBHOOK:
            if not self.webhook_url:
                errors["webhook_url"] = "Give the webhook URL."
            if not self.webhook_secret:
                errors["webhook_secret"] = "Give a signing secret the receiver can check."
        if self.action == self.Action.MOVE_TO_ESCALATION_QUEUE:
            if self.escalation_queue is None:
                errors["escalation_queue"] = "Choose the escalation queue."
            elif self.escalation_queue.kind != Queue.Kind.ESCALATION:
                errors["escalation_queue"] = "Choose a queue of kind escalation."
        if self.policy_id and self.target:
            minutes = (
                self.policy.first_claim_minutes
                if self.target == self.Target.FIRST_CLAIM
                else self.policy.resolution_minutes
            )
            if not minutes:
                errors["target"] = "The policy has no such target; set its minutes first."
        if errors:
            raise ValidationError(errors)

    def offset_minutes(self, target_minutes: int) -> int:
        """Minutes of the policy's clock from receipt until this step fires."""
        if self.when == self.When.AFTER_BREACH:
            return target_minutes + self.minutes_after
        # Rounded up: a step never fires before its share of the target has passed.
        return -(-target_minutes * self.percent // 100)


class TaskSla(models.Model):
    """What the sweep reads: per task, the policy that applies, its pending steps with the
    time each fires (computed with the policy's calendar when the task last changed, in
    firing order), and the earliest of those times, indexed. `task_version` is the task's
    version when this was computed (the task keeps the same number in `sla_version`, which
    is what the sweep's changed-task query reads)."""

    task = models.OneToOneField(
        Task, on_delete=models.CASCADE, primary_key=True, related_name="sla"
    )
    policy = models.ForeignKey(
        SlaPolicy, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    task_version = models.PositiveIntegerField()
    next_step_at = models.DateTimeField(null=True, blank=True)
    # Parallel arrays, ordered by fire time then level: the sweep fires the due prefix and
    # keeps the rest in one statement, with no calendar arithmetic at sweep time.
    pending_step_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    pending_fire_at = ArrayField(models.DateTimeField(), default=list, blank=True)
    at_risk = models.BooleanField(default=False)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = "task SLA"
        indexes = [
            # The due rows in the order the sweep takes them (no sort, however many are due).
            models.Index(
                fields=["next_step_at", "task"],
                condition=Q(next_step_at__isnull=False),
                name="tasksla_next_step",
            )
        ]

    def __str__(self) -> str:
        return f"SLA of task #{self.task_id}"


class Escalation(models.Model):
    """One step fired for one task. Unique, so that a step fires once whatever runs it."""

    # No index of its own on `task`: the unique (task, step) serves every lookup by task, and
    # the sweep inserts these rows by the hundred thousand.
    task = models.ForeignKey(
        Task, on_delete=models.PROTECT, related_name="escalations", db_index=False
    )
    step = models.ForeignKey(EscalationStep, on_delete=models.PROTECT, related_name="+")
    level = models.PositiveSmallIntegerField()
    due_at = models.DateTimeField(help_text="The target the step watches.")
    fired_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # indexed below, only where set
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "step"], name="escalation_once_per_step")
        ]
        indexes = [
            models.Index(
                fields=["fired_at"],
                condition=Q(acknowledged_at__isnull=True),
                name="escalation_open",
            ),
            models.Index(
                fields=["acknowledged_by"],
                condition=Q(acknowledged_by__isnull=False),
                name="escalation_acknowledged_by",
            ),
        ]

    def __str__(self) -> str:
        return f"Task #{self.task_id} level {self.level}"


class Notification(models.Model):
    """The outbox: written in the sweep's transaction, sent later by a job, retried with
    backoff. The body holds only the minimum necessary (see `escalation.notifications`)."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    escalation = models.ForeignKey(
        Escalation, on_delete=models.PROTECT, related_name="notifications"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500, help_text="The email address or webhook URL.")
    body = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["escalation", "channel", "target"], name="notification_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(status="pending"),
                name="notification_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.target} ({self.get_status_display()})"
