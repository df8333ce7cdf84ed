"""Declare the recurring jobs in code: create or update each django-q2 Schedule by name.

Idempotent, so `make run` and every deployment call it: a second run changes nothing, and an
edited declaration updates the existing row instead of adding another.
"""

from __future__ import annotations

from django.conf import settings
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
    # Approved rule-set drafts go live at their chosen time; a minute's delay at most.
    {
        "name": "publish-due-rule-sets",
        "func": "routing.jobs.publish_due_rule_sets",
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
    # The audit trail: new rows are linked into the hash chain every ten minutes (cheap, and
    # a short window in which a row is protected by the triggers and its own hash only), and
    # the whole chain is verified every night; a broken chain emails compliance and managers.
    {
        "name": "audit-seal",
        "func": "clinicdesk.audit.jobs.seal_job",
        "schedule_type": Schedule.MINUTES,
        "minutes": 10,
        "repeats": -1,
    },
    {
        "name": "audit-verify",
        "func": "clinicdesk.audit.jobs.verify_job",
        "schedule_type": Schedule.DAILY,
        "repeats": -1,
    },
    # Reads the intake mailbox; idempotent (a message read twice is recognised by its
    # Message-ID). Declared only where a mailbox is configured: see ENABLED.
    {
        "name": "poll-imap",
        "func": "queues.jobs.poll_imap",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
]

# Schedules that exist only under a setting; elsewhere the command removes them.
ENABLED = {"poll-imap": lambda: bool(settings.IMAP_HOST)}


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
            if name in ENABLED and not ENABLED[name]():
                if Schedule.objects.filter(name=name).delete()[0]:
                    self.stdout.write(f"Removed schedule {name}: not configured here.")
                continue
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
