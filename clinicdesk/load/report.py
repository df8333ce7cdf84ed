"""Locust's `<prefix>_stats.csv` as the run's table: per page and endpoint, the requests,
the answer-time percentiles in milliseconds and the errors."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from io import StringIO
from pathlib import Path


@dataclass(frozen=True)
class Row:
    name: str
    requests: int
    errors: int
    per_second: float
    p50: float
    p95: float
    p99: float
    max: float


def read_stats(path: Path) -> list[Row]:
    """The rows of a Locust stats CSV, the aggregate last."""
    return parse_stats(path.read_text()) if path.exists() else []


def parse_stats(text: str) -> list[Row]:
    rows = []
    for record in csv.DictReader(StringIO(text)):
        name = record["Name"] if record["Name"] != "Aggregated" else "All requests"
        rows.append(
            Row(
                name=name,
                requests=int(record["Request Count"]),
                errors=int(record["Failure Count"]),
                per_second=_number(record["Requests/s"]),
                p50=_number(record["50%"]),
                p95=_number(record["95%"]),
                p99=_number(record["99%"]),
                max=_number(record["Max Response Time"]),
            )
        )
    return rows


def steady_rows(steady: dict) -> list[Row]:
    """The same table for the steady part of the run, from the answer times the locustfile
    kept (`extra.json`, "steady": seconds, times per name, errors per name)."""
    seconds = steady.get("seconds") or 0
    times: dict[str, list[float]] = steady.get("times") or {}
    errors: dict[str, int] = steady.get("errors") or {}
    rows = [
        _row(name, values, errors.get(name, 0), seconds) for name, values in sorted(times.items())
    ]
    every = [t for values in times.values() for t in values]
    if every:
        rows.append(_row("All requests", every, sum(errors.values()), seconds))
    return rows


def _row(name: str, values: list[float], errors: int, seconds: float) -> Row:
    ordered = sorted(values)
    return Row(
        name=name,
        requests=len(ordered),
        errors=errors,
        per_second=len(ordered) / seconds if seconds else 0.0,
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def total_errors(rows: list[Row]) -> int:
    return next((r.errors for r in rows if r.name == "All requests"), sum(r.errors for r in rows))


HEADER = ("page / endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")


def format_table(rows: list[Row], *, markdown: bool = False) -> str:
    header = (
        "page / endpoint",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
    )
    body = [
        (
            r.name,
            str(r.requests),
            f"{r.per_second:.2f}",
            f"{r.p50:.0f}",
            f"{r.p95:.0f}",
            f"{r.p99:.0f}",
            f"{r.max:.0f}",
            str(r.errors),
        )
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = []
    for cells in [header, *body]:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        lines.append("  ".join([first, *rest]))
    return "\n".join(lines)


def _number(raw: str) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0  # "N/A" for a request that never completed
