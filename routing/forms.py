"""Forms for the routing admin. A rule is validated by the engine's own functions
(`engine.validate_classification_rule`, `engine.validate_routing_rule`), against the task types
and queues the routing snapshot loads, so a rule that saves is a rule that runs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist
from django.utils import timezone

from accounts.models import WEEKDAYS, Site
from queues.models import Channel, Queue, TaskType
from routing import engine
from routing.models import ClassificationRule, RoutingRule, RuleSet


def text_lines(text: str | None) -> tuple[str, ...]:
    """The model's one-entry-a-line text as the engine's tuple (blank lines dropped)."""
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def channels_field() -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        choices=Channel.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means any channel.",
    )


class EngineValidationMixin:
    """Runs the engine's validation in `clean()` and files each message under the form field
    it is about. The rule-kind classes below supply `engine_fields()` (the form's values as
    the engine's dict) and `engine_errors(fields)` (the engine's validation function).

    A value the form does not edit (the compact forms of the rule list and the rule set's
    inlines edit only order, name, mode and rollout) is taken from the saved rule, so the
    whole rule is validated whichever part of it changed.
    """

    # engine field name -> form field name, where they differ
    engine_field_names: Mapping[str, str] = {}
    # The compact forms leave a row the manager did not touch alone: it saved before, and
    # a rule made invalid since (say, its task type closed) must not block reordering others.
    validate_unchanged = True

    def value(self, name: str, default: Any = None) -> Any:
        if name in self.fields:
            return self.cleaned_data.get(name, default)
        if name in ("task_types", "sites"):  # many-to-many: only a saved rule has them
            return list(getattr(self.instance, name).all()) if self.instance.pk else []
        return getattr(self.instance, name, default)

    def label_of(self, name: str) -> str:
        try:
            label = self.instance._meta.get_field(name).verbose_name
        except FieldDoesNotExist:
            label = name.replace("_", " ")
        return str(label).capitalize()

    def clean(self):
        cleaned_data = super().clean()
        if not self.validate_unchanged and self.instance.pk and not self.has_changed():
            return cleaned_data
        had_errors = bool(self._errors)
        for key, messages in self.engine_errors(self.engine_fields()).items():
            name = self.engine_field_names.get(key, key)
            if name == NON_FIELD_ERRORS:  # the engine uses the same "__all__" key
                # With a field already wrong the engine saw a default in its place, so a
                # whole-rule message ("no condition") could be a false alarm.
                if not had_errors:
                    for message in messages:
                        self.add_error(None, message)
                continue
            if name in self._errors:
                continue  # the form already says what is wrong with this field
            if name not in self.fields:
                label = self.label_of(name)
                for message in messages:
                    self.add_error(None, f"{label}: {message}")
                continue
            for message in messages:
                self.add_error(name, message)
        return cleaned_data


def active_task_type_codes() -> set[str]:
    # The routing snapshot loads active task types only; a rule naming another would be
    # disabled when the rule set is compiled.
    return set(TaskType.objects.filter(is_active=True).values_list("code", flat=True))


# --- Classification rules ----------------------------------------------------------------


class ClassificationRuleValidation(EngineValidationMixin):
    def engine_fields(self) -> dict[str, Any]:
        task_type = self.value("set_task_type")
        return {
            "name": self.value("name", ""),
            "mode": self.value("mode", "active"),
            "rollout_percent": self.value("rollout_percent", 100),
            "channels": tuple(self.value("channels") or ()),
            "phrases": text_lines(self.value("phrases", "")),
            "phrase_match": self.value("phrase_match", "any"),
            "regex": self.value("regex", ""),
            "request_types": tuple(self.value("request_types") or ()),
            "source_systems": tuple(self.value("source_systems") or ()),
            "set_task_type": task_type.code if task_type is not None else "",
            "set_priority": self.value("set_priority"),
            "min_priority": self.value("min_priority"),
            "add_tags": tuple(self.value("add_tags") or ()),
            "stop": bool(self.value("stop", False)),
        }

    def engine_errors(self, fields: dict[str, Any]) -> dict[str, list[str]]:
        return engine.validate_classification_rule(fields, task_type_codes=active_task_type_codes())


class ClassificationRuleForm(ClassificationRuleValidation, forms.ModelForm):
    channels = channels_field()

    class Meta:
        model = ClassificationRule
        fields = [
            "rule_set",
            "name",
            "order",
            "mode",
            "rollout_percent",
            "channels",
            "phrases",
            "phrase_match",
            "regex",
            "request_types",
            "source_systems",
            "set_task_type",
            "set_priority",
            "min_priority",
            "add_tags",
            "stop",
            "notes",
        ]
        widgets = {"phrases": forms.Textarea(attrs={"rows": 4})}
        help_texts = {
            "request_types": "Separate with commas; empty means any.",
            "source_systems": "Separate with commas; empty means any.",
            "add_tags": "Separate with commas, e.g. appeal,urgent-callback.",
        }


class ClassificationRuleListForm(ClassificationRuleValidation, forms.ModelForm):
    """The rule list and the rule set's inline edit only a few fields of each rule."""

    validate_unchanged = False

    class Meta:
        model = ClassificationRule
        fields = ["order", "name", "mode", "rollout_percent"]


