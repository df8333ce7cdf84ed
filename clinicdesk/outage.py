"""A database outage answers 503 with Retry-After, never a 500 page with a trace.

While PostgreSQL restarts or fails over, every request that touches it raises
`OperationalError` (cannot connect, connection lost) or `InterfaceError` (the connection was
closed under us). The middleware turns those into a short-lived, retryable answer: the
standalone `503.html` page for people, a JSON body `{"detail": …, "retry_after": 30}` for the
API, the inbound webhooks and the health check, so that integrations retry rather than drop.

Django converts an exception raised inside a middleware (the idle logoff reads the session,
hence the database, before any view runs) into a 500 response at that middleware's layer,
before an outer middleware could catch it; `process_exception` sees only the view's. So the
`got_request_exception` signal, sent while the exception is being handled, marks the request,
and the middleware, which sits near the top of MIDDLEWARE, replaces such a 500 with the 503.
`OutageLogFilter` keeps the traceback of those out of the `django.request` log: an outage is
logged once per request, at WARNING, without request data.

The connection recovers by itself: CONN_HEALTH_CHECKS drops a dead persistent connection at
the start of the next request, and a short connect_timeout keeps a request from hanging on a
server that does not answer (see settings).
"""

from __future__ import annotations

import logging
import sys

from django.core.signals import got_request_exception
from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.templatetags.static import static

logger = logging.getLogger(__name__)

RETRY_AFTER = 30
DATABASE_ERRORS = (OperationalError, InterfaceError)
# A resend is safe: intake is idempotent by (channel, external id).
DETAIL = "ClinicDesk is briefly unavailable. Send the same request again after 30 seconds."
# Machine clients: the REST API, the inbound webhooks (under /api/) and the health check.
JSON_PREFIXES = ("/api/", "/healthz")
_MARK = "_clinicdesk_database_outage"


def is_database_outage(error: BaseException | None) -> bool:
    return isinstance(error, DATABASE_ERRORS)


def outage_response(request: HttpRequest, error: BaseException) -> HttpResponse:
    # The class name says which kind of failure it was; the message may echo a host name or
    # a statement, and nothing about the request (path, user, body) belongs in this line.
    logger.warning("Database unavailable (%s): answered 503", type(error).__name__)
    setattr(request, _MARK, error)
    if request.path.startswith(JSON_PREFIXES):
        response = JsonResponse({"detail": DETAIL, "retry_after": RETRY_AFTER}, status=503)
    else:
        # Rendered without the request: no context processor, nothing that needs the database.
        response = HttpResponse(
            render_to_string("503.html", {"stylesheet": _stylesheet()}), status=503
        )
    response["Retry-After"] = str(RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    return response


def _stylesheet() -> str | None:
    # Without collected static files (a manifest), the page goes without its stylesheet
    # rather than fail in turn.
    try:
        return static("css/clinicdesk.css")
    except ValueError:
        return None


class DatabaseOutageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except Exception as error:
            # Only when no inner layer turned the error into a response: Django normally does,
            # unless rendering its 500 page failed in turn.
            outage = error if is_database_outage(error) else getattr(request, _MARK, None)
            if outage is None:
                raise
            return outage_response(request, outage)
        error = getattr(request, _MARK, None)
        if error is not None and response.status_code == 500:
            return outage_response(request, error)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception):
        if is_database_outage(exception):
            return outage_response(request, exception)
        return None


def _mark_outage(sender, request=None, **kwargs) -> None:
    error = sys.exc_info()[1]
    if request is not None and is_database_outage(error):
        setattr(request, _MARK, error)


got_request_exception.connect(_mark_outage, dispatch_uid="clinicdesk.outage")


class OutageLogFilter(logging.Filter):
    """Drops `django.request`'s records of a request answered for an outage (its "Internal
    Server Error" with traceback, its "Service Unavailable: <path>"): the middleware has
    logged the outage once, without the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_database_outage(record.exc_info[1]):
            return False
        return getattr(getattr(record, "request", None), _MARK, None) is None
