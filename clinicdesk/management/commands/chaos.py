"""`make chaos`: faults under load, measured (see clinicdesk.chaos.run).

    python manage.py chaos [--outage-seconds 10] [--tasks 300] [--no-redis]

Runs on its own embedded PostgreSQL (var/pgdata-chaos, a fresh database each run), which it
stops and starts; gunicorn on 127.0.0.1:8120, the webhook receiver on :8121, Redis on :6390.
Prints a table of results and exits non-zero when any measure misses its target.
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command
from django.db import connections

RUN_FLAG = "CLINICDESK_CHAOS_RUN"


def _pgdata() -> Path:
    return Path(settings.BASE_DIR) / "var" / "pgdata-chaos"


class Command(BaseCommand):
    help = "Restart PostgreSQL under load and kill job clusters mid-work; measure recovery."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--outage-seconds", type=float, default=10.0)
        parser.add_argument("--tasks", type=int, default=300, help="Due tasks per kill run.")
        parser.add_argument("--port", type=int, default=8120)
        parser.add_argument("--receiver-port", type=int, default=8121)
        parser.add_argument("--redis-port", type=int, default=6390)
        parser.add_argument("--no-redis", action="store_true", help="Skip the Redis scale-out.")

    def handle(self, *args, **options):
        if os.environ.get(RUN_FLAG) != "1":
            # Settings open the development database unless told otherwise: run again on the
            # run's own server, so that stopping it touches nothing else.
            env = {**os.environ, RUN_FLAG: "1", "CLINICDESK_PGDATA": str(_pgdata())}
            env.setdefault("LOG_LEVEL", "WARNING")
            # One key for the run and its children: jobs queued here are signed with it.
            env["SECRET_KEY"] = secrets.token_urlsafe(50)
            env.pop("DATABASE_URL", None)
            argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "chaos"]
            for key in ("outage_seconds", "tasks", "port", "receiver_port", "redis_port"):
                argv += [f"--{key.replace('_', '-')}", str(options[key])]
            if options["no_redis"]:
                argv.append("--no-redis")
            code = subprocess.call(argv, env=env, cwd=settings.BASE_DIR)
            if code:
                sys.exit(code)
            return
        self._run(**options)

    def _run(self, *, outage_seconds, tasks, port, receiver_port, redis_port, no_redis, **_):
        from clinicdesk.chaos import database, run
        from clinicdesk.chaos.redis_server import RedisUnavailable, redis_server
        from clinicdesk.demo import build_demo_clinic
        from queues.intake import store

        if tasks < 30:
            raise CommandError("--tasks: at least 30, so that a kill lands mid-work.")
        pgdata = _pgdata()
        self.stdout.write(f"Fresh database on the embedded PostgreSQL in {pgdata}…")
        url = database.fresh_database(pgdata)
        connections.close_all()
        connections["default"].settings_dict["NAME"] = database.DATABASE_NAME
        call_command("migrate", interactive=False, verbosity=0)
        build_demo_clinic()
        _, issued = store.integration_client_create(name="chaos-load", channels=["api"])
        # The pages are served as in production (DEBUG off): from collected static files.
        call_command("collectstatic", interactive=False, verbosity=0)
        connections.close_all()

        logs = Path(tempfile.mkdtemp(prefix="clinicdesk-chaos-"))
        stage = run.Stage(
            pgdata=pgdata,
            env={
                "DATABASE_URL": url,
                "DEBUG": "false",
                "SECRET_KEY": settings.SECRET_KEY,
                "ALLOWED_HOSTS": "127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",
                "SECURE_COOKIES": "false",
                "SITE_URL": f"http://127.0.0.1:{port}",
                "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
                "API_CLIENT_RATE": "1000000/min",
                "LOG_LEVEL": "WARNING",
                "REDIS_URL": "",
            },
            logs=logs,
            port=port,
            receiver_port=receiver_port,
            say=self.stdout.write,
        )
        self.stdout.write(f"Logs of the servers and clusters: {logs}")
        rows: list[run.Row] = []
        self.stdout.write("\n(a) PostgreSQL restart under load")
        rows += run.database_restart(
            stage,
            token=issued.token,
            username="frontdesk1",
            password=settings.DEMO_PASSWORD,
            down_s=outage_seconds,
        )
        self.stdout.write("\n(b) qcluster killed with SIGKILL mid-escalation and mid-delivery")
        rows += run.cluster_kill(stage, tasks=tasks, clusters=1, redis_url=None)
        self.stdout.write("\n(c) Redis broker, three clusters, one killed")
        if no_redis:
            self.stdout.write("  skipped (--no-redis)")
        else:
            try:
                with redis_server(redis_port) as redis_url:
                    rows += run.cluster_kill(stage, tasks=tasks, clusters=3, redis_url=redis_url)
            except RedisUnavailable as error:
                self.stdout.write(self.style.WARNING(f"  SKIPPED: {error}"))
        connections.close_all()
        database.stop_server(pgdata)  # the next run starts it again
        self._table(rows)
        failed = [row for row in rows if row.ok is False]
        if failed:
            raise CommandError(f"{len(failed)} measure(s) missed their target.")
        self.stdout.write(self.style.SUCCESS("Every measure met its target."))

    def _table(self, rows) -> None:
        self.stdout.write(
            f"\nResults ({platform.node()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}):\n"
        )
        widths = [
            max(len(getattr(row, key)) for row in rows) for key in ("scenario", "measure", "result")
        ]
        for row in rows:
            mark = {True: "✔", False: "✘", None: "·"}[row.ok]
            self.stdout.write(
                f"{mark} {row.scenario:<{widths[0]}}  {row.measure:<{widths[1]}}  "
                f"{row.result:<{widths[2]}}  target {row.target}"
            )
