from __future__ import annotations

from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import audit_event_record


class DenialAuditMiddleware:
    """Record every refused request: each 403, whoever asked, and each 404 answered to a
    signed-in person or client (our pages answer 404 for a task of another department, so a
    404 can be a refusal in disguise; anonymous 404s are the internet's noise and are not
    kept). One place catches every refusal, whether a view raised PermissionDenied, DRF
    refused a client, or CSRF failed; other responses cost nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        status = response.status_code
        if status == 403 or status == 404:
            # DRF sets the caller on the Django request too, so a token client is named here.
            user = getattr(request, "user", None)
            signed_in = user is not None and user.is_authenticated
            if status == 403 or signed_in:
                audit_event_record(
                    kind=AuditEvent.Kind.DENIED if status == 403 else AuditEvent.Kind.NOT_FOUND,
                    actor=user if signed_in else None,
                    username="" if signed_in else "anonymous",
                    request=request,
                    status_code=status,
                )
        return response
