"""What the API answers and what its actions take.

Lists carry the minimum patient data (MRN and initials, never the name or the date of birth);
one task's detail carries the rest, as its page does. Action inputs clean into the keyword
arguments of the same service functions the pages call (`queues.views.task.ACTIONS`).
"""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from queues import selectors
from queues.forms import RESOLVE_OUTCOMES
from queues.intake.api import (
    AttachmentSerializer,
    FaxSerializer,
    IntakeSerializer,
    PatientSerializer,
    VoicemailSerializer,
)
from queues.models import Attachment, Priority, Queue, Task

__all__ = [
    "AttachmentSerializer",
    "FaxSerializer",
    "IntakeSerializer",
    "PatientSerializer",
    "VoicemailSerializer",
]


# --- errors ---------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """A 400: per field (dotted for nested fields), what is wrong and how to fix it."""

    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='e.g. {"patient.birth_date": ["Enter the date of birth as YYYY-MM-DD."]}',
    )


class IntakeErrorSerializer(ErrorSerializer):
    inbound_id = serializers.IntegerField(
        required=False,
        help_text="The stored message: it is kept, and shown on the Failed intake page.",
    )


class DetailSerializer(serializers.Serializer):
    """A 401, 403, 404, 409, 413, 415 or 429: what happened, in one sentence."""

    detail = serializers.CharField()


# --- intake ---------------------------------------------------------------------------------


class IntakeMultipartSerializer(serializers.Serializer):
    """A fax or voicemail upload without base64: the JSON request and the file."""

    payload = serializers.CharField(
        help_text="The JSON request, as `application/json` would send it (attachments optional)."
    )
    file = serializers.FileField(help_text="The fax's PDF or the voicemail's audio.")


class IntakeResponseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Task.Status.choices)
    outcome = serializers.ChoiceField(
        choices=["parsed", "resent", "duplicate", "reply"],
        help_text="parsed: a new task; resent: this external_id was seen before, same task; "
        "duplicate: linked to an open task about the same matter; reply: added to its task.",
    )
    queue = serializers.CharField(allow_null=True, help_text="The queue's code.")
    task_type = serializers.CharField(allow_null=True, help_text="The task type's code.")
    priority = serializers.IntegerField(help_text="1 (urgent) to 4 (low).")
    assignee = serializers.CharField(allow_null=True, help_text="The assignee's username.")
    duplicate_of = serializers.IntegerField(
        allow_null=True, help_text="The open task this request was linked to, if any."
    )
    url = serializers.URLField(help_text="This task in the API.")
    web_url = serializers.URLField(help_text="This task's page, for staff.")


def intake_response(request, task_id: int, outcome: str) -> dict:
    """The answer to an intake call, read in one narrow query after the commit."""
    task = (
        Task.objects.filter(pk=task_id)
        .values(
            "status",
            "priority",
            "duplicate_of_id",
            "queue__code",
            "task_type__code",
            "assignee__username",
        )
        .get()
    )
    return {
        "id": task_id,
        "status": task["status"],
        "outcome": outcome,
        "queue": task["queue__code"],
        "task_type": task["task_type__code"],
        "priority": task["priority"],
        "assignee": task["assignee__username"],
        "duplicate_of": task["duplicate_of_id"],
        "url": request.build_absolute_uri(reverse("api:task-detail", args=[task_id])),
        "web_url": request.build_absolute_uri(reverse("queues:task", args=[task_id])),
    }


# --- tasks ----------------------------------------------------------------------------------


class TaskListSerializer(serializers.ModelSerializer):
    """One task in a list: enough to decide, not the patient's identity."""

    url = serializers.SerializerMethodField()
    queue = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    task_type = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    assignee = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    patient_initials = serializers.CharField(read_only=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "url",
            "channel",
            "external_id",
            "status",
            "priority",
            "queue",
            "task_type",
            "assignee",
            "subject",
            "patient_mrn",
            "patient_initials",
            "duplicate_of",
            "blocked_by",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_url(self, task: Task) -> str:
        return self.context["request"].build_absolute_uri(
            reverse("api:task-detail", args=[task.pk])
        )


class TaskPatientSerializer(serializers.Serializer):
    mrn = serializers.CharField(source="patient_mrn")
    name = serializers.CharField(source="patient_name")
    birth_date = serializers.DateField(source="patient_birth_date", allow_null=True)
    initials = serializers.CharField(source="patient_initials")


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="created_at")
    kind = serializers.CharField()
    actor = serializers.CharField()
    actor_kind = serializers.ChoiceField(choices=["person", "integration", "system"])
    headline = serializers.CharField()
    note = serializers.CharField(allow_blank=True)


