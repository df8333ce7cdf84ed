"""The admin as clinic managers use it to tune routing: rule sets, their classification and
routing rules, and a page to try a rule set on a message before and after turning it on.

Rules are validated by the engine's own functions (`routing.forms`). Every save or delete of a
rule or rule set raises the set's `revision`, which the routing caches key on
(`routing.selectors`), so a change reaches every process on its next decision. A set's status
changes only through the "Activate" action, which retires the previous active set in the same
transaction.
"""

from __future__ import annotations

from auditlog.mixins import AuditlogHistoryAdminMixin
from auditlog.registry import auditlog
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Subquery, Value
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from accounts.admin import weekdays_label
from queues.models import TaskType
from routing import engine, selectors, workflows
from routing.forms import (
    ClassificationRuleForm,
    ClassificationRuleListForm,
    RoutingRuleForm,
    RoutingRuleListForm,
    RuleSetForm,
    TryRulesForm,
)
from routing.models import (
    ClassificationRule,
    DedupPolicy,
    RoutingRule,
    RuleSet,
    WorkflowRun,
    WorkflowStep,
    WorkflowTemplate,
)
from routing.preview import decision_summary, preview, rule_set_problems
from routing.services import (
    next_rule_set_version,
    rule_set_activate,
    rule_set_copy,
    rule_set_touch,
)

DASH = "\N{EN DASH}"
TRY_PERMISSION = "routing.view_ruleset"


# --- Summaries shown in lists ------------------------------------------------------------


def _quoted(values, limit: int = 3) -> str:
    values = list(values)
    shown = ", ".join(f"“{v}”" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _priority(value: int | None) -> str:
    return f"P{value}"


def classification_conditions(rule: ClassificationRule) -> str:
    parts = []
    if rule.channels:
        parts.append("channel " + ", ".join(rule.channels))
    phrases = rule.phrase_list
    if phrases:
        match = "all of" if rule.phrase_match == ClassificationRule.PhraseMatch.ALL else "any of"
        parts.append(f"{match} {_quoted(phrases)}" if len(phrases) > 1 else _quoted(phrases))
    if rule.regex:
        parts.append(f"pattern /{Truncator(rule.regex).chars(40)}/")
    if rule.request_types:
        parts.append("request type " + ", ".join(rule.request_types))
    if rule.source_systems:
        parts.append("from " + ", ".join(rule.source_systems))
    return "; ".join(parts) or "—"


def classification_actions(rule: ClassificationRule) -> str:
    parts = []
    if rule.set_task_type_id:
        parts.append(f"type {rule.set_task_type.name}")
    if rule.set_priority:
        parts.append(_priority(rule.set_priority))
    if rule.min_priority:
        parts.append(f"at least {_priority(rule.min_priority)}")
    if rule.add_tags:
        parts.append("tag " + ", ".join(rule.add_tags))
    if rule.stop:
        parts.append("stop")
    return "; ".join(parts) or "—"


def routing_conditions(rule: RoutingRule) -> str:
    parts = []
    task_types = [t.name for t in rule.task_types.all()]
    if task_types:
        parts.append(", ".join(task_types))
    if (rule.priority_min, rule.priority_max) != (1, 4):
        low, high = _priority(rule.priority_min), _priority(rule.priority_max)
        parts.append(low if low == high else f"{low}{DASH}{high}")
    if rule.tags_any:
        parts.append("tagged " + " or ".join(rule.tags_any))
    if rule.channels:
        parts.append("channel " + ", ".join(rule.channels))
    sites = [s.name for s in rule.sites.all()]
    if sites:
        parts.append("at " + ", ".join(sites))
    if rule.business_hours != RoutingRule.BusinessHours.ANY:
        parts.append(f"while {rule.business_hours}")
    if rule.weekdays:
        parts.append(weekdays_label(rule.weekdays))
    if rule.time_from and rule.time_to:
        parts.append(f"{rule.time_from:%H:%M}{DASH}{rule.time_to:%H:%M}")
    return "; ".join(parts) or "any task"


def routing_actions(rule: RoutingRule) -> str:
    parts = [f"to {rule.target_queue.name}"]
    if rule.required_skill_id:
        parts.append(f"needs {rule.required_skill.name} ≥ {rule.min_skill_level}")
    if rule.priority_override:
        parts.append(f"as {_priority(rule.priority_override)}")
    return "; ".join(parts)


ROUTING_RULE_RELATED = ["rule_set", "target_queue", "required_skill"]
ROUTING_RULE_PREFETCH = [
    Prefetch("task_types", queryset=TaskType.objects.only("id", "name")),
    "sites",
]


# --- Rule sets ---------------------------------------------------------------------------


class RuleInline(admin.TabularInline):
    """A rule set's rules in order: order, name, mode and rollout edited in place, the
    conditions and actions summarised; a new rule is written on its own page."""

    fields = ["order", "name", "mode", "rollout_percent", "when", "then"]
    readonly_fields = ["when", "then"]
    extra = 0
    show_change_link = True
    summarize_when = staticmethod(str)
    summarize_then = staticmethod(str)

    def has_add_permission(self, request, obj=None):
        # A new rule needs conditions and actions: it is written on its own page.
        return False

    @admin.display(description="When")
    def when(self, obj) -> str:
        return self.summarize_when(obj)

    @admin.display(description="Then")
    def then(self, obj) -> str:
        return self.summarize_then(obj)


class ClassificationRuleInline(RuleInline):
    model = ClassificationRule
    form = ClassificationRuleListForm
    summarize_when = staticmethod(classification_conditions)
    summarize_then = staticmethod(classification_actions)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("set_task_type")


class RoutingRuleInline(RuleInline):
    model = RoutingRule
    form = RoutingRuleListForm
    summarize_when = staticmethod(routing_conditions)
    summarize_then = staticmethod(routing_actions)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("target_queue", "required_skill")
            .prefetch_related(*ROUTING_RULE_PREFETCH)
        )


