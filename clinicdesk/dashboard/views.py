"""The operations dashboard (`/dashboard/`), rule health (`/dashboard/rules/`) and their CSV
exports.

Who may look: supervisors, managers and compliance reviewers, that is the holders of
`accounts.view_staffprofile` (the role permission that already lets them read the staff
records the load tables show); agents are refused (403), as on the Escalations page. Each
sees the departments owning a queue they may see (`Queue.objects.visible_to`): supervisors
their own, managers and compliance reviewers all. Compliance reviewers may read the
dashboard because it is read-only and holds aggregates only — task counts and times, staff
load, rule names — which is what they audit operations against; nothing here names a
patient or shows a task's text (the one phrase taken from subjects in rule health never
contains a word of a patient's name, and typed hold reasons are grouped as "Other").
"""

from __future__ import annotations

import csv
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from clinicdesk.dashboard import rule_health, selectors, tables
from clinicdesk.dashboard.forms import DashboardFilterForm
from clinicdesk.dashboard.selectors import AGE_BANDS, WEEKDAYS, Scope

PERMISSION = "accounts.view_staffprofile"


def _scope(request) -> tuple[DashboardFilterForm, Scope, str]:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("Only supervisors, managers and compliance see the dashboard.")
    now = timezone.now()
    departments = selectors.dashboard_departments(request.user)
    form = DashboardFilterForm(request.GET or None, departments=departments, now=now)
    period = form.get_period()
    chosen = form.cleaned_data.get("department") if form.is_valid() else None
    department_ids = [chosen.pk] if chosen else [d.pk for d in departments]
    scope = Scope(
        queue_ids=selectors.scope_queue_ids(request.user, department_ids),
        department_ids=tuple(department_ids),
        start=period.start,
        end=period.end,
        now=now,
    )
    return form, scope, period.label


def _measures(scope: Scope) -> dict:
    people = selectors.staff_load(scope)
    counts = selectors.period_counts(scope)
    return {
        "queue_age": selectors.queue_age(scope),
        "rates": counts.rates,
        "sla": counts.sla,
        "people": people,
        "teams": selectors.team_balance(scope),
        "day": selectors.load_over_day(scope, people),
        "backlog": selectors.backlog_by_queue(scope),
        "heatmap": counts.heatmap,
        "types": counts.by_type,
        "holding": selectors.holding_by_reason(scope),
    }


def _tables(m: dict) -> dict[str, tables.Table]:
    zone = ZoneInfo(settings.TIME_ZONE)
    built = [
        tables.queue_age_table(m["queue_age"]),
        tables.rates_table(m["rates"]),
        tables.sla_table(m["sla"]),
        tables.load_table(m["people"]),
        tables.balance_table(m["teams"]),
        tables.day_load_table(m["day"], zone),
        tables.backlog_table(m["backlog"]),
        tables.heatmap_table(m["heatmap"]),
        tables.demand_type_table(m["types"]),
        tables.holding_table(m["holding"]),
    ]
    return {t.name: t for t in built}


def _charts(m: dict) -> dict:
    """What `static/js/dashboard.js` draws: labels and series, numbers only."""
    zone = ZoneInfo(settings.TIME_ZONE)
    ages = [r for r in m["queue_age"] if r.priority]
    return {
        "queue_age": {
            "labels": [r.label for r in ages],
            "series": {
                "Median (min)": [tables.minutes(r.median_s) for r in ages],
                "p90 (min)": [tables.minutes(r.p90_s) for r in ages],
            },
            "target": [r.target_minutes for r in ages],
        },
        "sla": {
            "labels": [r.name for r in m["sla"]],
            "series": {
                "First claim in time %": [tables.percent(r.claim_share) for r in m["sla"]],
                "Resolved in time %": [tables.percent(r.resolve_share) for r in m["sla"]],
            },
        },
        "load": {
            "labels": [p.name for p in m["people"]],
            "series": {
                "Load": [p.load for p in m["people"]],
                "Free capacity": [max(p.capacity - p.load, 0) for p in m["people"]],
            },
            "stacked": True,
        },
        "day_load": {
            "labels": [f"{h.astimezone(zone):%H}:00" for h in m["day"].hours],
            "series": {name: values for _, name, values in m["day"].people},
        },
        "backlog": {
            "labels": [r.queue for r in m["backlog"]],
            "series": {
                label: [r.bands[n] for r in m["backlog"]] for n, (label, _) in enumerate(AGE_BANDS)
            },
            "stacked": True,
        },
        "demand_types": {
            "labels": [r.label for r in m["types"]],
            "series": {"Tasks": [r.count for r in m["types"]]},
        },
        "holding": {
            "labels": [r.reason for r in m["holding"]],
            "series": {
                "Median (min)": [tables.minutes(r.median_s) for r in m["holding"]],
                "p90 (min)": [tables.minutes(r.p90_s) for r in m["holding"]],
            },
        },
    }


