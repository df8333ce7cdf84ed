"""Rules that managers edit in the admin. The engine (routing/engine.py) runs them; the admin
validates them with the engine's own validation functions, so what saves is what runs."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from accounts.models import Site, Skill, validate_weekdays
from queues.models import Channel, Priority, Queue, Task, TaskType


class Mode(models.TextChoices):
    ACTIVE = "active", "Active"
    SHADOW = "shadow", "Shadow (recorded, never applied)"
    OFF = "off", "Off"


class RuleSet(models.Model):
    """A versioned set of rules. Exactly one is active; every routing event records the
    version that decided it. Drafts are edited and replayed before they go live."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    description = models.TextField(blank=True)
    based_on = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="drafts"
    )
    review_queue = models.ForeignKey(
        Queue,
        on_delete=models.PROTECT,
        related_name="+",
        limit_choices_to={"kind": Queue.Kind.REVIEW},
        help_text="Where a task goes when no rule classifies it, or two rules disagree.",
    )
    red_flag_phrases = models.TextField(
        blank=True,
        help_text="One phrase a line. A match always sends the task to the red-flag queue as P1.",
    )
    red_flag_task_type = models.ForeignKey(TaskType, on_delete=models.PROTECT, related_name="+")
    red_flag_queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="+")
    revision = models.PositiveIntegerField(
        default=1, editable=False, help_text="Raised by every edit; routing caches follow it."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True, editable=False)

    # --- Publication with four eyes (routing.services.rule_set_request_publication …): who
    # wrote the set, who asked for it to go live and when, who approved. The full history
    # (edits, withdrawals, rollbacks) is in RuleSetEvent.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    publish_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    publish_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    publish_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the approved draft goes live."
    )
    publish_note = models.TextField(blank=True, editable=False)
    publish_revision = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="The revision the request was made for."
    )
    publish_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    publish_approved_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-version"]
        permissions = [
            (
                "publish_ruleset",
                "Can request, approve and roll back the publication of a rule set",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="ruleset_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version}, {self.get_status_display().lower()})"

    @property
    def red_flag_phrase_list(self) -> list[str]:
        return [line.strip() for line in self.red_flag_phrases.splitlines() if line.strip()]

    @property
    def publication_state(self) -> str:
        """Empty when nothing is asked, "requested" (awaiting a second manager) or "approved"."""
        if self.status != self.Status.DRAFT or self.publish_requested_at is None:
            return ""
        return "approved" if self.publish_approved_at is not None else "requested"


class RuleBase(models.Model):
    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE)
    name = models.CharField(max_length=120)
    order = models.PositiveIntegerField(default=100, help_text="Lower runs first.")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.ACTIVE)
    rollout_percent = models.PositiveSmallIntegerField(
        default=100,
        validators=[MaxValueValidator(100)],
        help_text="Apply to this share of matching tasks (stable per task), to pilot a change.",
    )
    channels = ArrayField(
        models.CharField(max_length=10, choices=Channel.choices),
        default=list,
        blank=True,
        help_text="Only for these channels; empty means any.",
    )
    notes = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name