def _rule_count(model) -> Coalesce:
    counted = (
        model.objects.filter(rule_set=OuterRef("pk"))
        .order_by()
        .values("rule_set")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


@admin.register(RuleSet)
class RuleSetAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = RuleSetForm
    change_form_template = "admin/routing/ruleset/change_form.html"
    change_list_template = "admin/routing/ruleset/change_list.html"
    inlines = [ClassificationRuleInline, RoutingRuleInline]
    list_display = [
        "name",
        "version",
        "status",
        "revision",
        "classification_count",
        "routing_count",
        "activated_at",
        "try_link",
    ]
    list_display_links = ["name", "version"]
    list_filter = ["status"]
    search_fields = ["name", "description"]
    search_help_text = "A version (3 or v3), or words of the name or description."
    ordering = ["-version"]
    autocomplete_fields = ["based_on", "review_queue", "red_flag_task_type", "red_flag_queue"]
    actions = ["activate", "copy_to_draft"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                classification_total=_rule_count(ClassificationRule),
                routing_total=_rule_count(RoutingRule),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lower().removeprefix("v")
        if term.isdigit() and int(term) < 2**31:
            found |= queryset.filter(version=int(term))
        return found, may_have_duplicates

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "version", "status", "description", "based_on"]}),
            ("When no rule decides", {"fields": ["review_queue"]}),
            ("Red flags", {"fields": ["red_flag_phrases", "red_flag_task_type", "red_flag_queue"]}),
        ]
        if obj is not None:
            fieldsets.append(
                ("State", {"fields": ["revision", "activated_at", "created_at", "problems"]})
            )
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        readonly = ["status", "revision", "activated_at", "created_at", "problems"]
        # Routing events record the version that decided them: it never changes.
        return [*readonly, "version"] if obj is not None else readonly

    def get_changeform_initial_data(self, request):
        return {"version": next_rule_set_version(), **super().get_changeform_initial_data(request)}

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status == RuleSet.Status.ACTIVE:
            return False  # routing would stop: activate another set first
        return super().has_delete_permission(request, obj)

    @admin.display(description="Classification rules", ordering="classification_total")
    def classification_count(self, obj: RuleSet) -> int:
        return obj.classification_total

    @admin.display(description="Routing rules", ordering="routing_total")
    def routing_count(self, obj: RuleSet) -> int:
        return obj.routing_total

    @admin.display(description="Try")
    def try_link(self, obj: RuleSet) -> str:
        url = reverse("admin:routing_ruleset_try", args=[obj.pk])
        return format_html('<a href="{}">Try the rules</a>', url)

    @admin.display(description="Rules the engine disables")
    def problems(self, obj: RuleSet | None) -> str:
        if obj is None or obj.pk is None:
            return "—"
        try:
            problems = selectors.build_snapshot(obj.pk).compiled.problems
        except engine.RuleSetError as error:
            return f"This rule set cannot route anything: {error}"
        if not problems:
            return "None: every rule is valid."
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((p,) for p in problems))
        )

    def save_model(self, request, obj, form, change):
        if change:
            # Only what the form edits: the status, activation time and revision change in
            # the database (activation, other edits) while the page is open, and writing the
            # loaded values back could undo them.
            obj.save(update_fields=[name for name in form.fields if name in form.changed_data])
        else:
            obj.save()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        rule_set_touch(form.instance.pk)

    # -- actions --

    @admin.action(description="Activate this rule set", permissions=["change"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one rule set to activate.", messages.ERROR)
            return
        try:
            rule_set, previous, problems = rule_set_activate(rule_set_id=queryset.get().pk)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return
        retired = f" {previous} is retired." if previous else ""
        self.message_user(request, f"{rule_set} is now active.{retired}", messages.SUCCESS)
        for problem in problems:
            self.message_user(request, problem, messages.WARNING)

    @admin.action(description="Copy to a new draft", permissions=["add"])
    def copy_to_draft(self, request, queryset):
        for rule_set in queryset.order_by("version"):
            draft = rule_set_copy(rule_set_id=rule_set.pk)
            self.message_user(
                request,
                format_html(
                    'Copied {} to a new draft: <a href="{}">{}</a>.',
                    rule_set,
                    reverse("admin:routing_ruleset_change", args=[draft.pk]),
                    draft,
                ),
                messages.SUCCESS,
            )

    # -- Try the rules --

    def get_urls(self):
        app, model = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("try/", view(self.try_active_view), name=f"{app}_{model}_try_active"),
            path("<int:object_id>/try/", view(self.try_view), name=f"{app}_{model}_try"),
            *super().get_urls(),
        ]

    def try_active_view(self, request):
        if not request.user.has_perm(TRY_PERMISSION):
            raise PermissionDenied
        active = RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).first()
        if active is None:
            self.message_user(request, "No rule set is active yet.", messages.WARNING)
            return redirect("admin:routing_ruleset_changelist")
        return redirect("admin:routing_ruleset_try", active.pk)

    def try_view(self, request, object_id: int):
        """Shows what the rule set would decide for a message. Writes nothing."""
        if not request.user.has_perm(TRY_PERMISSION):
            raise PermissionDenied
        rule_set = get_object_or_404(RuleSet, pk=object_id)
        form = TryRulesForm(request.POST if request.method == "POST" else None)
        result = None
        if form.is_bound and form.is_valid():
            try:
                decision = preview(rule_set_id=rule_set.pk, **form.preview_kwargs())
            except engine.RuleSetError as error:
                form.add_error(None, f"This rule set cannot route anything: {error}")
            else:
                result = try_result(decision)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Try the rules",
            "subtitle": str(rule_set),
            "rule_set": rule_set,
            "form": form,
            "result": result,
        }
        return TemplateResponse(request, "admin/routing/ruleset/try_rules.html", context)


