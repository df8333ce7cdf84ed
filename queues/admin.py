"""The admin as clinic managers use it: the task-type catalog, queues, and read access to
tasks, their timelines and raw inbound messages.

Tasks change state only through `queues.services` (each change writes its TaskEvent), so here
their routing and state fields are read only, and nothing of a task's history can be deleted.
"""

from __future__ import annotations

import json

from auditlog.mixins import AuditlogHistoryAdminMixin
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from queues.models import (
    InboundMessage,
    IntakeField,
    IntegrationClient,
    Queue,
    Task,
    TaskEvent,
    TaskType,
)
from queues.services import queue_sync_permissions, task_event_record

MAX_ID = 2**63 - 1


class IdSearchMixin:
    """A search term that is a number (or `#123`) also finds the row with that id, by the
    primary key index; the stock `=id` search casts every id to text and scans the table."""

    id_search_field = "pk"

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().removeprefix("#")
        if term.isdigit() and int(term) <= MAX_ID:
            found |= queryset.filter(**{self.id_search_field: int(term)})
        return found, may_have_duplicates


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def admin_link(obj, label: str | None = None) -> str:
    if obj is None:
        return "—"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


# --- Task types and queues ---------------------------------------------------------------


class TaskTypeForm(forms.ModelForm):
    required_fields = forms.MultipleChoiceField(
        choices=IntakeField.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Fields the intake form asks for when this type is chosen.",
    )

    class Meta:
        model = TaskType
        fields = [
            "code",
            "name",
            "department",
            "default_queue",
            "default_priority",
            "capacity_weight",
            "required_fields",
            "description",
            "is_active",
        ]


@admin.register(TaskType)
class TaskTypeAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = TaskTypeForm
    list_display = [
        "name",
        "code",
        "department",
        "default_queue",
        "default_priority",
        "capacity_weight",
        "is_active",
    ]
    list_filter = ["is_active", "department", "default_priority"]
    list_select_related = ["department", "default_queue"]
    search_fields = ["name", "code", "description"]
    ordering = ["name"]
    autocomplete_fields = ["department", "default_queue"]
    prepopulated_fields = {"code": ["name"]}


@admin.register(Queue)
class QueueAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "code",
        "department",
        "kind",
        "assignment_policy",
        "is_active",
        "open_count",
    ]
    list_filter = ["kind", "assignment_policy", "is_active", "department"]
    search_fields = ["name", "code", "department__name"]
    ordering = ["department__name", "name"]
    autocomplete_fields = ["department"]
    prepopulated_fields = {"code": ["name"]}

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("department")
            .annotate(open_total=Count("tasks", filter=Q(tasks__status__in=Task.OPEN_STATUSES)))
        )

    @admin.display(description="Open tasks", ordering="open_total")
    def open_count(self, obj: Queue) -> int:
        return obj.open_total

    def save_model(self, request, obj, form, change):
        previous_department_id = (
            Queue.objects.filter(pk=obj.pk).values_list("department_id", flat=True).first()
            if change
            else None
        )
        super().save_model(request, obj, form, change)
        # The owning department's group may see and work the queue; a former owner loses it.
        queue_sync_permissions(queue=obj, previous_department_id=previous_department_id)


# --- Tasks -------------------------------------------------------------------------------


class TaskEventInline(admin.TabularInline):
    model = TaskEvent
    fk_name = "task"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "created_at",
        "kind",
        "actor_label",
        "from_queue",
        "to_queue",
        "from_user",
        "to_user",
        "reason",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("from_queue", "to_queue", "from_user", "to_user")
        )

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# What a manager may correct in place. Everything else moves through the task services.
TASK_EDITABLE_FIELDS = [
    "subject",
    "body",
    "tags",
    "patient_mrn",
    "patient_name",
    "patient_birth_date",
    "site",
    "required_skill",
    "min_skill_level",
]


