"""Inbound webhooks: EHR events as FHIR R4 JSON, and raw email from a mail gateway.

Both are called by an integration client with its token (`Authorization: Token …`) and
signed: `X-ClinicDesk-Timestamp` (Unix seconds) and `X-ClinicDesk-Signature: sha256=<hex
HMAC-SHA256 of "<timestamp>.<raw body>" with the client's signing secret>`. A missing or bad
signature, or a timestamp more than 5 minutes off, is answered 401 and logged (logger
`clinicdesk.security`); the refused body is *not* stored: nobody vouches for it, so it could
not be retried, and keeping what anyone may post would let them fill the database. The client
must hold the endpoint's channel (`fhir`, `email`), else 403; a body of another content type
is 415. Those two are kept as failed messages (the sender is known by then).

Once authenticated, every payload is stored raw before it is read (nothing is lost): one that
cannot become a task stays on the Failed intake page with its error, where a supervisor can
correct and retry it. A resend (same resource id, same Message-ID) answers 200 with the task
it became the first time.
"""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler

from queues.api import serializers as s
from queues.api.authentication import ClientTokenAuthentication, calling_client, require_signature
from queues.api.views import ApiView, read_body
from queues.intake import fhir, store
from queues.intake.draft import IntakeError
from queues.models import Channel, InboundMessage, IntegrationClient

# Routing sits above queues: intake's orchestrator classifies, dedups and routes (the REST
# intake endpoint imports it the same way).
from routing import intake
from routing.selectors import NoActiveRuleSet

log = logging.getLogger(__name__)

FHIR_CONTENT_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
EMAIL_CONTENT_TYPES = ("message/rfc822",)
MAX_BUNDLE_ENTRIES = 1000


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


class FhirJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir"


class _SignedWebhook(ApiView):
    """Token, signature, channel and content type, in that order; then `receive`."""

    authentication_classes = [ClientTokenAuthentication]
    channel: str = ""
    content_types: tuple[str, ...] = ()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        client = calling_client(request)
        if client is None:  # IsAuthenticated let a session through: not for webhooks
            raise exceptions.NotAuthenticated(
                "Webhooks take an integration client's token: Authorization: Token <token>."
            )
        self.raw_body = read_body(request)
        require_signature(request, client)
        # From here on the sender is known and vouched for: a refused body is kept (failed,
        # with the reason), as every other payload is.
        if self.channel not in client.channels:
            message = (
                f"This client may submit on {', '.join(client.channels)} only, not "
                f"{self.channel}: ask an administrator to grant the channel."
            )
            self._keep_refused(request, client, "channel", message)
            raise exceptions.PermissionDenied(message)
        media_type = (request.content_type or "").split(";")[0].strip().lower()
        if media_type not in self.content_types:
            message = (
                f"Send the body as {' or '.join(self.content_types)}, "
                f"not {media_type or 'a body without a Content-Type'}."
            )
            self._keep_refused(request, client, "content_type", message)
            raise exceptions.UnsupportedMediaType(media_type, detail=message)
        self.media_type = media_type

    def _keep_refused(self, request, client, field: str, message: str) -> None:
        inbound = store.inbound_store(
            channel=self.channel,
            payload=self.raw_body,
            content_type=request.content_type or "",
            client=client,
            headers=dict(request.headers),
        )
        intake.intake_fail(inbound=inbound, error=IntakeError({field: [message]}))

    def receive(self, request, client: IntegrationClient, content_type: str):
        try:
            return intake.intake_receive(
                channel=self.channel,
                payload=self.raw_body,
                content_type=content_type,
                actor=client.actor_label,
                client=client,
                headers=dict(request.headers),
            )
        except NoActiveRuleSet as error:
            raise ServiceUnavailable(f"Stored, not yet routed: {error}") from None


def _summary(request, result: intake.IntakeResult) -> Response:
    summary = s.intake_response(request, result.task.pk, result.outcome)
    return Response(
        summary,
        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        content_type="application/json",
        headers={"Location": summary["url"]},
    )


# --- FHIR ----------------------------------------------------------------------------------

ISSUE_CODES = {
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
    503: "transient",
}