STATUS_LABELS = {
    "applied": "applied",
    "outside_rollout": "matched, but this message is outside its rollout",
    "shadow": "shadow: would have applied",
    "shadow_outside_rollout": "shadow, outside its rollout",
}
REASON_LABELS = {
    "excluded": "excluded",
    "away": "away",
    "offline": "offline",
    "off_shift": "off shift",
    "at_capacity": "at capacity",
    "lacks_skill": "lacks the skill",
}
RULE_URL_NAMES = {
    "classification": "admin:routing_classificationrule_change",
    "routing": "admin:routing_routingrule_change",
}


def _details(values: dict) -> str:
    return "; ".join(
        f"{key.replace('_', ' ')} {', '.join(map(str, v)) if isinstance(v, list) else v}"
        for key, v in values.items()
    )


def try_result(decision: engine.Decision) -> dict:
    """The decision as the "Try the rules" page shows it."""
    summary = decision_summary(decision)
    x = summary["explanation"]
    matched = [
        {
            **m,
            "url": reverse(RULE_URL_NAMES[m["kind"]], args=[m["id"]]),
            "status_label": STATUS_LABELS.get(m["status"], m["status"].replace("_", " ")),
            "what": _details(m.get("matched") or {}),
        }
        for m in x["matched"]
    ]
    shadow = [
        {
            **s,
            "url": reverse(RULE_URL_NAMES[s["kind"]], args=[s["id"]]),
            "what": _details(s["would"]),
        }
        for s in x["shadow"]
    ]
    candidates = x["assignment"]["candidates"]
    return {
        "summary": summary,
        "x": x,
        "matched": matched,
        "shadow": shadow,
        # Staff of other queues are counted, not listed: they were never in the running.
        "candidates": [
            {**c, "reason_label": REASON_LABELS.get(c["reason"], c["reason"])}
            for c in candidates
            if c["reason"] != "not_in_queue"
        ],
        "others": sum(1 for c in candidates if c["reason"] == "not_in_queue"),
        "text": engine.explain_text(decision),
        "problems": rule_set_problems(decision),
    }


