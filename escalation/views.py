"""The Escalations page: the steps that fired for tasks in the queues a person may see, newest
first, and the Acknowledge button that tells the others someone has it in hand.

Supervisors see their departments' queues, managers every queue (`Queue.objects.visible_to`);
compliance reviewers read but do not acknowledge; agents are refused. No patient data is shown:
a row names its task by number and type only.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from escalation import services
from escalation.models import Escalation
from queues.models import Queue

LIMIT = 200
SHOW_ALL = "all"


def _escalations_for_user(user) -> QuerySet[Escalation]:
    """Escalations of tasks in queues the user may see; PermissionDenied for those without the
    role to read escalations at all."""
    if not user.has_perm("escalation.view_escalation"):
        raise PermissionDenied("Only supervisors, managers and compliance see escalations.")
    return Escalation.objects.filter(task__queue__in=Queue.objects.visible_to(user).values("id"))


@login_required
@require_GET
def escalation_list(request):
    escalations = _escalations_for_user(request.user)
    show_all = request.GET.get("show") == SHOW_ALL
    if not show_all:
        escalations = escalations.filter(acknowledged_at__isnull=True)
    rows = list(
        escalations.select_related(
            "task__task_type", "task__queue", "step__policy", "acknowledged_by"
        ).order_by("-fired_at", "-id")[: LIMIT + 1]
    )
    context = {
        "escalations": rows[:LIMIT],
        "truncated": len(rows) > LIMIT,
        "limit": LIMIT,
        "show_all": show_all,
        "can_acknowledge": request.user.has_perm("escalation.change_escalation"),
    }
    return render(request, "escalation/escalations.html", context)


@login_required
@require_POST
def escalation_acknowledge(request, escalation_id: int):
    if not request.user.has_perm("escalation.change_escalation"):
        raise PermissionDenied("You may read escalations but not acknowledge them.")
    escalation = get_object_or_404(_escalations_for_user(request.user), pk=escalation_id)
    if services.escalation_acknowledge(escalation_id=escalation.pk, user=request.user):
        messages.success(request, f"Escalation of task #{escalation.task_id} acknowledged.")
    else:
        messages.info(request, f"Task #{escalation.task_id}'s escalation was acknowledged already.")
    url = reverse("escalation:list")
    return redirect(f"{url}?show={SHOW_ALL}" if request.POST.get("show") == SHOW_ALL else url)
