"""The admin for SLA configuration (calendars with their closures, policies with their steps)
and, read only, the escalations that fired and the notifications they sent."""

from __future__ import annotations

from auditlog.mixins import AuditlogHistoryAdminMixin
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin, messages
from django.db.models import Count

from escalation import services
from escalation.models import (
    BusinessCalendar,
    CalendarClosure,
    Escalation,
    EscalationStep,
    Notification,
    SlaPolicy,
)
from escalation.services import escalation_acknowledge
from queues.models import Task

# --- Calendars -------------------------------------------------------------------------------


class CalendarClosureInline(admin.TabularInline):
    model = CalendarClosure
    extra = 1


class ReplansOpenTasksMixin:
    """Saving or deleting SLA configuration plans the open tasks again (see
    `services.sla_configuration_changed`), after the inlines and many-to-many fields are
    saved; the change list's inline edits (order, active) go through `save_related` too."""

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        replanned = services.sla_configuration_changed()
        if replanned:
            self.message_user(
                request,
                f"{replanned} open task{'s' if replanned != 1 else ''} will have their due "
                "times planned again within a minute.",
            )

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.sla_configuration_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        services.sla_configuration_changed()


@admin.register(BusinessCalendar)
class BusinessCalendarAdmin(ReplansOpenTasksMixin, AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = ["name", "time_zone", "country", "subdivision", "closure_count"]
    search_fields = ["name"]
    inlines = [CalendarClosureInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(closure_total=Count("closures"))

    @admin.display(description="Closures", ordering="closure_total")
    def closure_count(self, obj) -> int:
        return obj.closure_total


# --- Policies --------------------------------------------------------------------------------


class EscalationStepForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False, assume_scheme="https", help_text="For “post to a webhook”."
    )

    class Meta:
        model = EscalationStep
        fields = [
            "level",
            "target",
            "when",
            "percent",
            "minutes_after",
            "action",
            "address",
            "webhook_url",
            "webhook_secret",
            "escalation_queue",
        ]
        widgets = {"webhook_secret": forms.PasswordInput(render_value=True)}


class EscalationStepInline(admin.StackedInline):
    model = EscalationStep
    form = EscalationStepForm
    extra = 0
    fields = [
        ("level", "target"),
        ("when", "percent", "minutes_after"),
        "action",
        "address",
        ("webhook_url", "webhook_secret"),
        "escalation_queue",
    ]


@admin.register(SlaPolicy)
class SlaPolicyAdmin(ReplansOpenTasksMixin, AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "order",
        "is_active",
        "first_claim_minutes",
        "resolution_minutes",
        "clock",
        "step_count",
    ]
    list_editable = ["order", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name"]
    filter_horizontal = ["task_types", "queues"]
    inlines = [EscalationStepInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("calendar")
            .annotate(step_total=Count("steps"))
        )

    @admin.display(description="Clock")
    def clock(self, obj) -> str:
        return f"business hours: {obj.calendar}" if obj.calendar_id else "around the clock"

    @admin.display(description="Steps", ordering="step_total")
    def step_count(self, obj) -> int:
        return obj.step_total


# --- Records (read only) ---------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyAdmin):
    list_display = ["task_id", "level", "step", "due_at", "fired_at", "acknowledged"]
    list_select_related = ["step__policy", "acknowledged_by"]
    list_filter = [("acknowledged_at", admin.EmptyFieldListFilter), "level"]
    search_fields = ["=task__id"]
    date_hierarchy = "fired_at"
    actions = ["acknowledge"]

    def get_queryset(self, request):
        # A supervisor (who may acknowledge escalations) sees those of their departments'
        # tasks, as on the Escalations page; managers and compliance see every department.
        queryset = super().get_queryset(request)
        if request.user.has_perm("queues.view_queue"):
            return queryset
        return queryset.filter(task__in=Task.objects.visible_to(request.user).values("pk"))

    @admin.display(description="Acknowledged", boolean=True)
    def acknowledged(self, obj) -> bool:
        return obj.acknowledged_at is not None

    @admin.action(description="Acknowledge the selected escalations", permissions=["change"])
    def acknowledge(self, request, queryset):
        done = sum(
            escalation_acknowledge(escalation_id=pk, user=request.user)
            for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, f"{done} escalation(s) acknowledged.", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "target", "status", "attempts", "created_at", "sent_at"]
    list_filter = ["status", "channel"]
    search_fields = ["target", "=escalation__task__id"]

    def has_change_permission(self, request, obj=None):
        return False


# --- Audit -----------------------------------------------------------------------------------


def mask_secret(value: str) -> str:
    return "***" if value not in ("", "None") else value


auditlog.register(BusinessCalendar)
auditlog.register(CalendarClosure)
auditlog.register(SlaPolicy, m2m_fields={"task_types", "queues"})
# The webhook's signing secret is recorded as changed, never with any of its characters
# (auditlog's default mask keeps half of the value).
auditlog.register(
    EscalationStep,
    mask_fields=["webhook_secret"],
    mask_callable="escalation.admin.mask_secret",
)