class AttachmentInfoSerializer(serializers.ModelSerializer):
    """A file's facts; its bytes are downloaded through the permission-checked page (`url`,
    for a signed-in member of the task's department)."""

    url = serializers.SerializerMethodField()

    class Meta:
        model = Attachment
        fields = ["id", "filename", "content_type", "size", "sha256", "created_at", "url"]
        read_only_fields = fields

    def get_url(self, attachment: Attachment) -> str:
        path = reverse("queues:task_attachment", args=[attachment.task_id, attachment.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class TaskDetailSerializer(TaskListSerializer):
    web_url = serializers.SerializerMethodField()
    patient = TaskPatientSerializer(source="*")
    metadata = serializers.JSONField(read_only=True)
    timeline = serializers.SerializerMethodField()
    attachments = AttachmentInfoSerializer(many=True, read_only=True)
    actions = serializers.SerializerMethodField()

    class Meta(TaskListSerializer.Meta):
        fields = [
            *TaskListSerializer.Meta.fields,
            "web_url",
            "body",
            "patient",
            "request_type",
            "source_system",
            "tags",
            "metadata",
            "received_at",
            "first_claimed_at",
            "resolved_at",
            "claim_due_at",
            "resolve_due_at",
            "hold_reason",
            "follow_up_at",
            "outcome",
            "parent",
            "reroute_count",
            "reopen_count",
            "attachments",
            "actions",
            "timeline",
        ]
        read_only_fields = fields

    def get_web_url(self, task: Task) -> str:
        return self.context["request"].build_absolute_uri(reverse("queues:task", args=[task.pk]))

    @extend_schema_field(TimelineEntrySerializer(many=True))
    def get_timeline(self, task: Task) -> list[dict]:
        return TimelineEntrySerializer(selectors.task_timeline(task), many=True).data

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_actions(self, task: Task) -> list[str]:
        """What the caller may do with the task now (the page offers the same buttons)."""
        access = selectors.task_access(self.context["request"].user, task)
        return selectors.task_actions(task, access)


class QueueSerializer(serializers.ModelSerializer):
    department = serializers.SlugRelatedField(slug_field="code", read_only=True)
    open_tasks = serializers.IntegerField(read_only=True, help_text="Tasks not yet resolved.")
    queued_tasks = serializers.IntegerField(
        read_only=True, help_text="Open tasks waiting for someone to claim them."
    )

    class Meta:
        model = Queue
        fields = [
            "id",
            "code",
            "name",
            "department",
            "kind",
            "assignment_policy",
            "open_tasks",
            "queued_tasks",
        ]
        read_only_fields = fields


# --- actions --------------------------------------------------------------------------------


class ActionSerializer(serializers.Serializer):
    """The base of every action: the version the caller saw, if it wants the check."""

    expected_version = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The task's `version` as you last read it: if someone changed the task "
        "since, the action is refused (409) instead of overwriting their change.",
    )

    def __init__(self, *args, task: Task | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task


class HoldSerializer(ActionSerializer):
    reason = serializers.CharField(max_length=200, help_text="What the task is waiting for.")
    follow_up_at = serializers.DateTimeField(
        help_text="When to follow up if nothing has come back (ISO 8601, in the future)."
    )

    def validate_follow_up_at(self, value):
        if value <= timezone.now():
            raise serializers.ValidationError("Choose a follow-up time in the future.")
        return value


class ResolveSerializer(ActionSerializer):
    outcome = serializers.ChoiceField(
        choices=list(RESOLVE_OUTCOMES),
        error_messages={"invalid_choice": f"Use one of: {', '.join(RESOLVE_OUTCOMES)}."},
    )
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class ReopenSerializer(ActionSerializer):
    reason = serializers.CharField(max_length=500, help_text="Why the task is reopened.")


class ReleaseSerializer(ActionSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class RerouteSerializer(ActionSerializer):
    to_queue = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Queue.objects.none(),
        help_text="The code of the queue the task should go to (GET /api/v1/queues/).",
        error_messages={
            "does_not_exist": "No active work or review queue has the code {value}; "
            "choose another (GET /api/v1/queues/ lists them).",
        },
    )
    reason = serializers.CharField(
        max_length=500, help_text="Why it moves; helps the team tune the rules."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.task is not None:
            self.fields["to_queue"].queryset = selectors.reroute_targets(self.task)


class CommentSerializer(serializers.Serializer):
    """A comment changes nothing but the timeline, so it takes no version."""

    text = serializers.CharField(max_length=4000)

    def __init__(self, *args, task: Task | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task


ACTION_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "claim": ActionSerializer,
    "start": ActionSerializer,
    "resume": ActionSerializer,
    "hold": HoldSerializer,
    "resolve": ResolveSerializer,
    "reopen": ReopenSerializer,
    "release": ReleaseSerializer,
    "reroute": RerouteSerializer,
    "comment": CommentSerializer,
}

PRIORITY_CHOICES = Priority.values