# --- Routing rules -----------------------------------------------------------------------


class RoutingRuleValidation(EngineValidationMixin):
    engine_field_names = {"target_queue_id": "target_queue", "site_ids": "sites"}

    def engine_fields(self) -> dict[str, Any]:
        queue = self.value("target_queue")
        skill = self.value("required_skill")
        return {
            "name": self.value("name", ""),
            "mode": self.value("mode", "active"),
            "rollout_percent": self.value("rollout_percent", 100),
            "task_types": tuple(t.code for t in self.value("task_types") or ()),
            "priority_min": self.value("priority_min", 1),
            "priority_max": self.value("priority_max", 4),
            "tags_any": tuple(self.value("tags_any") or ()),
            "channels": tuple(self.value("channels") or ()),
            "site_ids": tuple(s.pk for s in self.value("sites") or ()),
            "business_hours": self.value("business_hours", "any"),
            "weekdays": tuple(self.value("weekdays") or ()),
            "time_from": self.value("time_from"),
            "time_to": self.value("time_to"),
            "target_queue_id": queue.pk if queue is not None else None,
            "required_skill": skill.code if skill is not None else "",
            "min_skill_level": self.value("min_skill_level", 1),
            "priority_override": self.value("priority_override"),
        }

    def engine_errors(self, fields: dict[str, Any]) -> dict[str, list[str]]:
        return engine.validate_routing_rule(
            fields,
            queue_ids=set(Queue.objects.filter(is_active=True).values_list("id", flat=True)),
            task_type_codes=active_task_type_codes(),
        )


class RoutingRuleForm(RoutingRuleValidation, forms.ModelForm):
    channels = channels_field()
    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every day (in the site's time zone).",
    )

    class Meta:
        model = RoutingRule
        fields = [
            "rule_set",
            "name",
            "order",
            "mode",
            "rollout_percent",
            "task_types",
            "priority_min",
            "priority_max",
            "tags_any",
            "channels",
            "sites",
            "business_hours",
            "weekdays",
            "time_from",
            "time_to",
            "target_queue",
            "required_skill",
            "min_skill_level",
            "priority_override",
            "notes",
        ]
        help_texts = {"tags_any": "Separate with commas; empty means any."}


class RoutingRuleListForm(RoutingRuleValidation, forms.ModelForm):
    validate_unchanged = False

    class Meta:
        model = RoutingRule
        fields = ["order", "name", "mode", "rollout_percent"]


# --- Rule sets ---------------------------------------------------------------------------


