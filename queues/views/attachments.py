"""A task's files, downloaded by those who may see the task."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from queues import selectors
from queues.emergency import record_emergency_read
from queues.models import Attachment

log = logging.getLogger(__name__)

# Types a browser would run or render as a page if it ever displayed one of them: served as
# bytes. Everything is sent as a download anyway (Content-Disposition: attachment, nosniff).
ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
)


@login_required
@require_GET
def attachment_download(request, task_id: int, attachment_id: int):
    # 404 when not theirs; under an emergency access grant, the download is a recorded read.
    task = selectors.get_task_for_user(request.user, task_id, emergency=True)
    attachment = get_object_or_404(Attachment, pk=attachment_id, task=task)
    record_emergency_read(request.user, task, read="attachment")
    content_type = attachment.content_type.split(";")[0].strip().lower()
    if content_type in ACTIVE_TYPES or "/" not in content_type:
        content_type = "application/octet-stream"
    try:
        handle = attachment.file.open("rb")
    except FileNotFoundError:
        log.error("attachment %s of task %s is missing from storage", attachment.pk, task.pk)
        raise Http404("This file is missing from storage; ask an administrator.") from None
    response = FileResponse(
        handle, as_attachment=True, filename=attachment.filename, content_type=content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response
