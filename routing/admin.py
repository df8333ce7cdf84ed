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
from routing import replay as replay_module
from routing.forms import (
    ClassificationRuleForm,
    ClassificationRuleListForm,
    PublishRequestForm,
    ReplayForm,
    RollbackForm,
    RoutingRuleForm,
    RoutingRuleListForm,
    RuleSetForm,
    TryRulesForm,
)
from routing.models import (
    ClassificationRule,
    DedupPolicy,
    ReplayRun,
    RoutingRule,
    RuleSet,
    RuleSetEvent,
    WorkflowRun,
    WorkflowStep,
    WorkflowTemplate,
)
from routing.preview import decision_summary, preview, rule_set_problems
from routing.services import (
    next_rule_set_version,
    rule_set_activate,
    rule_set_approve_publication,
    rule_set_authors,
    rule_set_copy,
    rule_set_record_edit,
    rule_set_request_publication,
    rule_set_roll_back,
    rule_set_touch,
    rule_set_withdraw_publication,
)

DASH = "\N{EN DASH}"
TRY_PERMISSION = "routing.view_ruleset"
REPLAY_PERMISSION = "routing.change_ruleset"
PUBLISH_PERMISSION = "routing.publish_ruleset"
LIVE_WARNING = (
    "This is the LIVE rule set (v{version}): a change here routes the next task at once, "
    "without a replay or a second manager's approval, and is recorded as such. To change "
    "the rules, copy the set to a draft, replay it, and ask for publication."
)


def _retired(rule_set: RuleSet | None) -> bool:
    # What was live stays as it was: tasks name the version that routed them, and a rollback
    # restores exactly what two managers approved.
    return rule_set is not None and rule_set.status == RuleSet.Status.RETIRED


