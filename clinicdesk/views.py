from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import render

from queues.models import Queue, Task


@login_required
def home(request):
    """The queues this person may see, with their open work at a glance."""
    queues = (
        Queue.objects.visible_to(request.user)
        .filter(is_active=True)
        .select_related("department")
        .annotate(
            open_count=Count("tasks", filter=Q(tasks__status__in=Task.OPEN_STATUSES)),
            urgent_count=Count(
                "tasks", filter=Q(tasks__status__in=Task.OPEN_STATUSES, tasks__priority=1)
            ),
            unassigned_count=Count(
                "tasks", filter=Q(tasks__status="queued", tasks__assignee__isnull=True)
            ),
        )
        .order_by("department__name", "name")
    )
    return render(request, "clinicdesk/home.html", {"queues": queues})


def healthz(request):
    """For a load balancer: 200 when the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
