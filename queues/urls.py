from django.urls import include, path

from queues.views import attachments, emergency, holding, intake, queue, task, work

app_name = "queues"

task_urls = [
    path("", task.task_detail, name="task"),
    path("timeline/", task.task_timeline, name="task_timeline"),
    path(
        "attachments/<int:attachment_id>/",
        attachments.attachment_download,
        name="task_attachment",
    ),
    path("<slug:action>/", task.task_action, name="task_action"),
]

queue_urls = [
    path("", queue.queue_detail, name="queue"),
    path("rows/", queue.queue_rows, name="queue_rows"),
    path("reassign/", queue.queue_reassign, name="queue_reassign"),
]

failed_intake_urls = [
    path("", intake.failed_detail, name="intake_failed_detail"),
    path("correct/", intake.failed_correct, name="intake_failed_correct"),
    path("retry/", intake.failed_retry, name="intake_failed_retry"),
]

urlpatterns = [
    path("work/", work.my_work, name="my_work"),
    path("work/next/", work.next_task, name="next_task"),
    path("work/availability/", work.set_availability, name="availability"),
    path("queues/", queue.queue_list, name="queue_list"),
    path("queues/<int:queue_id>/", include(queue_urls)),
    path("tasks/<int:task_id>/", include(task_urls)),
    path("emergency-access/", emergency.emergency_access, name="emergency_access"),
    path("holding/", holding.holding_list, name="holding"),
    path("intake/new/", intake.intake_new, name="intake_new"),
    path("intake/new/fields/", intake.intake_fields, name="intake_fields"),
    path("intake/failed/", intake.failed_list, name="intake_failed"),
    path("intake/failed/<int:inbound_id>/", include(failed_intake_urls)),
]