TASK_SECTIONS = [
    (None, ["subject", "body", "tags"]),
    ("Patient", ["patient_mrn", "patient_name", "patient_birth_date"]),
    (
        "Routing",
        [
            "task_type",
            "priority",
            "status",
            "queue",
            "assignee",
            "weight",
            "waiting_for_capacity",
            "site",
            "required_skill",
            "min_skill_level",
            "routed_by_rule_id",
            "rule_set_version",
            "reroute_count",
            "reopen_count",
        ],
    ),
    (
        "Times",
        [
            "created_at",
            "received_at",
            "first_assigned_at",
            "first_claimed_at",
            "claim_due_at",
            "resolve_due_at",
            "resolved_at",
            "hold_reason",
            "follow_up_at",
            "outcome",
        ],
    ),
    ("Source", ["channel", "external_id", "source_system", "request_type", "metadata"]),
    ("Related tasks", ["parent", "duplicate_of", "blocked_by"]),
]


def task_fieldsets() -> list:
    """TASK_SECTIONS as admin fieldsets, over the fields the model has: a field added later
    shows under "Record" instead of staying hidden."""
    names = [f.name for f in Task._meta.concrete_fields if not f.primary_key]
    fieldsets, listed = [], set()
    for title, section in TASK_SECTIONS:
        present = [name for name in section if name in names]
        listed.update(present)
        fieldsets.append((title, {"fields": present}))
    rest = [name for name in names if name not in listed]
    fieldsets.append(("Record", {"fields": rest, "classes": ["collapse"]}))
    return fieldsets


@admin.register(Task)
class TaskAdmin(IdSearchMixin, AuditlogHistoryAdminMixin, admin.ModelAdmin):
    inlines = [TaskEventInline]
    list_display = [
        "id",
        "subject",
        "task_type",
        "priority",
        "status",
        "queue",
        "assignee",
        "patient",
        "created_at",
    ]
    list_display_links = ["id", "subject"]
    list_filter = ["status", "priority", "queue", "task_type", "channel"]
    list_select_related = ["task_type", "queue", "assignee"]
    # Exact lookups keep the indexes usable; ids are searched by IdSearchMixin.
    search_fields = ["subject", "external_id__exact", "patient_mrn__exact"]
    search_help_text = "Task id (#123), words of the subject, external id, or exact MRN."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    autocomplete_fields = ["site", "required_skill"]

    def get_fieldsets(self, request, obj=None):
        return task_fieldsets()

    def get_readonly_fields(self, request, obj=None):
        return [
            field.name
            for field in Task._meta.concrete_fields
            if field.name not in TASK_EDITABLE_FIELDS and not field.primary_key
        ]

    @admin.display(description="Patient", ordering="patient_mrn")
    def patient(self, obj: Task) -> str:
        # The minimum necessary in a list: initials and MRN, never the full name.
        return " · ".join(part for part in (obj.patient_initials, obj.patient_mrn) if part)

    def has_add_permission(self, request):
        # Tasks come in through intake, which stores the raw message and writes the timeline.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        changed = [name for name in form.changed_data if name in TASK_EDITABLE_FIELDS]
        if not changed:
            return
        # Write only what the form edits, on the locked row: a claim or a hold that lands
        # while the manager had the page open must not be overwritten by the stale rest.
        task = Task.objects.select_for_update().get(pk=obj.pk)
        for name in changed:
            setattr(task, name, getattr(obj, name))
        task.version += 1
        task.save(update_fields=[*changed, "version", "updated_at"])
        labels = [str(form.fields[name].label or name).lower() for name in changed]
        # The timeline names what changed, not the values: they may be patient data.
        task_event_record(
            task=task,
            kind=TaskEvent.Kind.COMMENTED,
            actor=request.user,
            reason=f"Edited in the admin: {', '.join(labels)}.",
        )