class ClassificationRule(RuleBase):
    class PhraseMatch(models.TextChoices):
        ANY = "any", "Any phrase"
        ALL = "all", "All phrases"

    rule_set = models.ForeignKey(
        RuleSet, on_delete=models.CASCADE, related_name="classification_rules"
    )
    phrases = models.TextField(
        blank=True, help_text="One phrase a line; whole words, case-insensitive."
    )
    phrase_match = models.CharField(
        max_length=3, choices=PhraseMatch.choices, default=PhraseMatch.ANY
    )
    regex = models.CharField(
        "regular expression",
        max_length=500,
        blank=True,
        help_text="Searched case-insensitively in the subject and body.",
    )
    request_types = ArrayField(
        models.CharField(max_length=60),
        default=list,
        blank=True,
        help_text="The request type an intake form or system chose; empty means any.",
    )
    source_systems = ArrayField(
        models.CharField(max_length=80),
        default=list,
        blank=True,
        help_text="The sending system; empty means any.",
    )
    set_task_type = models.ForeignKey(
        TaskType, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    set_priority = models.PositiveSmallIntegerField(choices=Priority.choices, null=True, blank=True)
    min_priority = models.PositiveSmallIntegerField(
        "raise priority to at least",
        choices=Priority.choices,
        null=True,
        blank=True,
    )
    add_tags = ArrayField(models.SlugField(max_length=40), default=list, blank=True)
    stop = models.BooleanField(
        "stop here", default=False, help_text="Evaluate no further rules when this one applies."
    )

    class Meta(RuleBase.Meta):
        constraints = [
            models.CheckConstraint(
                condition=Q(rollout_percent__lte=100), name="classrule_rollout_0_100"
            ),
        ]

    @property
    def phrase_list(self) -> list[str]:
        return [line.strip() for line in self.phrases.splitlines() if line.strip()]


class RoutingRule(RuleBase):
    class BusinessHours(models.TextChoices):
        ANY = "any", "Any time"
        OPEN = "open", "Only while the site is open"
        CLOSED = "closed", "Only while the site is closed"

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="routing_rules")
    task_types = models.ManyToManyField(
        TaskType, blank=True, related_name="+", help_text="Empty means any type."
    )
    priority_min = models.PositiveSmallIntegerField(
        "most urgent priority", choices=Priority.choices, default=Priority.P1
    )
    priority_max = models.PositiveSmallIntegerField(
        "least urgent priority", choices=Priority.choices, default=Priority.P4
    )
    tags_any = ArrayField(
        models.SlugField(max_length=40),
        default=list,
        blank=True,
        help_text="Applies when the task has any of these tags; empty means any.",
    )
    sites = models.ManyToManyField(Site, blank=True, related_name="+")
    business_hours = models.CharField(
        max_length=6, choices=BusinessHours.choices, default=BusinessHours.ANY
    )
    weekdays = ArrayField(
        models.PositiveSmallIntegerField(),
        default=list,
        blank=True,
        validators=[validate_weekdays],
        help_text="0 = Monday … 6 = Sunday; empty means every day.",
    )
    time_from = models.TimeField(null=True, blank=True, help_text="Site-local time.")
    time_to = models.TimeField(
        null=True, blank=True, help_text="Site-local; earlier than 'from' wraps past midnight."
    )
    target_queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="+")
    required_skill = models.ForeignKey(
        Skill, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    min_skill_level = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    priority_override = models.PositiveSmallIntegerField(
        choices=Priority.choices, null=True, blank=True
    )

    class Meta(RuleBase.Meta):
        constraints = [
            models.CheckConstraint(
                condition=Q(priority_min__lte=F("priority_max")),
                name="routingrule_priority_range",
            ),
            models.CheckConstraint(
                condition=Q(min_skill_level__gte=1) & Q(min_skill_level__lte=5),
                name="routingrule_level_1_to_5",
            ),
        ]


# --- Intake: dedup and workflow follow-ups -------------------------------------------------


class DedupPolicy(models.Model):
    """When a new request of a type joins an open task instead of becoming a second piece of
    work (routing/dedup.py). One policy a type; no policy, no dedup."""

    class Match(models.TextChoices):
        PATIENT_AND_TYPE = "patient_type", "Same patient and task type"
        THREAD = "thread", "Same conversation thread (an email thread, an EHR request chain)"
        EITHER = "either", "Either of the two"

    task_type = models.OneToOneField(
        TaskType,
        on_delete=models.CASCADE,
        related_name="dedup_policy",
        help_text="New requests classified as this type are checked.",
    )
    match = models.CharField(max_length=12, choices=Match.choices, default=Match.PATIENT_AND_TYPE)
    window_hours = models.PositiveIntegerField(
        "window (hours)",
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 90)],
        help_text="Only an open task received within this many hours before counts "
        "(72 = three days).",
    )
    is_active = models.BooleanField(default=True)
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "dedup policy"
        verbose_name_plural = "dedup policies"
        ordering = ["task_type__name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(window_hours__gte=1) & Q(window_hours__lte=24 * 90),
                name="dedup_window_1h_to_90d",
            )
        ]

    def __str__(self) -> str:
        return f"Dedup {self.task_type}: {self.get_match_display().lower()}, {self.window_hours} h"

    @property
    def by_patient(self) -> bool:
        return self.match in (self.Match.PATIENT_AND_TYPE, self.Match.EITHER)

    @property
    def by_thread(self) -> bool:
        return self.match in (self.Match.THREAD, self.Match.EITHER)


