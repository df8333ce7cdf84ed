"""Holding: tasks waiting on someone outside the clinic, soonest follow-up first.

A task whose follow-up time has passed resurfaces on its own (`routing.jobs`); until the job
has run it is shown here as due.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Q
from django.shortcuts import render
from django.utils import timezone

from queues.filters import HoldingFilterForm
from queues.models import Queue, Task

LIMIT = 200


@login_required
def holding_list(request):
    user, now = request.user, timezone.now()
    queues = list(Queue.objects.visible_to(user).filter(is_active=True).only("id", "name"))
    form = HoldingFilterForm(request.GET, queues=queues)
    on_hold = Task.objects.visible_to(user).filter(status=Task.Status.ON_HOLD)
    counts = on_hold.aggregate(
        total=Count("pk"),
        due=Count("pk", filter=Q(follow_up_at__lte=now)),
        mine=Count("pk", filter=Q(assignee=user)),
    )
    tasks = list(
        form.filter_queryset(on_hold, user=user, now=now)
        .select_related("task_type", "queue", "assignee")
        .defer("body", "metadata")
        .order_by(F("follow_up_at").asc(nulls_last=True), "created_at", "id")[: LIMIT + 1]
    )
    context = {
        "form": form,
        "tasks": tasks[:LIMIT],
        "more": len(tasks) > LIMIT,
        "limit": LIMIT,
        "counts": counts,
        "now": now,
    }
    return render(request, "queues/holding.html", context)
