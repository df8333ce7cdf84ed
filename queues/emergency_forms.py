"""The Emergency access form: a task number and the reason, checked as the service checks it."""

from __future__ import annotations

from django import forms

from queues.emergency import REASON_MAX_LENGTH, clean_reason

# Task numbers are PostgreSQL bigints; a larger number would fail in the database, not here.
MAX_TASK_NUMBER = 2**63 - 1


class EmergencyAccessForm(forms.Form):
    task_number = forms.IntegerField(
        label="Task number",
        min_value=1,
        max_value=MAX_TASK_NUMBER,
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
        error_messages={
            "required": "Enter the number of the task you need to read.",
            "invalid": "Enter the task number as digits only, without the #.",
            "min_value": "Task numbers start at 1.",
            "max_value": "No task has a number that large.",
        },
    )
    reason = forms.CharField(
        label="Why do you need it now?",
        max_length=REASON_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded with your name and shown to compliance. Do not write the "
        "patient's details here: the task number is enough.",
        error_messages={"required": "Say why you need this task now."},
    )

    def clean_reason(self) -> str:
        return clean_reason(self.cleaned_data["reason"])
