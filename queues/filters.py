"""The forms of the list pages (My work, a queue, Holding): what a person filters and sorts by,
and the two actions taken from a list (the availability switch, a supervisor's bulk
reassignment). Like every form here they clean values and never save.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet
from guardian.models import GroupObjectPermission, UserObjectPermission

from accounts.models import StaffProfile
from queues.models import Priority, Queue, Task, TaskType

# Age bands over a task's creation time: (label, at least, less than).
AGE_BANDS = {
    "lt1h": ("Under 1 hour", None, timedelta(hours=1)),
    "1h-4h": ("1 to 4 hours", timedelta(hours=1), timedelta(hours=4)),
    "4h-24h": ("4 to 24 hours", timedelta(hours=4), timedelta(hours=24)),
    "1d-3d": ("1 to 3 days", timedelta(days=1), timedelta(days=3)),
    "gt3d": ("Over 3 days", timedelta(days=3), None),
}

# The order of each sort, as (field, descending) pairs; the last pair makes it total, which
# keyset pagination needs.
SORTS = {
    "priority": (("priority", False), ("created_at", False), ("id", False)),
    "age": (("created_at", False), ("id", False)),
    "updated": (("updated_at", True), ("id", True)),
}
SORT_CHOICES = [
    ("priority", "Priority, then oldest"),
    ("age", "Oldest first"),
    ("updated", "Recently updated"),
]
RESOLVED = Task.Status.RESOLVED


class QueueFilterForm(forms.Form):
    """The filters and sort of a queue page, read from the query string (all optional)."""

    status = forms.ChoiceField(
        required=False,
        choices=[
            ("", "All open"),
            *((s.value, s.label) for s in Task.Status if s in Task.OPEN_STATUSES),
            (RESOLVED.value, RESOLVED.label),
        ],
    )
    priority = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Any priority"), *Priority.choices],
    )
    type = forms.ModelChoiceField(
        required=False,
        queryset=TaskType.objects.filter(is_active=True).order_by("name"),
        to_field_name="code",
        empty_label="Any type",
    )
    age = forms.ChoiceField(
        required=False,
        choices=[("", "Any age"), *((key, band[0]) for key, band in AGE_BANDS.items())],
    )
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    # The query-string keys that describe a list (and must survive a refresh or a redirect).
    KEYS = ("status", "priority", "type", "age", "sort")

    def filters(self) -> dict:
        """The valid filters; an invalid one is dropped rather than failing the whole page."""
        self.is_valid()
        return {key: self.cleaned_data.get(key) for key in self.KEYS}

    def filter_queryset(self, tasks: QuerySet[Task], *, now: datetime) -> QuerySet[Task]:
        chosen = self.filters()
        if chosen["status"]:
            tasks = tasks.filter(status=chosen["status"])
        else:
            tasks = tasks.filter(status__in=Task.OPEN_STATUSES)
        if chosen["priority"]:
            tasks = tasks.filter(priority=chosen["priority"])
        if chosen["type"]:
            tasks = tasks.filter(task_type=chosen["type"])
        if chosen["age"]:
            _, at_least, less_than = AGE_BANDS[chosen["age"]]
            if at_least is not None:
                tasks = tasks.filter(created_at__lte=now - at_least)
            if less_than is not None:
                tasks = tasks.filter(created_at__gt=now - less_than)
        return tasks

    @property
    def sort_key(self) -> str:
        return self.filters()["sort"] or "priority"

    def is_filtered(self) -> bool:
        chosen = self.filters()
        return any(chosen[key] for key in ("status", "priority", "type", "age"))


class HoldingFilterForm(forms.Form):
    whose = forms.ChoiceField(
        required=False,
        choices=[("", "All I can see"), ("mine", "Held by me"), ("overdue", "Follow-up due")],
    )
    queue = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)

    def __init__(self, *args, queues: list[Queue], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["queue"].choices = [("", "Any queue"), *((q.pk, q.name) for q in queues)]

    def filter_queryset(self, tasks: QuerySet[Task], *, user, now: datetime) -> QuerySet[Task]:
        self.is_valid()
        whose, queue = self.cleaned_data.get("whose"), self.cleaned_data.get("queue")
        if whose == "mine":
            tasks = tasks.filter(assignee=user)
        elif whose == "overdue":
            tasks = tasks.filter(follow_up_at__lte=now)
        if queue:
            tasks = tasks.filter(queue_id=queue)
        return tasks


class AvailabilityForm(forms.Form):
    """The switch on My work: people go away and come back; offline is for signed-out staff."""

    availability = forms.ChoiceField(
        choices=[
            (StaffProfile.Availability.AVAILABLE, "Available"),
            (StaffProfile.Availability.AWAY, "Away"),
        ]
    )


def workers_of(queue: Queue) -> QuerySet:
    """Active staff who may work the queue (through their department group or directly)."""
    on_queue = {
        "content_type__app_label": "queues",
        "content_type__model": "queue",
        "permission__codename": "work_queue",
        "object_pk": str(queue.pk),
    }
    return (
        get_user_model()
        .objects.filter(is_active=True, staff__isnull=False)
        .filter(
            Exists(GroupObjectPermission.objects.filter(group__user=OuterRef("pk"), **on_queue))
            | Exists(UserObjectPermission.objects.filter(user=OuterRef("pk"), **on_queue))
        )
        .select_related("staff")
        .order_by("first_name", "last_name", "username")
    )


class PersonChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user) -> str:
        staff = user.staff
        name = user.get_full_name() or user.get_username()
        away = "" if staff.availability == StaffProfile.Availability.AVAILABLE else ", away"
        return f"{name} ({staff.active_load} of {staff.capacity} in use{away})"


class BulkReassignForm(forms.Form):
    """A supervisor hands the selected tasks of a queue to one person, with a reason."""

    tasks = forms.ModelMultipleChoiceField(
        queryset=Task.objects.none(),
        error_messages={"required": "Select the tasks to reassign first."},
    )
    assignee = PersonChoiceField(
        queryset=get_user_model().objects.none(),
        empty_label="Choose a person…",
        error_messages={"required": "Choose the person who should take the tasks."},
    )
    reason = forms.CharField(
        max_length=200,
        error_messages={"required": "Say why the tasks are reassigned."},
    )
    query = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, queue: Queue, visible_tasks: QuerySet[Task], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tasks"].queryset = visible_tasks.filter(queue=queue)
        self.fields["assignee"].queryset = workers_of(queue)

    def clean_tasks(self) -> list[int]:
        return sorted(task.pk for task in self.cleaned_data["tasks"])

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why the tasks are reassigned.")
        return reason
