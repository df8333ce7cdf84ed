"""Declare the recurring jobs in code: create or update each django-q2 Schedule by name.

Idempotent, so `make run` and every deployment call it: a second run changes nothing, and an
edited declaration updates the existing row instead of adding another.
"""

from __future__ import annotations

from django.core.management import BaseCommand
from django.db import connection, transaction
from django_q.models import Schedule

SCHEDULES = [
    {
        "name": "resume-due-follow-ups",
        "func": "routing.jobs.resume_due_follow_ups",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    # Both escalation jobs are idempotent and cheap when there is nothing to do. A missed
    # minute needs no catch-up, since the next run sees everything due: Q_CLUSTER["catch_up"]
    # is False on purpose.
    {
        "name": "escalation-sweep",
        "func": "escalation.jobs.sweep_job",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    {
        "name": "escalation-send-notifications",
        "func": "escalation.jobs.send_notifications_job",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
]


class Command(BaseCommand):
    help = "Create or update the recurring jobs (django-q2 schedules) declared in code."

    @transaction.atomic
    def handle(self, *args, **options):
        # Two deployments starting at once must not both create a schedule (names are not
        # unique in django-q2's table): serialise the command for this transaction.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('clinicdesk.setup_schedules'))")
        for spec in SCHEDULES:
            name, values = spec["name"], {k: v for k, v in spec.items() if k != "name"}
            existing = list(Schedule.objects.select_for_update().filter(name=name).order_by("id"))
            if not existing:
                Schedule.objects.create(name=name, **values)
                self.stdout.write(f"Created schedule {name}.")
                continue
            schedule, *duplicates = existing
            for duplicate in duplicates:
                duplicate.delete()
            changed = [k for k, v in values.items() if getattr(schedule, k) != v]
            if changed:
                for key in changed:
                    setattr(schedule, key, values[key])
                schedule.save(update_fields=changed)
                self.stdout.write(f"Updated schedule {name}: {', '.join(changed)}.")