def fhir_exception_handler(exc, context):
    """DRF's refusals, told as a FHIR OperationOutcome."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
    response.data = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": ISSUE_CODES.get(response.status_code, "processing"),
                "diagnostics": str(detail or response.data),
            }
        ],
    }
    return response


OUTCOME = OpenApiResponse(OpenApiTypes.OBJECT, description="A FHIR OperationOutcome.")
SIGNATURE_HEADERS = [
    OpenApiParameter(
        "X-ClinicDesk-Timestamp",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        required=True,
        description="When the request was signed, in Unix seconds (at most 5 minutes off).",
    ),
    OpenApiParameter(
        "X-ClinicDesk-Signature",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=True,
        description='"sha256=" and the hex HMAC-SHA256, keyed with the signing secret, of '
        '"<timestamp>.<raw body>".',
    ),
]


class FhirInboundView(_SignedWebhook):
    """`POST /api/v1/inbound/fhir/`: one FHIR R4 resource, or a Bundle of them.

    Resources: Communication, CommunicationRequest, Task, ServiceRequest, DocumentReference
    (`queues.intake.fhir` maps them). Answers:

    - one resource: 201 Created (a new task) or 200 (a resend of `<resourceType>/<id>`, a
      reply joined to its task), with the same JSON as the intake API (`{id, status, outcome,
      queue, task_type, priority, assignee, duplicate_of, url, web_url}`, `application/json`)
      and a `Location` header; 400 with an OperationOutcome when it cannot become a task, an
      issue per problem whose `expression` is the element to fix. Every refusal of content is
      400, also for a valid resource that ClinicDesk does not take (code `not-supported`):
      422 is not used, so clients handle one status.
    - a Bundle (batch, transaction, collection or message): stored whole once, then each
      entry as its own message (its `parent` the Bundle), parsed and submitted on its own:
      one bad entry fails alone and is retried alone. Answered 200 with a `batch-response`
      Bundle, one entry per entry in order: `201 Created` / `200 OK` with `location`
      `Task/<id>`, or `400 Bad Request` with an OperationOutcome. A transaction is processed
      the same way (entries are independent requests, not all-or-nothing). Patient and
      MessageHeader entries are context: an entry whose subject points at a Patient entry
      (by fullUrl or `Patient/<id>`) carries that Patient in `contained` when stored, so it
      can be retried alone. A Bundle that cannot be read at all is 400.
    - 401, 403, 413, 415 and 503 (no active routing rules; stored, not routed) also with an
      OperationOutcome.
    """

    channel = Channel.FHIR
    content_types = FHIR_CONTENT_TYPES
    renderer_classes = [FhirJSONRenderer, JSONRenderer]

    def get_exception_handler(self):
        return fhir_exception_handler

    @extend_schema(
        operation_id="inbound_fhir",
        parameters=SIGNATURE_HEADERS,
        summary="Receive an EHR event (FHIR R4 resource or Bundle); signed",
        request={
            "application/fhir+json": OpenApiTypes.OBJECT,
            "application/json": OpenApiTypes.OBJECT,
        },
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="A resend's task (intake summary), or a Bundle's batch-response.",
            ),
            201: OpenApiResponse(s.IntakeResponseSerializer, description="A new task."),
            400: OUTCOME,
            401: OUTCOME,
            403: OUTCOME,
            413: OUTCOME,
            415: OUTCOME,
            429: OUTCOME,
            503: OUTCOME,
        },
        tags=["inbound"],
    )
    def post(self, request):
        client = calling_client(request)
        try:
            data = fhir.load_json(self.raw_body)
        except IntakeError:
            data = None  # stored and failed by the adapter below, with the same message
        if data is not None and fhir.is_bundle(data):
            try:
                answer = fhir_bundle_receive(
                    payload=self.raw_body, data=data, client=client, headers=dict(request.headers)
                )
            except IntakeError as error:
                return Response(fhir.operation_outcome(error.errors), status=400)
            return Response(answer)
        inbound, result = self.receive(request, client, "application/fhir+json")
        if result is None:
            return Response(fhir.operation_outcome(inbound.error_fields), status=400)
        return _summary(request, result)


def _entry_rows(
    *, bundle: InboundMessage, entries: list[fhir.BundleEntry], client, headers: dict
) -> list[InboundMessage | None]:
    """One InboundMessage per entry (None for context entries), inserted in one statement."""
    rows: list[InboundMessage | None] = []
    for entry in entries:
        if entry.context:
            rows.append(None)
            continue
        rows.append(
            InboundMessage(
                channel=Channel.FHIR,
                payload=entry.payload,
                content_type="application/fhir+json",
                client=client,
                sender=bundle.sender,
                headers=headers,
                parent=bundle,
            )
        )
    InboundMessage.objects.bulk_create([row for row in rows if row is not None])
    return rows


def _entry_answer(row: InboundMessage | None, result: intake.IntakeResult | None) -> dict:
    if row is None:
        return {
            "response": {
                "status": "200 OK",
                "outcome": fhir.information("Read as context for the other entries; no task."),
            }
        }
    if result is None:
        return {
            "response": {
                "status": "400 Bad Request",
                "outcome": fhir.operation_outcome(row.error_fields),
            }
        }
    created = result.created
    return {
        "response": {
            "status": "201 Created" if created else "200 OK",
            "location": f"Task/{result.task.pk}",
            "outcome": fhir.information(
                f"{result.outcome}: task #{result.task.pk}"
                + (
                    f", duplicate of task #{result.task.duplicate_of_id}"
                    if result.task.duplicate_of_id
                    else ""
                )
            ),
        }
    }


def fhir_bundle_receive(
    *, payload: bytes, data: dict[str, Any], client: IntegrationClient, headers: dict
) -> dict:
    """Store a Bundle whole, then each entry as its own message, each submitted on its own;
    the batch-response Bundle. IntakeError (kept on the Bundle's message) when its envelope
    cannot be read."""
    headers = {k: v for k, v in headers.items() if k in store.KEPT_HEADERS}
    bundle = store.inbound_store(
        channel=Channel.FHIR,
        payload=payload,
        content_type="application/fhir+json",
        client=client,
        headers=headers,
    )
    try:
        entries = fhir.bundle_split(data)
        if len(entries) > MAX_BUNDLE_ENTRIES:
            raise IntakeError(
                {
                    "Bundle.entry": [
                        f"{len(entries)} entries: send at most {MAX_BUNDLE_ENTRIES} per Bundle."
                    ]
                }
            )
    except IntakeError as error:
        intake.intake_fail(inbound=bundle, error=error)
        raise
    # The Bundle itself was read; its entries now carry their own outcomes.
    store.inbound_mark(inbound=bundle, status=InboundMessage.Status.PARSED)
    rows = _entry_rows(bundle=bundle, entries=entries, client=client, headers=headers)
    answers = []
    for entry, row in zip(entries, rows, strict=True):
        result = None
        if row is not None and entry.error is not None:
            intake.intake_fail(inbound=row, error=entry.error)
        elif row is not None:
            result = _process_entry(row, client)
        answers.append(_entry_answer(row, result))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": answers}


def _process_entry(row: InboundMessage, client: IntegrationClient):
    try:
        return intake.intake_process(inbound=row, actor=client.actor_label)
    except NoActiveRuleSet as error:
        raise ServiceUnavailable(f"Stored, not yet routed: {error}") from None
    except Exception:
        # One entry's surprise must not cost the others theirs: it stays "received" (the
        # Failed intake page lists such stuck messages) and is answered 500 in its slot.
        log.exception("FHIR bundle entry %s failed unexpectedly", row.pk)
        error = IntakeError(
            "ClinicDesk could not process this entry (an internal error, logged); it is "
            "stored and a supervisor can retry it."
        )
        row.error_fields = error.errors
        return None


# --- email ---------------------------------------------------------------------------------


class EmailInboundView(_SignedWebhook):
    """`POST /api/v1/inbound/email/`: one raw RFC 822 message (`message/rfc822`).

    Answers as the intake API does: 201 with the new task's summary, 200 for a resend (same
    Message-ID) or a reply joined to the task it answers (`outcome`: reply), 400
    `{"errors": {field: [message]}, "inbound_id": …}` when it cannot become a task (kept on
    the Failed intake page); 401, 403, 413, 415 `{"detail": …}`.
    """

    channel = Channel.EMAIL
    content_types = EMAIL_CONTENT_TYPES

    @extend_schema(
        operation_id="inbound_email",
        parameters=SIGNATURE_HEADERS,
        summary="Receive one raw email message (RFC 822); signed",
        request={"message/rfc822": OpenApiTypes.BINARY},
        responses={
            200: OpenApiResponse(s.IntakeResponseSerializer, description="Resend or reply."),
            201: OpenApiResponse(s.IntakeResponseSerializer, description="A new task."),
            400: OpenApiResponse(s.IntakeErrorSerializer, description="What to fix."),
            401: OpenApiResponse(s.DetailSerializer),
            403: OpenApiResponse(s.DetailSerializer),
            413: OpenApiResponse(s.DetailSerializer),
            415: OpenApiResponse(s.DetailSerializer),
            429: OpenApiResponse(s.DetailSerializer),
            503: OpenApiResponse(s.DetailSerializer),
        },
        tags=["inbound"],
    )
    def post(self, request):
        client = calling_client(request)
        inbound, result = self.receive(request, client, "message/rfc822")
        if result is None:
            return Response({"errors": inbound.error_fields, "inbound_id": inbound.pk}, status=400)
        return _summary(request, result)
