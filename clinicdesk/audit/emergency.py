"""Emergency access ("break the glass") as the audit sees it: the request recorded with its
audit event and the compliance alert, in one transaction; the alert job; and the page that
lists every request for compliance reviewers and managers.

The grant itself, and what it lets a person read, belong to `queues.emergency`.
"""

from __future__ import annotations

import logging
from functools import wraps

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import audit_event_record, client_ip
from clinicdesk.roles import COMPLIANCE
from queues.emergency import emergency_access_open
from queues.models import EmergencyAccess

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "queues.view_emergencyaccess"
PAGE_SIZE = 50


def emergency_access_request(*, user, task_number: int, reason: str, request=None):
    """Record the request and, for a task that exists, the grant (`queues.emergency`), write
    the `emergency` audit event with the reason, and email compliance once committed. Raises
    what `emergency_access_open` raises, and then nothing is recorded."""
    with transaction.atomic():
        grant = emergency_access_open(
            user=user, task_number=task_number, reason=reason, ip=client_ip(request)
        )
        audit_event_record(
            kind=AuditEvent.Kind.EMERGENCY,
            actor=user,
            request=request,
            detail={
                "task_id": task_number,
                "task_found": grant.task_id is not None,
                "reason": grant.reason,
                "expires_at": grant.expires_at.isoformat(),
                "grant": grant.pk,
            },
        )
        # Only the grant's id goes to the queue: q2 stores a job's arguments.
        transaction.on_commit(
            lambda: async_task(
                "clinicdesk.audit.emergency.emergency_alert_job",
                grant.pk,
                task_name=f"emergency-alert-{grant.pk}",
            )
        )
    return grant


# --- The alert -------------------------------------------------------------------------------


def alert_recipients() -> list[str]:
    return sorted(
        set(
            get_user_model()
            .objects.filter(is_active=True, groups__name=COMPLIANCE)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )


def alert_message(grant: EmergencyAccess) -> tuple[str, str]:
    """(subject, body): who, which task number, when, and where to read the rest. Never the
    reason (free text a person typed, which may name the patient) nor anything of the task."""
    who = grant.user.get_username()
    name = grant.user.get_full_name()
    person = f"{name} ({who})" if name else who
    when = timezone.localtime(grant.granted_at)
    link = settings.SITE_URL + reverse("audit:emergency")
    if grant.task_id is not None:
        until = timezone.localtime(grant.expires_at)
        what = (
            f"{person} broke the glass to read task #{grant.task_number}, outside their "
            f"departments, on {when:%b %d, %Y at %H:%M} until {until:%H:%M} ({when:%Z})."
        )
    else:
        what = (
            f"{person} asked for emergency access to task #{grant.task_number} on "
            f"{when:%b %d, %Y at %H:%M} ({when:%Z}); no task has that number."
        )
    body = (
        f"{what}\n\nThe reason they gave, and every read they make, are on the audit pages:\n"
        f"{link}\n"
    )
    return f"ClinicDesk: emergency access to task #{grant.task_number} by {who}", body


def emergency_alert_job(grant_id: int) -> int:
    """Email every active compliance reviewer about one grant, once. The row is locked and
    claimed in the same transaction as the sending: if the mail server refuses, the claim
    rolls back and q2's retry sends it; a re-run after success finds it claimed and does
    nothing. Returns how many people were emailed."""
    with transaction.atomic():
        grant = (
            EmergencyAccess.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(pk=grant_id, alerted_at=None)
            .first()
        )
        if grant is None:
            return 0
        recipients = alert_recipients()
        if recipients:
            subject, body = alert_message(grant)
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
        else:
            logger.warning("Emergency access %s: no compliance reviewer has an email", grant.pk)
        grant.alerted_at = timezone.now()
        grant.save(update_fields=["alerted_at"])
    return len(recipients)


# --- The compliance page ---------------------------------------------------------------------


def reviewers_only(view):
    """Signed in, allowed to read emergency accesses (Compliance, Manager), and only reading."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied("Only compliance reviewers and managers read emergency access.")
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied("The audit is read-only.")
        return view(request, *args, **kwargs)

    return wrapper


@reviewers_only
def emergency_list(request):
    now = timezone.now()
    grants = EmergencyAccess.objects.select_related("user").order_by("-granted_at", "-id")
    active_only = request.GET.get("active") == "1"
    if active_only:
        grants = grants.active(now)
    page = Paginator(grants, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "rows": [(grant, grant.is_active(now)) for grant in page.object_list],
        "active_only": active_only,
        "hours": settings.EMERGENCY_ACCESS_HOURS,
    }
    return render(request, "audit/emergency.html", context)
