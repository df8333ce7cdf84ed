"""Escalation's scheduled jobs (django-q2): plain functions that call the services.

Schedules are declared in code by `manage.py setup_schedules`; each runs every minute. Neither
takes arguments, so nothing about a patient is ever stored with a job.
"""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from escalation import notifications, services


def send_notifications_job() -> int:
    return notifications.send_due()


def sweep_job() -> int:
    """One sweep; when steps fired, their notifications are sent at once rather than on the
    next minute's run (the outbox rows are committed by then)."""
    fired = services.sweep()
    if fired:
        transaction.on_commit(
            lambda: async_task(
                "escalation.jobs.send_notifications_job", task_name="escalation-send-now"
            )
        )
    return fired
