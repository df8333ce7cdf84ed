"""The dashboard's tables, built once from the measures and used twice: under each chart on
the page and as its CSV export, so that the two always agree."""

from __future__ import annotations

from dataclasses import dataclass

from clinicdesk.dashboard import rule_health, selectors
from clinicdesk.dashboard.selectors import AGE_BANDS, MINUTE, WEEKDAYS

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / MINUTE, 1)


def percent(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 1)


def queue_age_table(rows: list[selectors.QueueAgeRow]) -> Table:
    return Table(
        "queue_age",
        "Queue age by priority (minutes from creation until a person has the task)",
        ["Priority", "Tasks", "Still waiting", "Median", "p90", "Target", "Status"],
        [
            [
                r.label,
                r.tasks,
                r.waiting,
                minutes(r.median_s),
                minutes(r.p90_s),
                f"< {r.target_minutes}" if r.target_minutes else "",
                r.status,
            ]
            for r in rows
        ],
    )


def rates_table(rates: list[selectors.Rate]) -> Table:
    return Table(
        "rates",
        "Reroutes, first-contact resolution and escalations",
        ["Measure", "Tasks counted", "Of which", "Share %", "Target %", "Met"],
        [
            [
                r.label,
                r.whole,
                r.part,
                percent(r.value),
                f"{'>' if r.above else '<'} {percent(r.target):g}",
                {True: "yes", False: "no", None: ""}[r.met],
            ]
            for r in rates
        ],
    )


def sla_table(rows: list[selectors.SlaRow]) -> Table:
    return Table(
        "sla",
        "SLA attainment per policy",
        [
            "Policy",
            "Claim target (min)",
            "Resolution target (min)",
            "Tasks",
            "Claimed in time",
            "Claims decided",
            "Claim %",
            "Resolved in time",
            "Resolutions decided",
            "Resolution %",
        ],
        [
            [
                r.name,
                r.first_claim_minutes,
                r.resolution_minutes,
                r.tasks,
                r.claim_met,
                r.claim_decided,
                percent(r.claim_share),
                r.resolve_met,
                r.resolve_decided,
                percent(r.resolve_share),
            ]
            for r in rows
        ],
    )


def load_table(people: list[selectors.PersonLoad]) -> Table:
    return Table(
        "load",
        "Load per person now (units of work held against capacity)",
        ["Department", "Person", "Availability", "Load", "Capacity", "Used %"],
        [
            [p.department, p.name, p.availability, p.load, p.capacity, percent(p.utilisation)]
            for p in people
        ],
    )


def balance_table(teams: list[selectors.TeamBalance]) -> Table:
    return Table(
        "balance",
        "Balance across each team now (available people)",
        ["Department", "Available people", "Load", "Capacity", "Used %", "Imbalance (CV)"],
        [
            [
                t.department,
                t.people,
                t.load,
                t.capacity,
                percent(t.utilisation),
                None if t.cv is None else round(t.cv, 3),
            ]
            for t in teams
        ],
    )


def day_load_table(day: selectors.DayLoad, time_zone) -> Table:
    hours = [f"{h.astimezone(time_zone):%H}:00" for h in day.hours]
    return Table(
        "day_load",
        "Load over today, per person (average units held in each hour)",
        ["Person", *hours],
        [[name, *values] for _, name, values in day.people],
    )


def backlog_table(rows: list[selectors.BacklogRow]) -> Table:
    return Table(
        "backlog",
        "Open tasks now, by queue and age",
        ["Queue", "Department", *(label for label, _ in AGE_BANDS), "Total"],
        [[r.queue, r.department, *r.bands, r.total] for r in rows],
    )


def heatmap_table(heatmap: selectors.Heatmap) -> Table:
    return Table(
        "demand_heatmap",
        "Tasks received by weekday and hour (clinic time)",
        ["Weekday", *(f"{h:02d}" for h in range(24)), "Total"],
        [[WEEKDAYS[d], *row, sum(row)] for d, row in enumerate(heatmap.grid)],
    )


def demand_type_table(rows: list[selectors.CountRow]) -> Table:
    return Table(
        "demand_types",
        "Tasks received by type",
        ["Task type", "Tasks", "Share %"],
        [[r.label, r.count, percent(r.share)] for r in rows],
    )


def holding_table(rows: list[selectors.HoldRow]) -> Table:
    return Table(
        "holding",
        "Holding time by reason (holds begun in the period, minutes)",
        ["Reason", "Holds", "Still on hold", "Median", "p90", "Total hours"],
        [
            [
                r.reason,
                r.holds,
                r.ongoing,
                minutes(r.median_s),
                minutes(r.p90_s),
                round(r.total_s / 3600, 1),
            ]
            for r in rows
        ],
    )


def rules_table(rules: list[rule_health.RuleHealth]) -> Table:
    return Table(
        "rules",
        "Rule health: tasks each rule decided and how many people corrected",
        [
            "Rule",
            "Kind",
            "Rule set",
            "Tasks decided",
            "Corrected by people",
            "Reroute %",
            "Target %",
            "Where they went",
            "Most common correction",
        ],
        [
            [
                r.name,
                r.kind,
                f"v{r.rule_set_version}" if r.rule_set_version else "",
                r.decided,
                r.corrected,
                percent(r.rate),
                f"< {percent(rule_health.RULE_REROUTE_TARGET):g}",
                "; ".join(f"{where}: {n}" for where, n in r.destinations),
                r.sentence,
            ]
            for r in rules
        ],
    )
