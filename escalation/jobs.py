"""Escalation's scheduled jobs (django-q2): plain functions that call the services.

Schedules are declared in code by `manage.py setup_schedules`; each runs every minute. Neither
takes arguments, so nothing about a patient is ever stored with a job.
"""

from __future__ import annotations

import time

from django.db import transaction
from django_q.tasks import async_task

from escalation import notifications, services


def send_notifications_job() -> int:
    return notifications.send_due()


SWEEP_JOB_SECONDS = 30  # well under the cluster's 50 s job timeout


def sweep_job() -> int:
    """Sweep batch after batch until there is nothing left to do (no changed task to
    recompute, no due step) or SWEEP_JOB_SECONDS have passed, so a backlog drains within the
    minute instead of one batch a minute. Each batch commits on its own; when steps fired,
    their notifications are sent at once rather than on the next minute's run (the outbox rows
    are committed by then)."""
    started = time.monotonic()
    fired = 0
    while True:
        result = services.sweep_batch()
        fired += result.fired
        if not result.worked or time.monotonic() - started > SWEEP_JOB_SECONDS:
            break
    if fired:
        transaction.on_commit(
            lambda: async_task(
                "escalation.jobs.send_notifications_job", task_name="escalation-send-now"
            )
        )
    return fired
