"""My work: a person's own tasks, the Next task button, their availability and their load."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.models import StaffProfile
from queues import services as queues_services
from queues.filters import AvailabilityForm
from queues.models import Queue, Task
from queues.selectors import ROLE_COMPLIANCE

# The pages are entry points like the API: availability goes through routing's orchestrating
# function, which offers waiting work to a person who comes back.
from routing import services as routing_services
from routing.selectors import NoActiveRuleSet

REFRESH_SECONDS = 20
MINE = (Task.Status.ASSIGNED, Task.Status.IN_PROGRESS, Task.Status.ON_HOLD)
AVAILABILITY_MESSAGES = {
    StaffProfile.Availability.AVAILABLE: "You are available: waiting work can come to you now.",
    StaffProfile.Availability.AWAY: "You are away: no new work is pushed to you until you "
    "come back.",
}


@login_required
def my_work(request):
    """The page, or (for its own htmx refresh) the fragment with the load and the tasks."""
    user = request.user
    profile = StaffProfile.objects.filter(user=user).first()
    tasks = list(
        Task.objects.visible_to(user)
        .filter(assignee=user, status__in=MINE)
        .select_related("task_type", "queue", "sla__policy__calendar")
        .defer("body", "metadata")
        .order_by("priority", "created_at", "id")
    )
    context = {
        "profile": profile,
        "active": [t for t in tasks if t.status != Task.Status.ON_HOLD],
        "held": sorted(
            (t for t in tasks if t.status == Task.Status.ON_HOLD),
            key=lambda t: (t.follow_up_at is None, t.follow_up_at, t.pk),
        ),
        "room": max(profile.capacity - profile.active_load, 0) if profile else 0,
        "waiting": _waiting_in_my_queues(user) if profile else None,
        "now": timezone.now(),
        "refresh_seconds": REFRESH_SECONDS,
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "queues/my_work.html#work", context)
    return render(request, "queues/my_work.html", context)


@login_required
@require_POST
def next_task(request):
    _worker_profile(request.user)
    try:
        task = queues_services.task_claim_next(user=request.user)
    except queues_services.CapacityError as error:
        messages.warning(request, " ".join(error.messages))
        return redirect(_back(request))
    if task is None:
        messages.info(request, "Nothing is waiting in your queues.")
        return redirect(_back(request))
    return redirect("queues:task", task_id=task.pk)


@login_required
@require_POST
def set_availability(request):
    profile = _worker_profile(request.user)
    form = AvailabilityForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose Available or Away.")
        return redirect("queues:my_work")
    availability = form.cleaned_data["availability"]
    try:
        routing_services.staff_set_availability(profile=profile, availability=availability)
    except NoActiveRuleSet as error:
        messages.error(request, str(error))
        return redirect("queues:my_work")
    messages.success(request, AVAILABILITY_MESSAGES[availability])
    return redirect("queues:my_work")


# --- helpers -------------------------------------------------------------------------------


def _worker_profile(user) -> StaffProfile:
    """Only staff who work a queue act from these pages; read-only roles (compliance reviewers,
    managers outside any department) may look but not post."""
    profile = StaffProfile.objects.filter(user=user).first()
    if profile is None or not Queue.objects.workable_by(user).exists():
        raise PermissionDenied("You do not work any queue.")
    if Group.objects.filter(user=user, name=ROLE_COMPLIANCE).exists():
        raise PermissionDenied("Compliance reviewers can read the work pages but not act.")
    return profile


def _waiting_in_my_queues(user) -> dict:
    """What Next task would choose from: queued, unassigned work in the queues I work."""
    return (
        Task.objects.visible_to(user)
        .filter(
            status=Task.Status.QUEUED,
            assignee__isnull=True,
            blocked_by__isnull=True,
            queue__in=Queue.objects.workable_by(user).filter(is_active=True).values("pk"),
        )
        .aggregate(total=Count("pk"), urgent=Count("pk", filter=Q(priority=1)))
    )


def _back(request) -> str:
    """Back to the list the person pressed Next task on, or to My work."""
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        return back
    return "queues:my_work"
