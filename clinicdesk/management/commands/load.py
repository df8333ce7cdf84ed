"""`python manage.py load`: the load run (see clinicdesk/load/ and docs/reliability.md).

It starts its own PostgreSQL, gunicorn, job cluster and Locust, prints the answer times per
page and endpoint and the post-run checks, and exits non-zero when a check fails or a request
failed. `--prepare` and `--check` are the steps it runs inside the load run's own database.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinicdesk.load import runner


class Command(BaseCommand):
    help = (
        "Run a clinic morning under load: N staff working their queues in the browser and the "
        "integrations' intake at RATE_SCALE times the demo's 250 requests an hour, against "
        "gunicorn and a job cluster on a PostgreSQL of its own, for MINUTES; print p50/p95/p99 "
        "per page and endpoint and the post-run checks. Exits non-zero if a check fails or any "
        "request failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--minutes", type=float, default=10.0, help="default %(default)s")
        parser.add_argument(
            "--users", type=int, default=50, help="staff signed in (default %(default)s)"
        )
        parser.add_argument(
            "--rate-scale",
            type=float,
            default=10.0,
            help="intake rate as a multiple of the demo's 250 an hour (default %(default)s)",
        )
        parser.add_argument("--port", type=int, default=8100, help="default %(default)s")
        parser.add_argument(
            "--workers", type=int, default=0, help="gunicorn workers (default 2 * cores + 1)"
        )
        parser.add_argument(
            "--out", type=Path, default=None, help="where the run's files go (default var/load/…)"
        )
        parser.add_argument(
            "--keep-database",
            action="store_true",
            help="leave the load run's PostgreSQL running afterwards, to look around in it",
        )
        # The steps the run performs in its own database.
        parser.add_argument("--prepare", type=Path, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--check", type=Path, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--intake-items", type=int, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--intake-per-hour", type=float, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--intake-users", type=int, default=2, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["prepare"]:
            self._prepare(options)
            return
        if options["check"]:
            self._check(options["check"])
            return
        if options["minutes"] <= 0 or options["users"] < 1 or options["rate_scale"] <= 0:
            raise CommandError("--minutes and --rate-scale must be positive, --users at least 1.")
        run_options = runner.Options(
            minutes=options["minutes"],
            users=options["users"],
            rate_scale=options["rate_scale"],
            port=options["port"],
            workers=options["workers"],
            out=options["out"],
            keep_database=options["keep_database"],
        )
        try:
            result = runner.run(settings.BASE_DIR, run_options, say=self.stdout.write)
        except runner.RunError as error:
            raise CommandError(str(error)) from error
        self.stdout.write("")
        if result.ok:
            self.stdout.write(self.style.SUCCESS(f"Load run passed. Files: {result.out}"))
            return
        self.stderr.write(
            self.style.ERROR(
                f"Load run failed: {result.errors} request errors, checks "
                f"{'passed' if result.checks_passed else 'failed'}. Files: {result.out}"
            )
        )
        sys.exit(1)

    def _prepare(self, options: dict) -> None:
        from accounts.models import Department
        from clinicdesk.load import clinic

        if settings.DATABASES["default"]["NAME"] != runner.DATABASE:
            raise CommandError(
                f"--prepare builds staff with a known password: only in the load run's own "
                f"database ({runner.DATABASE}), which `manage.py load` creates."
            )
        if Department.objects.exists():
            raise CommandError("--prepare needs an empty database.")
        out: Path = options["prepare"]
        built = clinic.build_load_clinic(staff=options["users"])
        plan = {
            "password": clinic.LOAD_PASSWORD,
            "staff": built.usernames,
            "staffing": built.staffing,
            "token": built.token,
            "intake_per_hour": options["intake_per_hour"],
            "intake_users": options["intake_users"],
            "intake": clinic.intake_requests(options["intake_items"], run=out.name),
        }
        (out / "plan.json").write_text(json.dumps(plan))
        staffing = ", ".join(f"{code} {n}" for code, n in built.staffing.items())
        self.stdout.write(f"Load clinic ready: {len(built.usernames)} staff ({staffing}).")

    def _check(self, out: Path) -> None:
        from clinicdesk.load import checks

        results = checks.run_checks(out)
        for check in results:
            self.stdout.write(check.line)
        (out / "checks.json").write_text(json.dumps([asdict(c) for c in results], indent=2))
        if not all(check.ok for check in results):
            sys.exit(1)
