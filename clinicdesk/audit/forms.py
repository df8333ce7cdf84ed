from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.selectors import CHANGE_KINDS, RULE_MODELS, Filters
from queues.models import IntegrationClient, TaskEvent

# A year and a day: "a year of entries" fits, "everything since the start" does not.
MAX_RANGE_DAYS = 367

KIND_CHOICES = [
    ("", "Any kind"),
    (
        "Timeline (transitions and routing)",
        [("event", "Any timeline event")]
        + [(f"event:{value}", label) for value, label in TaskEvent.Kind.choices],
    ),
    (
        "Field changes",
        [("change", "Any field change")]
        + [(f"change:{value}", label) for value, label in CHANGE_KINDS.items()],
    ),
    ("Reads", [("access", "Read a task")]),
    (
        "Sign-in and access",
        [("security", "Any sign-in or refusal")]
        + [(f"security:{value}", label) for value, label in AuditEvent.Kind.choices],
    ),
]


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


class DateRangeForm(forms.Form):
    """From and to dates (both days included), required, at most MAX_RANGE_DAYS apart."""

    start = forms.DateField(
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"required": "Enter the first day to search (a date range is required)."},
    )
    end = forms.DateField(
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"required": "Enter the last day to search (a date range is required)."},
    )

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if end < start:
                self.add_error("end", "The last day must not be before the first day.")
            elif (end - start).days + 1 > MAX_RANGE_DAYS:
                self.add_error(
                    "end",
                    f"Search at most {MAX_RANGE_DAYS - 1} days at a time; "
                    "narrow the dates and export each period.",
                )
        return data

    def range(self) -> tuple[datetime, datetime]:
        return (
            _start_of(self.cleaned_data["start"]),
            _start_of(self.cleaned_data["end"] + timedelta(days=1)),
        )


class AuditSearchForm(DateRangeForm):
    task = forms.IntegerField(label="Task number", required=False, min_value=1)
    mrn = forms.CharField(label="Patient MRN", required=False, max_length=40)
    person = forms.CharField(
        label="Person", required=False, max_length=150, help_text="Their username."
    )
    client = forms.CharField(
        label="Integration client",
        required=False,
        max_length=60,
        help_text="The client's name, as in client:<name>.",
    )
    rule = forms.CharField(
        label="Rule",
        required=False,
        max_length=40,
        help_text="routing:<id> or classification:<id>.",
    )
    kind = forms.ChoiceField(label="Action", required=False, choices=KIND_CHOICES)

    def clean_mrn(self) -> str:
        return self.cleaned_data["mrn"].strip()

    def clean_person(self):
        username = self.cleaned_data["person"].strip()
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).only("id").first()
        if user is None:
            raise forms.ValidationError(f"Nobody has the username “{username}”.")
        return user.pk

    def clean_client(self):
        name = self.cleaned_data["client"].strip().removeprefix("client:")
        if not name:
            return None
        client = IntegrationClient.objects.filter(name=name).only("id", "name", "user_id").first()
        if client is None:
            raise forms.ValidationError(f"No integration client is called “{name}”.")
        return client

    def clean_rule(self):
        value = self.cleaned_data["rule"].strip().lower()
        if not value:
            return None
        kind, _, number = value.partition(":")
        if kind not in RULE_MODELS or not number.isdigit():
            raise forms.ValidationError(
                "Write the rule as routing:<id> or classification:<id>, e.g. routing:12."
            )
        return kind, int(number)

    def filters(self) -> Filters:
        data = self.cleaned_data
        start, end = self.range()
        client = data.get("client")
        return Filters(
            start=start,
            end=end,
            task_id=data.get("task"),
            mrn=data.get("mrn") or "",
            user_id=data.get("person"),
            client_label=client.actor_label if client else "",
            client_user_id=client.user_id if client else None,
            rule=data.get("rule"),
            kind=data.get("kind") or "",
        )