class RuleSetForm(forms.ModelForm):
    class Meta:
        model = RuleSet
        fields = [
            "name",
            "version",
            "description",
            "based_on",
            "review_queue",
            "red_flag_phrases",
            "red_flag_task_type",
            "red_flag_queue",
        ]
        widgets = {"red_flag_phrases": forms.Textarea(attrs={"rows": 6})}

    def clean_red_flag_phrases(self) -> str:
        text = self.cleaned_data["red_flag_phrases"]
        # Red-flag phrases match as classification phrases do: the engine's phrase check says
        # which of them could never match.
        errors = engine.validate_classification_rule(
            {"name": "red flags", "phrases": text_lines(text), "stop": True}
        )
        if errors.get("phrases"):
            raise forms.ValidationError(errors["phrases"])
        return text


# --- Try the rules -----------------------------------------------------------------------


class TryRulesForm(forms.Form):
    channel = forms.ChoiceField(choices=Channel.choices, initial=Channel.PORTAL)
    subject = forms.CharField(max_length=300)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), required=False)
    request_type = forms.CharField(
        max_length=60, required=False, help_text="As an intake form or sending system sets it."
    )
    source_system = forms.CharField(max_length=80, required=False)
    site = forms.ModelChoiceField(Site.objects.all(), required=False)
    patient_mrn = forms.CharField(
        label="Patient MRN",
        max_length=40,
        required=False,
        help_text="Optional: shows who would get it for continuity with the patient's open work.",
    )
    at = forms.DateTimeField(
        label="As if it arrived at",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty means now. Staff shifts and availability are read as they are now.",
    )

    def preview_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        site = data.get("site")
        return {
            "channel": data["channel"],
            "subject": data["subject"],
            "body": data.get("body", ""),
            "request_type": data.get("request_type", ""),
            "source_system": data.get("source_system", ""),
            "site_id": site.pk if site is not None else None,
            "patient_mrn": data.get("patient_mrn", ""),
            "now": data.get("at"),
        }


# --- Rule-set versions: replay, publication, rollback ---------------------------------------

LOCAL_MINUTE = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


def _moment(label: str, help_text: str = "") -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=LOCAL_MINUTE,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_MINUTE[0]),
        help_text=help_text,
    )


class ReplayForm(forms.Form):
    """What traffic to replay a rule set on. `clean` returns what `routing.replay` takes."""

    source = forms.ChoiceField(
        choices=[
            ("period", "Past traffic: the tasks created in a period"),
            ("generated", "A generated clinic morning"),
        ],
        initial="period",
        widget=forms.RadioSelect,
    )
    start = _moment("From", "Clinic time. Empty: seven days before the end.")
    end = _moment("To", "Clinic time, not included. Empty: now.")
    baseline = forms.ChoiceField(
        label="Compare with",
        choices=[
            ("recorded", "What happened: the routing recorded on each task"),
            ("active", "The active rule set, replayed on the same tasks"),
        ],
        initial="recorded",
        help_text="A generated morning is always compared with the active rule set.",
    )
    n = forms.IntegerField(
        label="Requests", min_value=1, max_value=10_000, initial=250, required=False
    )
    seed = forms.IntegerField(initial=2025, required=False, help_text="Same seed, same morning.")
    day = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The morning's date (staff shifts follow it). Empty: the last weekday.",
    )

    def clean(self):
        data = super().clean()
        if data.get("source") == "period":
            end = data.get("end") or timezone.now()
            start = data.get("start") or end - timedelta(days=7)
            if start >= end:
                self.add_error("end", "The end comes after the start.")
            data["start"], data["end"] = start, end
        else:
            today = timezone.localdate()
            day = data.get("day") or today - timedelta(days=max(0, today.weekday() - 4))
            data["day"] = day
            data["n"] = data.get("n") or 250
            data["seed"] = data.get("seed") if data.get("seed") is not None else 2025
        return data


class PublishRequestForm(forms.Form):
    publish_at = _moment(
        "Take effect at", "Clinic time. Empty: as soon as a second manager approves."
    )
    note = forms.CharField(
        label="What changes and why",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For the approving manager; the replay reports of this draft are shown too.",
    )


class RollbackForm(forms.Form):
    reason = forms.CharField(
        label="Why roll back",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded with your name on both rule sets' history.",
    )