class WorkflowTemplate(models.Model):
    """When a task of one type is created or resolved, create follow-up tasks for the same
    patient, each routed by the rules (routing/workflows.py)."""

    class Trigger(models.TextChoices):
        CREATED = "created", "A task of the type is created"
        RESOLVED = "resolved", "A task of the type is resolved"

    name = models.CharField(max_length=120, unique=True)
    trigger_type = models.ForeignKey(
        TaskType, on_delete=models.PROTECT, related_name="+", verbose_name="when a task of type"
    )
    trigger = models.CharField(
        "is", max_length=10, choices=Trigger.choices, default=Trigger.RESOLVED
    )
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(
                fields=["trigger_type", "trigger"],
                condition=Q(is_active=True),
                name="workflow_by_trigger",
            )
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowStep(models.Model):
    """One follow-up task of a template, optionally waiting for another step to be resolved."""

    template = models.ForeignKey(WorkflowTemplate, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField(default=10, help_text="Lower is created first.")
    task_type = models.ForeignKey(
        TaskType, on_delete=models.PROTECT, related_name="+", verbose_name="create a task of type"
    )
    subject = models.CharField(
        max_length=200,
        blank=True,
        help_text="Empty: the type's name and the subject of the task that set it off.",
    )
    blocked_until = models.ForeignKey(
        TaskType,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="blocked until resolved",
        help_text="Another step of this template (by its type) that must be resolved before "
        "this one can be claimed.",
    )

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "task_type"], name="workflowstep_one_per_type"
            ),
            models.CheckConstraint(
                condition=~Q(blocked_until=F("task_type")), name="workflowstep_not_self_blocked"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.template}: {self.task_type}"


class WorkflowRun(models.Model):
    """A template fired for one task. Unique, so it fires once per trigger task, whatever the
    retries, reopenings or concurrent calls."""

    template = models.ForeignKey(WorkflowTemplate, on_delete=models.PROTECT, related_name="runs")
    trigger_task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "trigger_task"], name="workflowrun_once_per_task"
            )
        ]

    def __str__(self) -> str:
        return f"{self.template} for task #{self.trigger_task_id}"


# --- Rule-set versions: publication history and replays --------------------------------------


class RuleSetEvent(models.Model):
    """One step of a rule set's life, with who took it and why: the four-eyes record that a
    compliance reviewer reads (auditlog adds the field diffs)."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        EDITED = "edited", "Edited"
        EDITED_LIVE = "edited_live", "Edited while live"
        REQUESTED = "requested", "Publication requested"
        APPROVED = "approved", "Publication approved"
        WITHDRAWN = "withdrawn", "Request withdrawn"
        PUBLISHED = "published", "Published"
        RETIRED = "retired", "Retired"
        ROLLED_BACK = "rolled_back", "Rolled back to"

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="The person, or the job by name.")
    at = models.DateTimeField()
    note = models.TextField(blank=True)
    publish_at = models.DateTimeField(null=True, blank=True)
    other_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="The version it replaced or that replaced it."
    )

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["rule_set", "at"], name="rulesetevent_by_set")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.actor_label}"


class ReplayRun(models.Model):
    """A replay of a rule set against past or generated traffic (routing/replay.py), kept
    with its report: the evidence the approving manager reads."""

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="replays")
    rule_set_revision = models.PositiveIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    source = models.JSONField(help_text="The traffic: a period, or a generated day.")
    task_count = models.PositiveIntegerField()
    changed_queue = models.PositiveIntegerField()
    seconds = models.FloatField()
    report = models.JSONField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Replay of v{self.rule_set.version} over {self.task_count} tasks"
