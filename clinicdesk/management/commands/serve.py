"""`make run`: migrate, load the demo clinic and a morning of its requests into an empty
database, then run the web server and a django-q2 cluster side by side until Ctrl-C, which
stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import BaseCommand, call_command

from accounts.models import Department

# The generated morning loaded with the demo clinic, so that the queues, the SLA badges and the
# dashboard have work to show from the first page (`manage.py demo --tasks N` adds more).
DEMO_MORNING_TASKS = 250

DEMO_LOGINS = [
    ("frontdesk1", "Front desk agent"),
    ("billing1", "Billing agent"),
    ("auth1", "Prior authorization agent"),
    ("intake1", "Referral intake agent"),
    ("nurse1", "Clinical triage nurse"),
    ("scheduler1", "Scheduling agent"),
    ("supervisor1", "Supervisor (Front desk, Billing, Scheduling)"),
    ("manager1", "Manager (admin: rules, staff, queues)"),
    ("compliance1", "Compliance reviewer (read only)"),
]


class Command(BaseCommand):
    help = "Set up the database and run the web server and the job cluster together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo clinic.")

    def handle(self, *args, host: str, port: str, no_demo: bool, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database is up to date.")
        self._setup_schedules()
        demo_loaded = False
        if not no_demo and not Department.objects.exists():
            self.stdout.write("Empty database: loading the demo clinic and a morning of requests…")
            call_command("demo", tasks=DEMO_MORNING_TASKS)
            demo_loaded = True
        show_logins = demo_loaded or (
            not no_demo and Department.objects.filter(code="front-desk").exists()
        )

        manage = [sys.executable, os.path.join(settings.BASE_DIR, "manage.py")]
        processes = [
            subprocess.Popen([*manage, "runserver", f"{host}:{port}", "--noreload"]),
            subprocess.Popen([*manage, "qcluster"]),
        ]
        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nClinicDesk is running at {url}"))
        self.stdout.write(f"Admin for managers: {url}admin/")
        if show_logins:
            self.stdout.write(f"\nDemo logins (password: {settings.DEMO_PASSWORD}):")
            for username, role in DEMO_LOGINS:
                self.stdout.write(f"  {username:<13} {role}")
        self.stdout.write("\nPress Ctrl-C to stop the web server and the job cluster.\n")

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(p.poll() is None for p in processes):
                time.sleep(0.5)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for process in processes:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
        failed = [p for p in processes if p.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            self.stderr.write("A process stopped unexpectedly; ClinicDesk has shut down.")
            sys.exit(1)
        self.stdout.write("Stopped.")

    def _setup_schedules(self) -> None:
        from django.core.management import get_commands

        if "setup_schedules" in get_commands():
            call_command("setup_schedules")
