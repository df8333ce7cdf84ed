"""`python manage.py simulate --day`: one generated clinic day under three dispatch strategies
(inbox-order manual dispatch, round robin, ClinicDesk), side by side. Writes nothing.
The model and the metrics: routing/simulate.py and docs/simulation.md."""

from __future__ import annotations

import json
import time
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing import engine, simulate

USAGE = "python manage.py simulate --day [--seed N] [--date YYYY-MM-DD] [--tasks N] [--json]"
DEFAULT_SEED = 2025


class Command(BaseCommand):
    help = (
        "Simulate one clinic day (the demo's mix of requests, arrival waves, staff shifts, "
        "skills and capacities, as configured in the database) under inbox-order manual "
        "dispatch, round robin and ClinicDesk, and report queue age, urgent items reached "
        "within 30 minutes, load imbalance and tasks that waited while someone qualified was "
        "idle. Needs the demo clinic (`python manage.py demo`); writes nothing."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        plain_error = parser.error

        def error(message: str) -> None:  # an unknown flag: name it, and say what works
            plain_error(f"{message}. Usage: {USAGE}")

        parser.error = error  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--day",
            action="store_true",
            help="simulate one clinic day (the only simulation there is; required)",
        )
        parser.add_argument(
            "--seed",
            default=str(DEFAULT_SEED),
            metavar="N",
            help="seed of the generated day: the same seed gives the same report "
            "(default %(default)s)",
        )
        parser.add_argument(
            "--date",
            metavar="YYYY-MM-DD",
            help="the simulated day; it decides who is on shift (default: today, or the next "
            "Monday on a weekend, in the clinic's time zone)",
        )
        parser.add_argument(
            "--tasks",
            default=str(simulate.DEFAULT_TASKS),
            metavar="N",
            help="requests in the day (default %(default)s)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object keyed by strategy instead of a table",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["day"]:
            raise CommandError(f"Pass --day: it is the only simulation there is. Usage: {USAGE}")
        seed = _integer("--seed", options["seed"], low=0, high=2**63 - 1)
        tasks = _integer("--tasks", options["tasks"], low=1, high=simulate.MAX_TASKS)
        day = self.parse_day(options["date"])
        closed = simulate.clinic_closed_on(day)
        if closed:
            raise CommandError(
                f"--date {day.isoformat()} is a {day:%A}, when {closed} is closed and its day "
                "shift is off. Pass --date with a weekday, e.g. --date "
                f"{simulate.next_weekday(day).isoformat()}."
            )
        try:
            sim_day = simulate.build_day(day=day, seed=seed, tasks=tasks)
        except simulate.SimulationSetupError as error:
            raise CommandError(str(error)) from error
        except engine.RuleSetError as error:
            raise CommandError(
                f"The active rule set cannot route the demo's traffic: {error}. Fix it in the "
                "admin, or run `python manage.py demo`."
            ) from error
        started = time.perf_counter()
        results = simulate.simulate_all(sim_day)
        seconds = time.perf_counter() - started
        report = simulate.summary(results)
        if options["json"]:
            self.stdout.write(json.dumps(report, sort_keys=True))
            return
        self.write_table(sim_day, report, seconds)

    def parse_day(self, value: str | None) -> date:
        if value is None:
            today = datetime.now(ZoneInfo(_clinic_zone())).date()
            return simulate.next_weekday(today)
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise CommandError(
                f"--date {value!r} is not a date: write it as YYYY-MM-DD, e.g. --date 2025-03-04."
            ) from None

    def write_table(self, day: simulate.SimDay, report: dict[str, dict], seconds: float) -> None:
        out = self.stdout.write
        out(
            f"Simulated clinic day {day.day:%a %Y-%m-%d}, seed {day.seed}: "
            f"{len(day.tasks)} requests, {len(day.staff)} staff on shift, "
            f"rule set v{day.ruleset.version}. Simulated in {seconds:.2f} s."
        )
        out("")
        for line in table_lines(report):
            out(line)


def table_lines(report: dict[str, dict]) -> list[str]:
    """The report as a Markdown table: measures as rows, strategies as columns."""
    columns = simulate.STRATEGIES
    rows: list[tuple[str, list[str]]] = [
        ("queue age, median (min)", [_minutes(report[s]["queue_age_median_min"]) for s in columns]),
        ("queue age, p90 (min)", [_minutes(report[s]["queue_age_p90_min"]) for s in columns]),
        (
            "urgent (P1) reached within 30 min",
            [
                _share(
                    report[s]["urgent_within_30_min_share"],
                    report[s]["urgent_within_30_min"],
                    report[s]["urgent_tasks"],
                )
                for s in columns
            ],
        ),
        (
            "load imbalance (CV of load share)",
            [_number(report[s]["load_imbalance_cv"]) for s in columns],
        ),
        (
            "tasks that waited while someone qualified was idle",
            [str(report[s]["idle_while_waiting_count"]) for s in columns],
        ),
        ("hand-backs (misrouted, wrong skill)", [str(report[s]["handbacks"]) for s in columns]),
        ("not started the same day", [str(report[s]["carried_over_count"]) for s in columns]),
    ]
    header = ["measure", *(simulate.STRATEGY_LABELS[s] for s in columns)]
    widths = [max(len(header[0]), *(len(r[0]) for r in rows))]
    for i in range(len(columns)):
        widths.append(max(len(header[i + 1]), *(len(r[1][i]) for r in rows)))

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join([first, *rest]) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return [line(header), rule, *(line([name, *cells]) for name, cells in rows)]


def _integer(flag: str, value: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise CommandError(
            f"{flag} {value!r} is not a whole number from {low} to {high}: pass e.g. {flag} "
            f"{max(low, min(high, 400 if flag == '--tasks' else DEFAULT_SEED))}."
        )
    return number


def _clinic_zone() -> str:
    from clinicdesk.demo_traffic import CLINIC_ZONE  # the demo's zone (see build_day)

    return CLINIC_ZONE


def _minutes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _share(value: float | None, reached: int, total: int) -> str:
    if value is None:
        return "n/a (no P1)"
    return f"{value:.0%} ({reached}/{total})"