def _heat_cells(heatmap: selectors.Heatmap) -> list[tuple[str, list[tuple[int, int]]]]:
    """Per weekday, each hour's count with a shade from 0 (none) to 5 (the peak)."""
    peak = heatmap.peak or 1
    return [
        (WEEKDAYS[day], [(n, 0 if n == 0 else 1 + (4 * n) // peak) for n in row])
        for day, row in enumerate(heatmap.grid)
    ]


@login_required
@require_GET
def dashboard(request):
    form, scope, period_label = _scope(request)
    measures = _measures(scope)
    context = {
        "form": form,
        "period_label": period_label,
        "scope": scope,
        "m": measures,
        "tables": _tables(measures),
        "charts": _charts(measures),
        "heat_cells": _heat_cells(measures["heatmap"]),
        "query": request.GET.urlencode(),
    }
    return render(request, "dashboard/dashboard.html", context)


@login_required
@require_GET
def rules(request):
    form, scope, period_label = _scope(request)
    health = rule_health.rule_health(scope)
    table = tables.rules_table(health)
    charted = health[:30]
    context = {
        "form": form,
        "period_label": period_label,
        "rules": health,
        "flagged": [r for r in health if r.flagged],
        "table": table,
        "target": rule_health.RULE_REROUTE_TARGET,
        "charts": {
            "rules": {
                "labels": [r.name for r in charted],
                "series": {"Reroute %": [tables.percent(r.rate) for r in charted]},
                "target_line": tables.percent(rule_health.RULE_REROUTE_TARGET),
                "horizontal": True,
            }
        },
        "query": request.GET.urlencode(),
    }
    return render(request, "dashboard/rules.html", context)


EXPORTS = {
    "queue_age": lambda s: tables.queue_age_table(selectors.queue_age(s)),
    "rates": lambda s: tables.rates_table(selectors.period_counts(s).rates),
    "sla": lambda s: tables.sla_table(selectors.period_counts(s).sla),
    "load": lambda s: tables.load_table(selectors.staff_load(s)),
    "balance": lambda s: tables.balance_table(selectors.team_balance(s)),
    "day_load": lambda s: tables.day_load_table(
        selectors.load_over_day(s, selectors.staff_load(s)), ZoneInfo(settings.TIME_ZONE)
    ),
    "backlog": lambda s: tables.backlog_table(selectors.backlog_by_queue(s)),
    "demand_heatmap": lambda s: tables.heatmap_table(selectors.period_counts(s).heatmap),
    "demand_types": lambda s: tables.demand_type_table(selectors.period_counts(s).by_type),
    "holding": lambda s: tables.holding_table(selectors.holding_by_reason(s)),
    "rules": lambda s: tables.rules_table(rule_health.rule_health(s)),
}


def _csv_cell(value):
    # A spreadsheet runs a cell that starts with one of these as a formula.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


@login_required
@require_GET
def export(request, table: str):
    """One table of the dashboard (or rule health) as CSV, for the same filters."""
    if table not in EXPORTS:
        raise Http404("No such table.")
    _, scope, _ = _scope(request)
    built = EXPORTS[table](scope)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime(scope.now).strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="dashboard-{table}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(built.headers)
    for row in built.rows:
        writer.writerow([_csv_cell(cell) for cell in row])
    return response
