"""The Emergency access page: an agent or a supervisor opens a task outside their departments
by giving a reason ("break the glass"). Read-only, for a few hours, recorded and alerted.

A task page the person may not see stays a plain 404 (it never says the task exists); this
page is where they ask, by number.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

# An upward import to the audit trail (clinicdesk sits on top): the request, its audit event
# and the compliance alert are one orchestrating function there.
from clinicdesk.audit.emergency import emergency_access_request
from queues.emergency import PERMISSION, EmergencyAccessNotNeeded
from queues.emergency_forms import EmergencyAccessForm
from queues.models import EmergencyAccess


def _may_break_the_glass(user) -> None:
    if not user.has_perm(PERMISSION):
        raise PermissionDenied(
            "Emergency access is for agents and supervisors; compliance reviewers and "
            "managers already read every task."
        )


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def emergency_access(request):
    _may_break_the_glass(request.user)
    status = 200
    if request.method == "POST":
        form = EmergencyAccessForm(request.POST)
        if form.is_valid():
            number = form.cleaned_data["task_number"]
            try:
                grant = emergency_access_request(
                    user=request.user,
                    task_number=number,
                    reason=form.cleaned_data["reason"],
                    request=request,
                )
            except EmergencyAccessNotNeeded as error:
                messages.info(request, str(error))
                return redirect("queues:task", task_id=number)
            except ValidationError as error:
                form.add_error("reason", error)
            else:
                if grant.task_id is not None:
                    return redirect("queues:task", task_id=grant.task_id)
                messages.warning(
                    request,
                    f"No task has the number {number}. Your request was recorded and "
                    "compliance was told.",
                )
                return redirect("queues:emergency_access")
        status = 400
    else:
        number = request.GET.get("task", "")
        form = EmergencyAccessForm(initial={"task_number": number if number.isdigit() else ""})
    mine = EmergencyAccess.objects.active().filter(user=request.user)
    context = {
        "form": form,
        "hours": settings.EMERGENCY_ACCESS_HOURS,
        "active": mine.order_by("-expires_at"),
    }
    return render(request, "queues/emergency_access.html", context, status=status)
