"""`python manage.py bench`: calibrate with pgbench, run every scenario, print a table and
write var/bench.json. See clinicdesk/bench.py and docs/benchmarks.md."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from clinicdesk import bench


class Command(BaseCommand):
    help = (
        "Measure W (pgbench -N TPS, 8 clients) on the app's PostgreSQL server, run every "
        "benchmark scenario (<app>/benchmarks.py), print a table with the ratio of each rate to "
        "W and write the figures to var/bench.json. Exits non-zero if a scenario fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="NAME_SUBSTRING",
            help="run only scenarios whose name contains this (case-insensitive; repeatable)",
        )
        parser.add_argument(
            "--skip-calibration",
            action="store_true",
            help="do not run pgbench; reuse W from the JSON file of an earlier run if there is one",
        )
        parser.add_argument(
            "--calibration-seconds",
            type=int,
            default=bench.DEFAULT_CALIBRATION_SECONDS,
            metavar="N",
            help=f"pgbench run time (default {bench.DEFAULT_CALIBRATION_SECONDS})",
        )
        parser.add_argument(
            "--calibration-scale",
            type=int,
            default=bench.DEFAULT_CALIBRATION_SCALE,
            metavar="N",
            help=f"pgbench -i scale factor (default {bench.DEFAULT_CALIBRATION_SCALE})",
        )
        parser.add_argument(
            "--json",
            type=Path,
            default=None,
            metavar="PATH",
            help="where to write the figures (default var/bench.json)",
        )
        parser.add_argument(
            "--fail-on-target",
            action="store_true",
            help="also exit non-zero when a scenario misses one of its targets",
        )
        parser.add_argument(
            "--list", action="store_true", help="list the scenarios that would run and stop"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Benchmarks serve pages with DEBUG off and no collected static files: whitenoise's
        # notice about the missing directory says nothing about speed.
        warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
        if options["calibration_seconds"] < 1 or options["calibration_scale"] < 1:
            raise CommandError("--calibration-seconds and --calibration-scale must be >= 1")
        names = [
            name
            for name in bench.discover_benchmarks()
            if not options["only"] or any(part.lower() in name.lower() for part in options["only"])
        ]
        if options["list"]:
            for name in names:
                self.stdout.write(name)
            return
        if not names:
            known = ", ".join(bench.discover_benchmarks())
            raise CommandError(f"no scenario matches {', '.join(options['only'])}; known: {known}")
        # As in production: with DEBUG on, Django logs every statement and formats it with its
        # parameters in Python, which is not part of what the scenarios measure.
        with override_settings(DEBUG=False):
            result = bench.run(
                only=options["only"],
                skip_calibration=options["skip_calibration"],
                calibration_seconds=options["calibration_seconds"],
                calibration_scale=options["calibration_scale"],
                json_path=options["json"],
                stdout=self.stdout,
                verbosity=options["verbosity"],
            )
        problems = [f"{r.name} ({r.error})" for r in result.failures]
        if result.calibration_failed:
            problems.insert(0, f"calibration ({result.calibration['error']})")
        if options["fail_on_target"]:
            problems += [f"{name} (target missed)" for name in result.targets_missed]
        if problems:
            raise CommandError(f"{len(problems)} benchmark problem(s): " + "; ".join(problems))
