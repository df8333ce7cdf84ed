"""One small form per action on a task. Each cleans the input into the keyword arguments of
the one service function that performs the action; none of them saves anything.

Every form but the comment carries the task's version from the page, so that a change made by
someone else in the meantime is refused instead of overwritten.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from queues import selectors
from queues.models import Priority, Queue, Task, TaskType

HOLD_REASONS = (
    "Waiting for the patient to call back",
    "Waiting for the payer's answer",
    "Waiting for records from another provider",
    "Waiting for a provider's signature",
    "Waiting for the referral packet to be completed",
)
RESOLVE_OUTCOMES = (
    "Done",
    "Patient contacted",
    "Appointment scheduled",
    "Appeal filed",
    "Authorization approved",
    "Authorization denied",
    "Records sent",
    "No action needed",
    "Could not reach the patient",
)
REROUTE_REASONS = (
    "Sent to the wrong team",
    "Needs a skill this team does not have",
    "Needs clinical review",
    "Belongs with the patient's other open task",
)
REASSIGN_REASONS = (
    "Balancing the team's workload",
    "Covering for someone who is away",
    "Needs this person's expertise",
    "Continuity with the patient",
)
OTHER = "other"
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


class TaskActionForm(forms.Form):
    """Base: the task it acts on, the version the person saw, and the action's metadata."""

    action = ""
    label = ""
    submit_label = ""
    # Service errors name their own fields; some forms call them differently.
    error_fields: dict[str, str] = {}

    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    def __init__(self, *args, task: Task, user=None, **kwargs):
        kwargs.setdefault("auto_id", f"{self.action}-%s")
        kwargs.setdefault("initial", {}).setdefault("expected_version", task.version)
        super().__init__(*args, **kwargs)
        self.task = task
        self.user = user

    def add_service_error(self, error: ValidationError) -> None:
        """Put a service's ValidationError on the fields it names (else on the form)."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, errors in error.error_dict.items():
            name = self.error_fields.get(name, name)
            self.add_error(name if name in self.fields else None, errors)


class ClaimForm(TaskActionForm):
    action, label = "claim", "Claim"


class StartForm(TaskActionForm):
    action, label = "start", "Start"


class ResumeForm(TaskActionForm):
    action, label = "resume", "Resume"


def _default_follow_up() -> datetime:
    """Tomorrow at 9:00 in the clinic's time zone: when most outside answers are chased."""
    tomorrow = timezone.localdate() + timedelta(days=1)
    return timezone.make_aware(datetime.combine(tomorrow, datetime.min.time().replace(hour=9)))


class HoldForm(TaskActionForm):
    action, label, submit_label = "hold", "Hold", "Put on hold"

    reason = forms.CharField(
        label="Waiting for",
        max_length=200,
        error_messages={
            "required": "Say what the task is waiting for, e.g. “Waiting for the payer's answer”.",
            "max_length": "Keep the reason under 200 characters; add details as a comment.",
        },
        widget=forms.TextInput(attrs={"list": "hold-reasons", "autocomplete": "off"}),
    )
    follow_up_at = forms.DateTimeField(
        label="Follow up on",
        input_formats=[DATETIME_LOCAL],
        error_messages={
            "required": "Choose when to follow up if nothing has come back.",
            "invalid": "Enter the follow-up date and time, e.g. tomorrow at 9:00.",
        },
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL),
        help_text="The task leaves your load until then; it shows on the Holding page.",
    )
    suggestions = HOLD_REASONS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["follow_up_at"].initial = _default_follow_up
        now = timezone.localtime()
        self.fields["follow_up_at"].widget.attrs["min"] = now.strftime(DATETIME_LOCAL)

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Say what the task is waiting for.")
        return reason

    def clean_follow_up_at(self) -> datetime:
        follow_up = self.cleaned_data["follow_up_at"]
        if follow_up <= timezone.now():
            raise ValidationError(
                "Choose a follow-up time in the future (it was %(when)s).",
                params={"when": selectors.format_moment(follow_up)},
            )
        return follow_up


class ResolveForm(TaskActionForm):
    action, label, submit_label = "resolve", "Resolve", "Resolve task"

    outcome = forms.ChoiceField(
        label="Outcome",
        choices=[("", "Choose the outcome…"), *((o, o) for o in RESOLVE_OUTCOMES)],
        error_messages={
            "required": "Choose the outcome of the task.",
            "invalid_choice": "Choose one of the listed outcomes.",
        },
    )
    note = forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What was done, for whoever reads the task later.",
    )