# --- Rules -------------------------------------------------------------------------------


class RuleAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    """What both kinds of rule share: ordered within a set, edited in the list, and every
    change raises the set's revision."""

    list_display_links = ["name"]
    list_editable = ["order", "mode"]
    list_filter = ["rule_set", "mode"]
    ordering = ["-rule_set__version", "order", "id"]
    list_per_page = 200
    list_form = None  # the compact form the list and the rule set's inlines share

    def get_changelist_form(self, request, **kwargs):
        kwargs.setdefault("form", self.list_form)
        return super().get_changelist_form(request, **kwargs)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # After the many-to-many rows, so the raise covers them too; a rule moved to another
        # set changes both.
        previous = form.initial.get("rule_set") if change else None
        rule_set_touch(form.instance.rule_set_id, previous)

    def delete_model(self, request, obj):
        rule_set_id = obj.rule_set_id
        super().delete_model(request, obj)
        rule_set_touch(rule_set_id)

    def delete_queryset(self, request, queryset):
        rule_set_ids = set(queryset.values_list("rule_set_id", flat=True))
        super().delete_queryset(request, queryset)
        rule_set_touch(*rule_set_ids)

    @admin.display(description="Rollout", ordering="rollout_percent")
    def rollout(self, obj) -> str:
        return f"{obj.rollout_percent}%"


@admin.register(ClassificationRule)
class ClassificationRuleAdmin(RuleAdmin):
    form = ClassificationRuleForm
    list_form = ClassificationRuleListForm
    list_display = ["order", "name", "mode", "rollout", "when", "then", "rule_set"]
    list_select_related = ["rule_set", "set_task_type"]
    list_filter = ["rule_set", "mode", "set_task_type"]
    search_fields = ["name", "phrases", "regex", "notes"]
    search_help_text = "Words of the name, a phrase, a pattern or the notes."
    autocomplete_fields = ["rule_set", "set_task_type"]
    fieldsets = [
        (None, {"fields": ["rule_set", "name", "order", "mode", "rollout_percent"]}),
        (
            "When (every condition set must hold)",
            {
                "fields": [
                    "channels",
                    "phrases",
                    "phrase_match",
                    "regex",
                    "request_types",
                    "source_systems",
                ]
            },
        ),
        (
            "Then",
            {"fields": ["set_task_type", "set_priority", "min_priority", "add_tags", "stop"]},
        ),
        (None, {"fields": ["notes"]}),
    ]

    @admin.display(description="When")
    def when(self, obj: ClassificationRule) -> str:
        return classification_conditions(obj)

    @admin.display(description="Then")
    def then(self, obj: ClassificationRule) -> str:
        return classification_actions(obj)