@admin.register(TaskEvent)
class TaskEventAdmin(IdSearchMixin, ReadOnlyAdmin):
    id_search_field = "task_id"
    list_display = [
        "created_at",
        "task_link",
        "kind",
        "actor_label",
        "from_queue",
        "to_queue",
        "to_user",
        "rule_id",
    ]
    list_filter = ["kind"]
    list_select_related = ["task", "from_queue", "to_queue", "to_user"]
    search_fields = ["actor_label"]
    search_help_text = "A task id, or who acted (username, client:…, system:…)."
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    fields = [
        "task_link",
        "created_at",
        "kind",
        "actor",
        "actor_label",
        "from_queue",
        "to_queue",
        "from_user",
        "to_user",
        "rule_id",
        "rule_set_version",
        "reason",
        "explanation_pretty",
    ]
    readonly_fields = fields

    @admin.display(description="Task", ordering="task_id")
    def task_link(self, obj: TaskEvent) -> str:
        return admin_link(obj.task, f"#{obj.task_id}")

    @admin.display(description="Explanation")
    def explanation_pretty(self, obj: TaskEvent) -> str:
        return pretty_json(obj.explanation)


@admin.register(IntegrationClient)
class IntegrationClientAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    """Managers see the systems that push requests in and can switch one off or narrow its
    channels. New clients (and their one-time credentials) come from the
    `create_integration_client` command; the stored hashes are never shown."""

    list_display = ["name", "description", "channels", "is_active", "last_used_at", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    fields = [
        "name",
        "description",
        "channels",
        "is_active",
        "user",
        "token_prefix",
        "created_at",
        "last_used_at",
    ]
    readonly_fields = ["name", "user", "token_prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(IdSearchMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "channel",
        "sender",
        "status",
        "received_at",
        "attempts",
        "error_excerpt",
        "task_link",
    ]
    list_filter = ["status", "channel"]
    list_select_related = ["task"]
    search_fields = ["external_id__exact", "sender"]
    search_help_text = "A message id, an exact external id, or the sender."
    date_hierarchy = "received_at"
    ordering = ["-received_at", "-id"]
    show_full_result_count = False
    fields = [
        "channel",
        "external_id",
        "sender",
        "received_at",
        "status",
        "attempts",
        "error",
        "task_link",
        "content_type",
        "headers_pretty",
        "payload_text",
    ]
    readonly_fields = fields

    @admin.display(description="Error")
    def error_excerpt(self, obj: InboundMessage) -> str:
        return Truncator(obj.error).chars(80)

    @admin.display(description="Task")
    def task_link(self, obj: InboundMessage) -> str:
        return admin_link(obj.task, f"#{obj.task_id}") if obj.task_id else "—"

    @admin.display(description="Headers")
    def headers_pretty(self, obj: InboundMessage) -> str:
        return pretty_json(obj.headers)

    @admin.display(description="Payload")
    def payload_text(self, obj: InboundMessage) -> str:
        text = bytes(obj.payload or b"").decode("utf-8", errors="replace")
        return format_html("<pre>{}</pre>", text)


# --- Audit -------------------------------------------------------------------------------
# Registered here because every process (web, qcluster, commands) imports the admin modules
# at start-up through admin autodiscovery.


def mask_patient_data(value: str) -> str:
    """The audit log records that a patient field changed, never its value (auditlog's own
    mask keeps half of it, which for a name is the surname)."""
    return "***" if value not in ("", "None") else value


auditlog.register(TaskType, exclude_fields=["updated_at"])
# Credentials are never in the audit log, not even hashed; `last_used_at` is not a change.
auditlog.register(
    IntegrationClient,
    exclude_fields=["token_hash", "signing_key", "token_prefix", "last_used_at"],
)
auditlog.register(Queue, exclude_fields=["updated_at"])
auditlog.register(
    Task,
    exclude_fields=["version", "updated_at"],
    mask_fields=["patient_name", "patient_birth_date"],
    mask_callable="queues.admin.mask_patient_data",
)