class ReopenForm(TaskActionForm):
    action, label, submit_label = "reopen", "Reopen", "Reopen task"

    reason = forms.CharField(
        label="Why reopen it",
        max_length=500,
        error_messages={"required": "Say why the task is reopened."},
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class ReleaseForm(TaskActionForm):
    action, label, submit_label = "release", "Release", "Release to the queue"

    reason = forms.CharField(
        label="Reason (optional)",
        required=False,
        max_length=500,
        help_text="The task goes back to its queue, unassigned, and is offered to someone else.",
    )


class RerouteForm(TaskActionForm):
    action, label, submit_label = "reroute", "Reroute", "Reroute task"
    error_fields = {"queue": "to_queue"}

    to_queue = forms.ModelChoiceField(
        label="Send to queue",
        queryset=Queue.objects.none(),
        empty_label="Choose a queue…",
        error_messages={
            "required": "Choose the queue the task should go to.",
            "invalid_choice": "That queue is not available; choose another.",
        },
    )
    reason_choice = forms.ChoiceField(
        label="Reason",
        choices=[
            ("", "Choose a reason…"),
            *((r, r) for r in REROUTE_REASONS),
            (OTHER, "Other (explain below)"),
        ],
        error_messages={"required": "Choose why the task moves."},
    )
    reason = forms.CharField(
        label="Details",
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Helps the team tune the routing rules.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["to_queue"]
        field.queryset = selectors.reroute_targets(self.task)
        field.label_from_instance = lambda q: f"{q.name} — {q.department.name}"

    def clean(self):
        data = super().clean()
        choice = data.pop("reason_choice", "")
        details = (data.get("reason") or "").strip()
        if choice == OTHER and not details:
            self.add_error("reason", "Describe the reason when you choose “Other”.")
        elif choice:
            parts = [details] if choice == OTHER else [choice, details]
            data["reason"] = ": ".join(part for part in parts if part)
        return data


class ReassignForm(TaskActionForm):
    action, label, submit_label = "reassign", "Reassign", "Reassign task"
    error_fields = {"assignee": "to_user"}

    to_user = forms.ModelChoiceField(
        label="Give it to",
        queryset=get_user_model().objects.none(),
        empty_label="Choose a person…",
        error_messages={
            "required": "Choose the person to give the task to.",
            "invalid_choice": "That person cannot work this queue; choose another.",
        },
    )
    reason = forms.CharField(
        label="Reason",
        max_length=500,
        error_messages={"required": "Say why the task is reassigned."},
        widget=forms.TextInput(attrs={"list": "reassign-reasons", "autocomplete": "off"}),
    )
    suggestions = REASSIGN_REASONS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["to_user"]
        field.queryset = selectors.queue_workers(self.task)
        field.label_from_instance = _worker_label


def _worker_label(user) -> str:
    staff = user.staff
    state = staff.get_availability_display().lower()
    return (
        f"{selectors.person_name(user)} — {staff.active_load} of {staff.capacity} in use, {state}"
    )


class ClassifyForm(TaskActionForm):
    action, label, submit_label = "classify", "Classify", "Classify and route"
    error_fields = {"task_type": "task_type_code"}

    task_type_code = forms.ModelChoiceField(
        label="Task type",
        queryset=TaskType.objects.none(),
        to_field_name="code",
        empty_label="Choose a type…",
        error_messages={
            "required": "Choose the task type; the routing rules then pick the queue.",
            "invalid_choice": "Choose one of the clinic's task types.",
        },
    )
    priority = forms.TypedChoiceField(
        label="Priority",
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "The type's default"), *Priority.choices],
    )
    reason = forms.CharField(label="Note (optional)", required=False, max_length=500)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task_type_code"].queryset = TaskType.objects.filter(is_active=True).order_by(
            "name"
        )

    def clean_task_type_code(self) -> str:
        return self.cleaned_data["task_type_code"].code


class CommentForm(TaskActionForm):
    """A comment adds to the timeline and changes nothing, so a stale page may still post
    one: no version check."""

    action, label, submit_label = "comment", "Comment", "Add comment"

    text = forms.CharField(
        label="Comment",
        max_length=4000,
        error_messages={"required": "Write the comment first."},
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expected_version"].required = False

    def clean(self):
        data = super().clean()
        data.pop("expected_version", None)
        return data


class SplitForm(TaskActionForm):
    """Undo a wrong merge: the duplicate becomes a request of its own, routed by the rules."""

    action, label, submit_label = "split", "Split out", "Split out as its own request"

    reason = forms.CharField(
        label="Why it is a separate request",
        max_length=500,
        error_messages={
            "required": "Say why this is not the same request, e.g. “A different bill”.",
            "max_length": "Keep the reason under 500 characters; add details as a comment.",
        },
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="It leaves the original and is routed by the rules like a new request.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Say why this is not the same request.")
        return reason


ACTION_FORMS: dict[str, type[TaskActionForm]] = {
    form.action: form
    for form in (
        ClaimForm,
        StartForm,
        ResumeForm,
        HoldForm,
        ResolveForm,
        ReopenForm,
        ReleaseForm,
        RerouteForm,
        ReassignForm,
        ClassifyForm,
        CommentForm,
        SplitForm,
    )
}