@admin.register(RoutingRule)
class RoutingRuleAdmin(RuleAdmin):
    form = RoutingRuleForm
    list_form = RoutingRuleListForm
    list_display = ["order", "name", "mode", "rollout", "when", "then", "rule_set"]
    list_select_related = ROUTING_RULE_RELATED
    list_filter = ["rule_set", "mode", "target_queue", "business_hours"]
    search_fields = ["name", "notes"]
    search_help_text = "Words of the name or the notes."
    autocomplete_fields = ["rule_set", "target_queue", "required_skill"]
    filter_horizontal = ["task_types", "sites"]
    fieldsets = [
        (None, {"fields": ["rule_set", "name", "order", "mode", "rollout_percent"]}),
        (
            "When (every condition set must hold)",
            {
                "fields": [
                    "task_types",
                    ("priority_min", "priority_max"),
                    "tags_any",
                    "channels",
                    "sites",
                    "business_hours",
                    "weekdays",
                    ("time_from", "time_to"),
                ]
            },
        ),
        (
            "Then",
            {
                "fields": [
                    "target_queue",
                    ("required_skill", "min_skill_level"),
                    "priority_override",
                ]
            },
        ),
        (None, {"fields": ["notes"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(*ROUTING_RULE_PREFETCH)

    @admin.display(description="When")
    def when(self, obj: RoutingRule) -> str:
        return routing_conditions(obj)

    @admin.display(description="Then")
    def then(self, obj: RoutingRule) -> str:
        return routing_actions(obj)


# --- Intake: dedup policies and workflow templates -------------------------------------------


@admin.register(DedupPolicy)
class DedupPolicyAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    list_display = ["task_type", "match", "window", "is_active"]
    list_select_related = ["task_type"]
    list_filter = ["match", "is_active"]
    search_fields = ["task_type__name", "task_type__code", "notes"]
    autocomplete_fields = ["task_type"]
    fields = ["task_type", "match", "window_hours", "is_active", "notes"]

    @admin.display(description="Window", ordering="window_hours")
    def window(self, obj: DedupPolicy) -> str:
        days, hours = divmod(obj.window_hours, 24)
        if days and not hours:
            return f"{days} day{'s' if days != 1 else ''}"
        return f"{obj.window_hours} hours"


class WorkflowStepFormSet(BaseInlineFormSet):
    """The steps as a whole: checked by the same function that orders them when the template
    fires (`routing.workflows.steps_in_order`)."""

    def clean(self):
        super().clean()
        steps = [
            (form.cleaned_data["task_type"], form.cleaned_data.get("blocked_until"))
            for form in self.forms
            if form.cleaned_data.get("task_type") and not form.cleaned_data.get("DELETE")
        ]
        try:
            workflows.steps_in_order(steps)
        except workflows.WorkflowError as error:
            raise ValidationError(str(error)) from error


class WorkflowStepInline(admin.TabularInline):
    model = WorkflowStep
    formset = WorkflowStepFormSet
    fields = ["order", "task_type", "subject", "blocked_until"]
    autocomplete_fields = ["task_type", "blocked_until"]
    extra = 1


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    inlines = [WorkflowStepInline]
    list_display = ["name", "trigger_type", "trigger", "step_summary", "is_active"]
    list_select_related = ["trigger_type"]
    list_filter = ["trigger", "is_active"]
    search_fields = ["name", "description", "trigger_type__name"]
    autocomplete_fields = ["trigger_type"]
    fields = ["name", "trigger_type", "trigger", "is_active", "description"]

    def get_queryset(self, request):
        steps = WorkflowStep.objects.select_related("task_type", "blocked_until")
        return super().get_queryset(request).prefetch_related(Prefetch("steps", queryset=steps))

    @admin.display(description="Creates")
    def step_summary(self, obj: WorkflowTemplate) -> str:
        return "; ".join(
            step.task_type.name
            + (f" (after {step.blocked_until.name} is resolved)" if step.blocked_until_id else "")
            for step in obj.steps.all()
        )


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    """When each template fired, for whom: a record, never edited."""

    list_display = ["template", "trigger_task_id", "created_at"]
    list_select_related = ["template"]
    list_filter = ["template"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Audit -------------------------------------------------------------------------------
# Registered here because every process (web, qcluster, commands) imports the admin modules
# at start-up through admin autodiscovery.

# The revision is a cache counter raised by every edit; the diffs of the edits are the record.
auditlog.register(RuleSet, exclude_fields=["revision"])
auditlog.register(ClassificationRule)
auditlog.register(RoutingRule, m2m_fields={"task_types", "sites"})
auditlog.register(DedupPolicy)
auditlog.register(WorkflowTemplate)
auditlog.register(WorkflowStep)
