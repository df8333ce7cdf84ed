"""Forms of the intake pages: the front-desk form, the Failed intake filters and correction.

The front-desk form checks what a person can fix on the spot (with the same functions the
stored payload is read with, `queues.intake.form`) and never saves: the page stores the
cleaned data raw and hands it to intake.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from queues.intake import form as form_adapter
from queues.models import Channel, InboundMessage, IntakeField, Priority, TaskType

DETAIL_FIELDS = (
    IntakeField.PATIENT_MRN,
    IntakeField.PATIENT_NAME,
    IntakeField.PATIENT_BIRTH_DATE,
    IntakeField.CALLBACK_NUMBER,
    IntakeField.PAYER,
    IntakeField.REFERRING_PROVIDER,
)
URGENCY_CHOICES = [
    ("", "As usual for the type"),
    (Priority.P1, "Urgent: needs someone within the hour"),
    (Priority.P2, "Soon: today"),
    (Priority.P3, "Routine"),
    (Priority.P4, "Low: no rush"),
]


class FrontDeskForm(forms.Form):
    """A walk-in or a call, as the person at the desk logs it."""

    channel = forms.ChoiceField(
        label="How did it come in?",
        choices=[(Channel.FORM, "Walk-in"), (Channel.PHONE, "Phone call")],
        initial=Channel.FORM,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose walk-in or phone call."},
    )
    task_type = forms.ModelChoiceField(
        label="Task type",
        queryset=TaskType.objects.none(),
        to_field_name="code",
        required=False,
        empty_label="Not sure: let the rules decide",
        error_messages={
            "invalid_choice": "That task type is no longer offered: choose another, or let the "
            "rules decide."
        },
        help_text="The routing rules still choose the queue; your choice tells them the type.",
    )
    subject = forms.CharField(
        label="What do they need?",
        max_length=form_adapter.SUBJECT_MAX,
        error_messages={
            "required": "Say in a few words what the person needs, e.g. “Needs a copy of "
            "the visit summary”.",
            "max_length": "Keep the summary under %(limit_value)d characters; put the rest in "
            "the details.",
        },
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    details = forms.CharField(
        label="Details",
        required=False,
        max_length=form_adapter.DETAILS_MAX,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What was said, in the caller's words where it matters.",
    )
    patient_mrn = forms.CharField(
        label="Patient MRN",
        required=False,
        max_length=form_adapter.MAX_LENGTHS[IntakeField.PATIENT_MRN],
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    patient_name = forms.CharField(
        label="Patient name",
        required=False,
        max_length=form_adapter.MAX_LENGTHS[IntakeField.PATIENT_NAME],
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    patient_birth_date = forms.DateField(
        label="Date of birth",
        required=False,
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": "Enter the date of birth as YYYY-MM-DD, e.g. 1984-03-27."},
    )
    callback_number = forms.CharField(
        label="Callback number",
        required=False,
        max_length=form_adapter.MAX_LENGTHS[IntakeField.CALLBACK_NUMBER],
        widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "off"}),
    )
    payer = forms.CharField(
        label="Payer",
        required=False,
        max_length=form_adapter.MAX_LENGTHS[IntakeField.PAYER],
        help_text="The patient's insurer, e.g. Aetna or Medicare.",
    )
    referring_provider = forms.CharField(
        label="Referring provider",
        required=False,
        max_length=form_adapter.MAX_LENGTHS[IntakeField.REFERRING_PROVIDER],
    )
    urgency = forms.TypedChoiceField(
        label="Urgency",
        required=False,
        coerce=int,
        empty_value=None,
        choices=URGENCY_CHOICES,
        help_text="Symptoms such as chest pain are always routed to clinical triage at P1.",
    )
    submission_id = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task_type"].queryset = TaskType.objects.filter(is_active=True).order_by("name")
        if not self.is_bound and not self.initial.get("submission_id"):
            # One id per form shown: a second press of Submit finds the task of the first.
            self.initial["submission_id"] = uuid.uuid4()
        for name in self.required_names:
            self.fields[name].widget.attrs["aria-required"] = "true"
        # With htmx, choosing a type swaps in the fields it needs (the typed values kept).
        self.fields["task_type"].widget.attrs.update(
            {
                "hx-post": reverse("queues:intake_fields"),
                "hx-trigger": "change",
                "hx-target": "#intake-fields",
                "hx-swap": "innerHTML",
                "hx-include": "closest form",
                "aria-controls": "intake-fields",
            }
        )

    # --- which fields the chosen type needs ---------------------------------------------------

    @property
    def chosen_type(self) -> TaskType | None:
        """The type chosen in the submitted (or, for the htmx refresh, initial) values."""
        if not hasattr(self, "_chosen_type"):
            source = self.data if self.is_bound else self.initial
            code = source.get("task_type") or ""
            if isinstance(code, TaskType):
                code = code.code
            self._chosen_type = (
                self.fields["task_type"].queryset.filter(code=str(code)).first() if code else None
            )
        return self._chosen_type

    @property
    def required_names(self) -> list[str]:
        return list(self.chosen_type.required_fields) if self.chosen_type else []

    def needed_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in DETAIL_FIELDS if name in self.required_names]

    def other_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in DETAIL_FIELDS if name not in self.required_names]

    # --- cleaning -------------------------------------------------------------------------------

    def clean_subject(self) -> str:
        subject = self.cleaned_data["subject"].strip()
        if not subject:
            raise ValidationError("Say in a few words what the person needs.")
        return subject

    def clean_patient_birth_date(self):
        value = self.cleaned_data["patient_birth_date"]
        if value is None:
            return None
        try:
            return form_adapter.clean_birth_date(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None

    def clean_callback_number(self) -> str:
        try:
            return form_adapter.clean_callback_number(self.cleaned_data["callback_number"])
        except ValueError as error:
            raise ValidationError(str(error)) from None

    def clean(self):
        data = super().clean()
        task_type = data.get("task_type")
        missing = form_adapter.missing_required(task_type, data)
        for name, messages in missing.items():
            # A field that already failed its own check keeps that, more precise, message.
            if name not in self.errors:
                self.add_error(name, messages)
        return data


# --- Failed intake ---------------------------------------------------------------------------

AGES = {
    "": ("Any time", None, None),
    "hour": ("Last hour", timedelta(hours=1), None),
    "day": ("Last 24 hours", timedelta(days=1), None),
    "week": ("Last 7 days", timedelta(days=7), None),
    "older": ("Older than 7 days", None, timedelta(days=7)),
}


class FailedFilterForm(forms.Form):
    KEYS = ("channel", "age")

    channel = forms.ChoiceField(
        required=False, choices=[("", "Any channel"), *Channel.choices], label="Channel"
    )
    age = forms.ChoiceField(
        required=False,
        choices=[(key, label) for key, (label, _, _) in AGES.items()],
        label="Received",
    )

    def filter_queryset(self, messages: QuerySet[InboundMessage]) -> QuerySet[InboundMessage]:
        self.is_valid()
        channel = self.cleaned_data.get("channel")
        age = self.cleaned_data.get("age") or ""
        if channel:
            messages = messages.filter(channel=channel)
        _, within, beyond = AGES[age]
        now = timezone.now()
        if within is not None:
            messages = messages.filter(received_at__gte=now - within)
        if beyond is not None:
            messages = messages.filter(received_at__lt=now - beyond)
        return messages

    @property
    def active(self) -> bool:
        return any(self.data.get(key) for key in self.KEYS)


class CorrectionForm(forms.Form):
    payload = forms.CharField(
        label="Corrected payload",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "class": "mono"}),
        error_messages={"required": "The corrected payload is empty: paste or edit it first."},
    )

    def __init__(self, *args, max_bytes: int, current: bytes = b"", **kwargs):
        super().__init__(*args, **kwargs)
        self.max_bytes = max_bytes
        self.current = current

    def clean_payload(self) -> bytes:
        text = self.cleaned_data["payload"]
        # Browsers send a textarea's lines ending in CRLF; keep the payload's own endings.
        if b"\r\n" not in self.current:
            text = text.replace("\r\n", "\n")
        data = text.encode("utf-8")
        if len(data) > self.max_bytes:
            raise ValidationError(
                f"The correction is {len(data):,} bytes; at most {self.max_bytes:,} can be "
                "edited here."
            )
        if data == self.current:
            raise ValidationError(
                "Nothing was changed: edit the payload, or use Retry to read it again as is."
            )
        return data