def _record_edits(request, *rule_set_ids: int | None) -> None:
    for rule_set_id in {pk for pk in rule_set_ids if pk is not None}:
        rule_set_record_edit(rule_set_id=rule_set_id, actor=request.user)


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

    def has_change_permission(self, request, obj=None):
        return not _retired(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not _retired(obj) and super().has_delete_permission(request, obj)

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
        "publication",
        "try_link",
    ]
    list_display_links = ["name", "version"]
    list_filter = ["status"]
    search_fields = ["name", "description"]
    search_help_text = "A version (3 or v3), or words of the name or description."
    ordering = ["-version"]
    autocomplete_fields = ["based_on", "review_queue", "red_flag_task_type", "red_flag_queue"]
    actions = ["activate", "copy_to_draft", "replay"]

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
        if _retired(obj):
            return False  # tasks name its version; it stays one click away for a rollback
        return super().has_delete_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not _retired(obj) and super().has_change_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and obj.status == RuleSet.Status.ACTIVE and request.method == "GET":
            self.message_user(request, LIVE_WARNING.format(version=obj.version), messages.WARNING)
        context = {**(extra_context or {})}
        if obj is not None:
            context["replays"] = obj.replays.select_related("created_by")[:5]
            context["may_publish"] = request.user.has_perm(PUBLISH_PERMISSION)
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="Publication")
    def publication(self, obj: RuleSet) -> str:
        state = obj.publication_state
        if state == "requested":
            return "awaiting a second manager's approval"
        if state == "approved":
            return f"approved; goes live {obj.publish_at:%Y-%m-%d %H:%M}"
        return DASH

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
            obj.created_by = request.user
            obj.save()
            RuleSetEvent.objects.create(
                rule_set=obj,
                kind=RuleSetEvent.Kind.CREATED,
                actor=request.user,
                actor_label=request.user.get_username(),
                at=obj.created_at,
            )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        rule_set_touch(form.instance.pk)
        if change:
            _record_edits(request, form.instance.pk)

    # -- actions --

    @admin.action(
        description="Activate this rule set (only when none is live)", permissions=["change"]
    )
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one rule set to activate.", messages.ERROR)
            return
        if RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).exists():
            # Four eyes: once rules are live, a new version goes live by approval.
            self.message_user(
                request,
                "A rule set is live: a new version goes live by publication, which a second "
                "manager approves. Open the draft and choose Publish.",
                messages.ERROR,
            )
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
            draft = rule_set_copy(rule_set_id=rule_set.pk, actor=request.user)
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

    @admin.action(description="Replay against past traffic", permissions=["change"])
    def replay(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one rule set to replay.", messages.ERROR)
            return None
        return redirect("admin:routing_ruleset_replay", queryset.get().pk)

    # -- Try the rules --

    def get_urls(self):
        app, model = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("try/", view(self.try_active_view), name=f"{app}_{model}_try_active"),
            path("<int:object_id>/try/", view(self.try_view), name=f"{app}_{model}_try"),
            path("<int:object_id>/replay/", view(self.replay_view), name=f"{app}_{model}_replay"),
            path(
                "<int:object_id>/replay/<int:run_id>/",
                view(self.replay_report_view),
                name=f"{app}_{model}_replay_report",
            ),
            path(
                "<int:object_id>/publish/", view(self.publish_view), name=f"{app}_{model}_publish"
            ),
            path(
                "<int:object_id>/rollback/",
                view(self.rollback_view),
                name=f"{app}_{model}_rollback",
            ),
            *super().get_urls(),
        ]

    def _page(self, request, rule_set: RuleSet, title: str, template: str, **context):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": str(rule_set),
            "rule_set": rule_set,
            **context,
        }
        return TemplateResponse(request, template, context)

    # -- Replay (routing/replay.py) --

    def replay_view(self, request, object_id: int):
        """The traffic to replay on; the replay runs and its report is kept."""
        if not request.user.has_perm(REPLAY_PERMISSION):
            raise PermissionDenied
        rule_set = get_object_or_404(RuleSet, pk=object_id)
        form = ReplayForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            try:
                if data["source"] == "period":
                    traffic = replay_module.load_period(data["start"], data["end"])
                else:
                    traffic = replay_module.load_generated(
                        n=data["n"],
                        seed=data["seed"],
                        day=data["day"],
                        review_queue_id=rule_set.review_queue_id,
                    )
                run = replay_module.replay_run_create(
                    rule_set=rule_set,
                    traffic=traffic,
                    baseline=data["baseline"],
                    actor=request.user,
                )
            except (replay_module.ReplayError, engine.RuleSetError) as error:
                form.add_error(None, str(error))
            else:
                return redirect("admin:routing_ruleset_replay_report", rule_set.pk, run.pk)
        return self._page(
            request,
            rule_set,
            "Replay against past traffic",
            "admin/routing/replay_form.html",
            form=form,
            runs=rule_set.replays.select_related("created_by")[:10],
        )

    def replay_report_view(self, request, object_id: int, run_id: int):
        if not (
            request.user.has_perm(REPLAY_PERMISSION) or request.user.has_perm(PUBLISH_PERMISSION)
        ):
            raise PermissionDenied
        run = get_object_or_404(
            ReplayRun.objects.select_related("rule_set", "created_by"),
            pk=run_id,
            rule_set_id=object_id,
        )
        report = run.report
        return self._page(
            request,
            run.rule_set,
            "Replay report",
            "admin/routing/replay_report.html",
            run=run,
            report=report,
            view=replay_view_context(report),
            stale=run.rule_set_revision != run.rule_set.revision,
        )

    # -- Publication with four eyes, rollback --

    def publish_view(self, request, object_id: int):
        """Ask for publication (the author), approve it (another manager), or withdraw it."""
        if not request.user.has_perm(PUBLISH_PERMISSION):
            raise PermissionDenied
        rule_set = get_object_or_404(RuleSet, pk=object_id)
        form = PublishRequestForm(
            request.POST if request.method == "POST" and "request" in request.POST else None
        )
        if request.method == "POST":
            try:
                if "request" in request.POST:
                    if form.is_valid():
                        rule_set_request_publication(
                            rule_set_id=rule_set.pk,
                            actor=request.user,
                            publish_at=form.cleaned_data["publish_at"],
                            note=form.cleaned_data["note"],
                        )
                        self.message_user(
                            request,
                            f"Publication of {rule_set} requested: another manager approves it.",
                            messages.SUCCESS,
                        )
                        return redirect("admin:routing_ruleset_publish", rule_set.pk)
                elif "approve" in request.POST:
                    rule_set, live = rule_set_approve_publication(
                        rule_set_id=rule_set.pk, actor=request.user
                    )
                    when = (
                        "is now live"
                        if live
                        else f"goes live at {rule_set.publish_at:%Y-%m-%d %H:%M}"
                    )
                    self.message_user(request, f"Approved: {rule_set} {when}.", messages.SUCCESS)
                    return redirect("admin:routing_ruleset_change", rule_set.pk)
                elif "withdraw" in request.POST:
                    rule_set_withdraw_publication(
                        rule_set_id=rule_set.pk,
                        actor=request.user,
                        reason=request.POST.get("reason", ""),
                    )
                    self.message_user(request, "Publication withdrawn.", messages.SUCCESS)
                    return redirect("admin:routing_ruleset_publish", rule_set.pk)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
                return redirect("admin:routing_ruleset_publish", rule_set.pk)
        rule_set.refresh_from_db()
        authors = rule_set_authors(rule_set)
        may_approve = (
            rule_set.publication_state == "requested"
            and request.user.pk not in authors
            and request.user.pk != rule_set.publish_requested_by_id
        )
        return self._page(
            request,
            rule_set,
            "Publish this rule set",
            "admin/routing/ruleset/publish.html",
            form=form,
            may_approve=may_approve,
            is_author=request.user.pk in authors
            or request.user.pk == rule_set.publish_requested_by_id,
            changed=rule_set.publish_revision is not None
            and rule_set.publish_revision != rule_set.revision,
            runs=rule_set.replays.select_related("created_by")[:10],
            events=rule_set.events.select_related("actor")[:50],
            active=RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).first(),
        )

    def rollback_view(self, request, object_id: int):
        """Make this retired set live again at once: one manager, with a reason."""
        if not request.user.has_perm(PUBLISH_PERMISSION):
            raise PermissionDenied
        rule_set = get_object_or_404(RuleSet, pk=object_id)
        form = RollbackForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            try:
                target, previous = rule_set_roll_back(
                    rule_set_id=rule_set.pk, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except ValidationError as error:
                form.add_error(None, " ".join(error.messages))
            else:
                retired = f" {previous} is retired." if previous else ""
                self.message_user(
                    request, f"Rolled back: {target} is live again.{retired}", messages.SUCCESS
                )
                return redirect("admin:routing_ruleset_changelist")
        return self._page(
            request,
            rule_set,
            f"Roll back to version {rule_set.version}",
            "admin/routing/ruleset/rollback.html",
            form=form,
            active=RuleSet.objects.filter(status=RuleSet.Status.ACTIVE).first(),
            events=rule_set.events.select_related("actor")[:50],
        )

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


def _percent(share: float | None) -> str:
    return DASH if share is None else f"{share * 100:.1f}%"


def replay_view_context(report: dict) -> dict:
    """What the report page needs that a template cannot compute: the diagonal of the matrix
    and the shares as percentages."""
    queues = report["matrix"]["queues"]
    agreement = report["agreement"]
    return {
        "rows": [
            {
                "from": row["from"],
                "total": row["total"],
                "cells": [
                    {"n": n, "same": queues[i] == row["from"]} for i, n in enumerate(row["cells"])
                ],
            }
            for row in report["matrix"]["rows"]
        ],
        "queue_before": _percent(agreement["queue"]["baseline"]),
        "queue_draft": _percent(agreement["queue"]["draft"]),
        "type_before": _percent(agreement["type"]["baseline"]),
        "type_draft": _percent(agreement["type"]["draft"]),
    }


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
        _record_edits(request, form.instance.rule_set_id, previous)

    def delete_model(self, request, obj):
        rule_set_id = obj.rule_set_id
        super().delete_model(request, obj)
        rule_set_touch(rule_set_id)
        _record_edits(request, rule_set_id)

    def delete_queryset(self, request, queryset):
        rule_set_ids = set(queryset.values_list("rule_set_id", flat=True))
        super().delete_queryset(request, queryset)
        rule_set_touch(*rule_set_ids)
        _record_edits(request, *rule_set_ids)

    def has_change_permission(self, request, obj=None):
        return not (obj is not None and _retired(obj.rule_set)) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request, obj=None):
        return not (obj is not None and _retired(obj.rule_set)) and super().has_delete_permission(
            request, obj
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "rule_set":
            kwargs["queryset"] = RuleSet.objects.exclude(status=RuleSet.Status.RETIRED)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        live = obj is not None and obj.rule_set.status == RuleSet.Status.ACTIVE
        if live and request.method == "GET":
            warning = LIVE_WARNING.format(version=obj.rule_set.version)
            self.message_user(request, warning, messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

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
