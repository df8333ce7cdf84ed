"""API routes under /api/v1/ (the inbound webhooks have their own module, `inbound_urls`)."""

from django.urls import path, re_path

from queues.api import views
from queues.api.serializers import ACTION_SERIALIZERS

app_name = "api"

urlpatterns = [
    path("intake/", views.IntakeView.as_view(), name="intake"),
    path("tasks/", views.TaskListView.as_view(), name="task-list"),
    path("tasks/next/", views.TaskNextView.as_view(), name="task-next"),
    path("tasks/<int:task_id>/", views.TaskDetailView.as_view(), name="task-detail"),
    *(
        path(f"tasks/<int:task_id>/{action}/", views.action_view(action), name=f"task-{action}")
        for action in ACTION_SERIALIZERS
    ),
    path("queues/", views.QueueListView.as_view(), name="queue-list"),
    # Last: any other path under /api/v1/ answers a JSON 404, never the HTML page.
    re_path(r"", views.endpoint_not_found),
]
