"""The REST API: intake for other systems; tasks and queues for them and for staff.

Integration clients call with `Authorization: Token …` and act as their service user (its
department groups decide what it sees), recorded as `client:<name>`; staff call with their
session (CSRF enforced). Every read starts from `visible_to(user)`, one task from
`get_task_for_user(_rw)` (404 when it is not theirs), and every action calls the same service
function as the task page (`queues.views.task.ACTIONS`), with the same refusals.

Answers: 400 `{"errors": {field: [message]}}` names what to fix (dotted names for nested
fields); 409 `{"detail": …}` when the task's state or version does not allow the action;
403 when the caller may not; 404 when the task is not theirs to see.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from django.http import JsonResponse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import exceptions, status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from clinicdesk.audit.actor import (
    AuditActorMiddleware,
    audit_context_enter,
    audit_context_leave,
)
from queues import selectors
from queues import services as queues_services
from queues.access import record_task_access
from queues.api import schema  # noqa: F401  (registers the token scheme with the schema)
from queues.api import serializers as s
from queues.api.authentication import calling_client
from queues.api.throttling import ClientRateThrottle, StaffRateThrottle
from queues.intake import api as intake_api
from queues.intake import store
from queues.intake.draft import IntakeError
from queues.models import Channel, Priority, Queue, Task
from queues.views.task import ACTIONS, REFUSED
from queues.views.work import _worker_profile

# Routing sits above queues: intake's orchestrator classifies, dedups and routes. The page's
# actions already import routing's services the same way (queues/views/task.py).
from routing.intake import intake_fail, intake_receive
from routing.selectors import NoActiveRuleSet

STAFF_ONLY_ACTIONS = frozenset({"claim", "start"})
CLIENTS_DO_NOT_WORK = (
    "Integration clients do not claim or start work: that is for staff signed in with their "
    "session. A client may read tasks, comment, and resolve or reroute what it may act on."
)
INTAKE_CONTENT_TYPES = ("application/json", "multipart/form-data")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The task's state does not allow that now."
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def api_exception_handler(exc, context):
    """DRF's answers, but a 400 always in the one shape clients parse: {"errors": {…}}."""
    if isinstance(exc, exceptions.ValidationError):
        return Response({"errors": intake_api.flatten_errors(exc.detail)}, status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response({"errors": {"non_field_errors": [str(exc.detail)]}}, status=400)
    return exception_handler(exc, context)


# The shared error answers of the schema.
DETAIL = s.DetailSerializer
ERRORS = {
    401: OpenApiResponse(DETAIL, description="No credentials, or an unknown or revoked token."),
    403: OpenApiResponse(DETAIL, description="The caller may not do this."),
    429: OpenApiResponse(DETAIL, description="Too many requests: wait and retry."),
}
NOT_FOUND = {404: OpenApiResponse(DETAIL, description="No such task visible to the caller.")}
BAD_REQUEST = {400: OpenApiResponse(s.ErrorSerializer, description="What to fix, per field.")}


class ApiView(APIView):
    """Our endpoints' common ground: who may call, how fast, the error shape, the audit actor."""

    throttle_classes = [ClientRateThrottle, StaffRateThrottle]

    def get_exception_handler(self):
        return api_exception_handler

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # The audit log middleware ran before DRF knew the caller (a token is read here, not
        # there): name the caller for the field diffs the services' saves write.
        self._audit_token = audit_context_enter(
            {
                "actor": request.user,
                "remote_addr": AuditActorMiddleware._get_remote_addr(request._request),
                "remote_port": None,
            }
        )

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            # Also after an error DRF does not answer itself (it re-raises those).
            token, self._audit_token = getattr(self, "_audit_token", None), None
            if token is not None:
                audit_context_leave(token)


@csrf_exempt  # it changes nothing; a POST to a wrong path deserves the JSON 404 too
def endpoint_not_found(request, *args, **kwargs):
    return JsonResponse(
        {"detail": "No such API endpoint or task; /api/docs/ lists the endpoints."}, status=404
    )


# --- intake ---------------------------------------------------------------------------------


def _media_type(request) -> tuple[str, str]:
    """(media type, what to store as the content type): multipart keeps its boundary."""
    raw = request.content_type or ""
    media_type = raw.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        for param in raw.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "boundary" and value:
                return media_type, f"multipart/form-data; boundary={value.strip(chr(34))}"
    return media_type, media_type


def read_body(request, *, too_large_hint: str = "") -> bytes:
    """The raw body, up to INTAKE_MAX_BODY_BYTES: intake bodies (a fax's base64 PDF, an email
    with a scanned referral) are larger than Django's limit for form data, which does not
    apply here since they are never parsed as forms. Django keeps the read body in `_body`,
    so `request.body` (which signature checks read) returns it without that limit."""
    limit = settings.INTAKE_MAX_BODY_BYTES
    too_large = f"The request is larger than {limit // 2**20} MiB{too_large_hint}."
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge(too_large)
    stream = request.stream
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise PayloadTooLarge(too_large)
    request._request._body = body
    return body


def _peek_channel(payload: bytes, media_type: str, content_type: str) -> str | None:
    """The channel the payload says it came by, when it can be read at all."""
    try:
        if media_type == "application/json":
            data = json.loads(payload)
        else:
            data = intake_api.multipart_request(payload, content_type)[0]
    except (ValueError, IntakeError):
        return None
    channel = data.get("channel") if isinstance(data, dict) else None
    return channel if channel in Channel.values else None


def _refuse_and_keep(*, client, channel, payload, content_type, request, field, message):
    """Keep a refused payload as a failed message (nothing is lost), then refuse."""
    inbound = store.inbound_store(
        channel=channel,
        payload=payload,
        content_type=content_type,
        client=client,
        headers=dict(request.headers),
    )
    intake_fail(inbound=inbound, error=IntakeError({field: [message]}))
    return inbound


class IntakeView(ApiView):
    parser_classes = [JSONParser, MultiPartParser]  # what the schema shows; the body is read raw

    @extend_schema(
        operation_id="intake_submit",
        auth=[{"clientToken": []}],
        summary="Submit a request: it becomes one routed task, exactly once",
        description=(
            "The raw body is stored first, then validated and turned into a task. A resend with "
            "the same `(channel, external_id)` answers 200 with the same task, also when resends "
            "race. Channel `phone` takes a `voicemail`, channel `fax` a `fax` cover sheet and "
            "the PDF as an attachment (base64 in JSON, or as the `file` part of a "
            "multipart/form-data upload whose `payload` part holds the JSON). An invalid "
            "payload is kept (Failed intake page) and answered 400 with every field's problem."
        ),
        request={
            "application/json": s.IntakeSerializer,
            "multipart/form-data": s.IntakeMultipartSerializer,
        },
        responses={
            201: OpenApiResponse(s.IntakeResponseSerializer, description="A new task."),
            200: OpenApiResponse(
                s.IntakeResponseSerializer, description="Seen before: the same task."
            ),
            400: OpenApiResponse(s.IntakeErrorSerializer, description="What to fix, per field."),
            413: OpenApiResponse(DETAIL, description="The body is too large."),
            415: OpenApiResponse(DETAIL, description="Not JSON nor multipart/form-data."),
            503: OpenApiResponse(DETAIL, description="No routing rules are active: retry later."),
            **ERRORS,
        },
        examples=[
            OpenApiExample(
                "Portal message",
                request_only=True,
                media_type="application/json",
                value={
                    "channel": "api",
                    "external_id": "msg-20931",
                    "subject": "Refill request for lisinopril",
                    "body": "Patient asks for a 90-day refill.",
                    "patient": {
                        "mrn": "MRN104233",
                        "name": "Ana Lopez",
                        "birth_date": "1961-02-14",
                    },
                    "request_type": "refill",
                    "urgency": 3,
                },
            ),
            OpenApiExample(
                "Voicemail",
                request_only=True,
                media_type="application/json",
                value={
                    "channel": "phone",
                    "external_id": "vm-5521",
                    "patient": {"name": "John Park", "birth_date": "1979-11-02"},
                    "voicemail": {
                        "caller_number": "+1 555 010 4477",
                        "transcript": "Hi, this is John Park, I need to reschedule Tuesday.",
                        "audio_url": "https://pbx.example.org/vm/5521.mp3",
                        "duration_seconds": 31,
                    },
                },
            ),
        ],
        tags=["intake"],
    )
    def post(self, request):
        client = calling_client(request)
        if client is None:
            raise PermissionDenied(
                "Intake takes an integration client's token (Authorization: Token …); staff "
                "log a request with the front-desk form."
            )
        media_type, content_type = _media_type(request)
        payload = read_body(
            request,
            too_large_hint=": send large files with multipart/form-data, or fewer at a time",
        )
        fallback = Channel.API if Channel.API in client.channels else client.channels[0]
        if media_type not in INTAKE_CONTENT_TYPES:
            message = (
                f"Send the request as application/json (or multipart/form-data with a payload "
                f"part and a file part), not {media_type or 'a body without a Content-Type'}."
            )
            _refuse_and_keep(
                client=client,
                channel=fallback,
                payload=payload,
                content_type=content_type,
                request=request,
                field="content_type",
                message=message,
            )
            raise exceptions.UnsupportedMediaType(media_type, detail=message)
        channel = _peek_channel(payload, media_type, content_type)
        if channel is not None and channel not in client.channels:
            message = (
                f"This client may submit on {', '.join(client.channels)} only, not {channel}: "
                "ask an administrator to grant the channel, or send on one of those."
            )
            _refuse_and_keep(
                client=client,
                channel=channel,
                payload=payload,
                content_type=content_type,
                request=request,
                field="channel",
                message=message,
            )
            raise PermissionDenied(message)
        try:
            inbound, result = intake_receive(
                channel=channel or fallback,
                payload=payload,
                content_type=content_type,
                actor=client.actor_label,
                client=client,
                headers=dict(request.headers),
            )
        except NoActiveRuleSet:
            # The payload is stored (status "received"); the clinic must turn its rules on.
            raise Unavailable(
                "Intake cannot route requests now: the clinic has no active routing rules. "
                "The request was stored; send it again later (it will not be duplicated)."
            ) from None
        if result is None:
            return Response({"errors": inbound.error_fields, "inbound_id": inbound.pk}, status=400)
        return Response(
            s.intake_response(request, result.task.pk, result.outcome),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


# --- tasks ----------------------------------------------------------------------------------


class TaskPagination(CursorPagination):
    # Oldest change first: a client that syncs pages to the end, keeps the last updated_at
    # and asks again with updated_since. The id breaks ties.
    ordering = ("updated_at", "id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError(
                {"cursor": ["Use the next or previous link of a page as it came; or start over."]}
            ) from None


TASK_FILTERS = [
    OpenApiParameter("queue", str, description="A queue's code."),
    OpenApiParameter("status", str, enum=Task.Status.values),
    OpenApiParameter("priority", int, enum=Priority.values),
    OpenApiParameter("type", str, description="A task type's code."),
    OpenApiParameter(
        "updated_since", OpenApiTypes.DATETIME, description="Only tasks changed at or after."
    ),
]


def _filter_tasks(queryset, params) -> object:
    errors: dict[str, list[str]] = {}
    for name in ("queue", "type", "status", "priority", "updated_since"):
        if "\x00" in params.get(name, ""):
            # PostgreSQL text cannot hold it, and no code or date contains one.
            errors[name] = ["Remove the NUL character (%00) from the value."]
    if errors:
        raise exceptions.ValidationError(errors)
    if queue := params.get("queue"):
        queryset = queryset.filter(queue__code=queue)
    if task_status := params.get("status"):
        if task_status not in Task.Status.values:
            errors["status"] = [f"Use one of {', '.join(Task.Status.values)}."]
        queryset = queryset.filter(status=task_status)
    if priority := params.get("priority"):
        if priority not in {str(p) for p in Priority.values}:
            errors["priority"] = ["Use 1 (urgent), 2, 3 or 4 (low)."]
        else:
            queryset = queryset.filter(priority=int(priority))
    if task_type := params.get("type"):
        queryset = queryset.filter(task_type__code=task_type)
    if since := params.get("updated_since"):
        try:
            moment = parse_datetime(since)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            errors["updated_since"] = [
                "Give an ISO 8601 date and time with its time zone, e.g. 2025-03-01T09:00:00Z "
                "(write + as %2B in a URL)."
            ]
        else:
            queryset = queryset.filter(updated_at__gte=moment)
    if errors:
        raise exceptions.ValidationError(errors)
    return queryset


class TaskListView(ApiView, ListAPIView):
    serializer_class = s.TaskListSerializer
    pagination_class = TaskPagination

    def get_queryset(self):
        tasks = (
            Task.objects.visible_to(self.request.user)
            .select_related("queue", "task_type", "assignee")
            .defer("body", "metadata", "patient_birth_date")
        )
        return _filter_tasks(tasks, self.request.query_params)

    @extend_schema(
        operation_id="tasks_list",
        summary="Tasks the caller may see, oldest change first",
        description="Minimum patient data: the MRN and initials, never the name.",
        parameters=TASK_FILTERS,
        responses={200: s.TaskListSerializer(many=True), **BAD_REQUEST, **ERRORS},
        tags=["tasks"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class TaskDetailView(ApiView, RetrieveAPIView):
    serializer_class = s.TaskDetailSerializer

    def get_object(self):
        task = selectors.get_task_for_user(self.request.user, self.kwargs["task_id"])
        # Who read which task, for the compliance audit: the client, or the person.
        record_task_access(self.request.auth or self.request.user, task, via="api")
        return task

    @extend_schema(
        operation_id="tasks_retrieve",
        summary="One task, with its patient, timeline, attachments and what you may do",
        responses={200: s.TaskDetailSerializer, **ERRORS, **NOT_FOUND},
        tags=["tasks"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _summary(request, task_id: int) -> dict:
    task = Task.objects.select_related("queue", "task_type", "assignee").get(pk=task_id)
    return s.TaskListSerializer(task, context={"request": request}).data


class TaskNextView(ApiView):
    @extend_schema(
        operation_id="tasks_next",
        summary="Next task: claim the most urgent, oldest task of your queues",
        request=None,
        responses={
            200: OpenApiResponse(s.TaskListSerializer, description="Claimed: it is yours now."),
            204: OpenApiResponse(description="Nothing is waiting in your queues."),
            409: OpenApiResponse(DETAIL, description="You are at capacity."),
            **ERRORS,
        },
        tags=["tasks"],
    )
    def post(self, request):
        if calling_client(request) is not None:
            raise PermissionDenied(CLIENTS_DO_NOT_WORK)
        _worker_profile(request.user)
        try:
            task = queues_services.task_claim_next(user=request.user)
        except queues_services.CapacityError as error:
            raise Conflict(" ".join(error.messages)) from None
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_summary(request, task.pk))


def _refusal(task: Task, action: str, expected_version: int | None) -> str:
    if expected_version is not None and expected_version != task.version:
        return (
            f"Task #{task.pk} was changed by someone else (version {task.version}, you sent "
            f"{expected_version}): read it again and decide."
        )
    if action == "claim" and task.blocked_by_id:
        return f"Task #{task.pk} is blocked until task #{task.blocked_by_id} is resolved."
    state = task.get_status_display().lower()
    if task.assignee_id and task.status in Task.LOADED_STATUSES:
        state += ", assigned to someone else" if action != "start" else ", not assigned to you"
    return f"{action.capitalize()} is not possible now: task #{task.pk} is {state}."


class TaskActionView(ApiView):
    """`POST /api/v1/tasks/<id>/<action>/`: one subclass per action (see `action_view`)."""

    action_name = ""
    # Service errors name their own fields; the API calls some differently.
    error_fields = {"queue": "to_queue", "text": "text"}

    def post(self, request, task_id: int):
        client = calling_client(request)
        if client is not None and self.action_name in STAFF_ONLY_ACTIONS:
            raise PermissionDenied(CLIENTS_DO_NOT_WORK)
        task = selectors.get_task_for_user_rw(request.user, task_id)
        serializer = s.ACTION_SERIALIZERS[self.action_name](data=request.data, task=task)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        access = selectors.task_access(request.user, task)
        if self.action_name not in selectors.task_actions(task, access):
            raise Conflict(_refusal(task, self.action_name, data.get("expected_version")))
        spec = ACTIONS[self.action_name]
        actor = request.user if client is None else client.actor_label
        try:
            spec.service(task_id=task.pk, **{spec.actor_arg: actor}, **data)
        except REFUSED as error:
            raise Conflict(" ".join(getattr(error, "messages", None) or [str(error)])) from None
        except DjangoValidationError as error:
            raise exceptions.ValidationError(self._fields(error)) from None
        return Response(_summary(request, task.pk))

    def _fields(self, error: DjangoValidationError) -> dict[str, list[str]]:
        if not hasattr(error, "error_dict"):
            return {"non_field_errors": list(error.messages)}
        return {
            self.error_fields.get(name, name): [m for e in errors for m in e.messages]
            for name, errors in error.error_dict.items()
        }


ACTION_SUMMARIES = {
    "claim": "Claim a queued task",
    "start": "Start a task assigned to you",
    "hold": "Put a task on hold, waiting for someone outside",
    "resume": "Resume a task on hold",
    "resolve": "Resolve a task with its outcome",
    "reopen": "Reopen a resolved task",
    "reroute": "Hand a task on to another queue, with a reason",
    "release": "Give a task back to its queue",
    "comment": "Add a comment to the timeline",
}


def action_view(action: str):
    """The view of one action, with its own operation in the schema."""

    def post(self, request, task_id: int):
        return TaskActionView.post(self, request, task_id)

    documented = extend_schema(
        operation_id=f"tasks_{action}",
        summary=ACTION_SUMMARIES[action],
        request=s.ACTION_SERIALIZERS[action],
        responses={
            200: OpenApiResponse(s.TaskListSerializer, description="Done: the task as it is now."),
            **BAD_REQUEST,
            409: OpenApiResponse(
                DETAIL, description="The task's state or version does not allow it now."
            ),
            **ERRORS,
            **NOT_FOUND,
        },
        tags=["tasks"],
    )(post)
    view = type(
        f"Task{action.capitalize()}View",
        (TaskActionView,),
        {"action_name": action, "post": documented},
    )
    return view.as_view()


# --- queues ---------------------------------------------------------------------------------


class QueueListView(ApiView, ListAPIView):
    serializer_class = s.QueueSerializer
    pagination_class = None

    def get_queryset(self):
        open_tasks = Q(tasks__status__in=Task.OPEN_STATUSES)
        queued = Q(tasks__status=Task.Status.QUEUED, tasks__assignee__isnull=True)
        return (
            Queue.objects.visible_to(self.request.user)
            .filter(is_active=True)
            .select_related("department")
            .annotate(
                open_tasks=Count("tasks", filter=open_tasks),
                queued_tasks=Count("tasks", filter=queued),
            )
            .order_by("department__name", "name")
        )

    @extend_schema(
        operation_id="queues_list",
        summary="The queues the caller may see, with their open work",
        responses={200: s.QueueSerializer(many=True), **ERRORS},
        tags=["queues"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
