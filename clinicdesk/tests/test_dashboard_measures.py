"""Each dashboard measure on hand-built tasks whose answers are worked out by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accounts.models import StaffProfile
from accounts.tests.factories import StaffProfileFactory
from clinicdesk.dashboard import selectors
from clinicdesk.tests import test_dashboard_support as support
from clinicdesk.tests.test_dashboard_support import NOW, START, event
from escalation.models import Escalation, EscalationStep, SlaPolicy
from queues.models import Task

MIN = timedelta(minutes=1)
clinic = support.clinic
pytestmark = pytest.mark.django_db


def _picked(clinic, minutes: int, *, priority: int, queue=None, **fields) -> Task:
    created = NOW - timedelta(days=2)
    return clinic.task(
        queue,
        created=created,
        priority=priority,
        status=Task.Status.RESOLVED,
        first_assigned_at=created + minutes * MIN,
        **fields,
    )


def test_queue_age_median_and_p90_per_priority_count_the_still_waiting(clinic):
    for minutes in (10, 20, 30, 40, 50):
        _picked(clinic, minutes, priority=1)
    # Nobody has had this one for an hour: it counts with the hour it has waited so far.
    clinic.task(created=NOW - 60 * MIN, priority=1)
    # Not counted: waiting for another task, a duplicate, another department, before the period.
    blocker = _picked(clinic, 5, priority=2)
    clinic.task(created=NOW - 600 * MIN, priority=1, blocked_by=blocker)
    clinic.task(created=NOW - 600 * MIN, priority=1, status=Task.Status.DUPLICATE)
    _picked(clinic, 999, priority=1, queue=clinic.release)
    clinic.task(
        created=START - MIN,
        priority=1,
        status=Task.Status.RESOLVED,
        first_assigned_at=START + 500 * MIN,
    )
    # Routine: pushed to a person after 60 minutes, started by them 40 minutes later; and
    # claimed with Next task after 120 minutes (a claim sets both columns).
    pushed = NOW - timedelta(days=3)
    clinic.task(
        created=pushed,
        priority=3,
        status=Task.Status.IN_PROGRESS,
        assignee=clinic.agent,
        first_assigned_at=pushed + 60 * MIN,
        first_claimed_at=pushed + 100 * MIN,
    )
    _picked(clinic, 120, priority=3, first_claimed_at=NOW - timedelta(days=2) + 120 * MIN)

    rows = {row.priority: row for row in selectors.queue_age(clinic.scope())}

    urgent = rows[1]
    assert (urgent.tasks, urgent.waiting) == (6, 1)
    assert urgent.median_minutes == 35.0  # of 10, 20, 30, 40, 50, 60
    assert urgent.p90_minutes == 55.0
    assert urgent.target_minutes == 30
    assert urgent.status == "missed"
    routine = rows[3]
    assert (routine.tasks, routine.median_minutes, routine.p90_minutes) == (2, 90.0, 114.0)
    assert routine.status == "met"
    assert rows[2].tasks == 1 and rows[2].median_minutes == 5.0
    assert rows[2].target_minutes == 120
    assert rows[4].tasks == 0 and rows[4].median_s is None
    assert rows[None].tasks == 9
    assert rows[None].label == "All priorities"


def test_reroute_first_contact_and_escalation_rates(clinic):
    created = NOW - timedelta(days=5)
    tasks = [clinic.task(created=created) for _ in range(6)]
    # Reroutes: one of the period's tasks moved by a person (another department's does not count).
    Task.objects.filter(pk=tasks[0].pk).update(reroute_count=2)
    clinic.task(clinic.release, created=created, reroute_count=1)
    # Resolved at least once: 3 resolved first time, 1 resolved after a reopen, 1 reopened and
    # open again → 3 of 5 resolved at first contact.
    Task.objects.filter(pk__in=[t.pk for t in tasks[:3]]).update(status=Task.Status.RESOLVED)
    Task.objects.filter(pk=tasks[3].pk).update(status=Task.Status.RESOLVED, reopen_count=1)
    Task.objects.filter(pk=tasks[4].pk).update(status=Task.Status.QUEUED, reopen_count=1)
    # Escalations: a supervisor was emailed for one task; the other only got a warning.
    policy = SlaPolicy.objects.create(name="Claims", resolution_minutes=60)
    warn = EscalationStep.objects.create(
        policy=policy, level=1, target="resolution", percent=50, action="mark_at_risk"
    )
    notify = EscalationStep.objects.create(
        policy=policy, level=2, target="resolution", percent=100, action="notify_supervisor"
    )
    for task, step in ((tasks[1], warn), (tasks[1], notify), (tasks[2], warn)):
        Escalation.objects.create(
            task=task, step=step, level=step.level, due_at=created, fired_at=created + MIN
        )

    counts = selectors.period_counts(clinic.scope())
    reroute = counts.reroute
    assert (reroute.part, reroute.whole) == (1, 6)
    assert reroute.met is False  # 16.7% is not below 10%
    fcr = counts.first_contact
    assert (fcr.part, fcr.whole, fcr.percent) == (3, 5, 60.0)
    assert fcr.met is False
    escalation = counts.escalation
    assert (escalation.part, escalation.whole) == (1, 6)


def test_rates_of_an_empty_period_have_no_value(clinic):
    rate = selectors.period_counts(clinic.scope()).first_contact
    assert (rate.part, rate.whole, rate.value, rate.met) == (0, 0, None, None)


def test_sla_attainment_per_policy_counts_only_decided_tasks(clinic):
    # Claims tasks fall under this policy; Statements is not its queue. An inactive policy,
    # tried first, is never chosen.
    claims = SlaPolicy.objects.create(
        name="Claims", order=1, first_claim_minutes=60, resolution_minutes=240
    )
    claims.queues.set([clinic.claims])
    SlaPolicy.objects.create(name="Inactive", order=0, resolution_minutes=5, is_active=False)
    created = NOW - timedelta(hours=10)

    def sla_task(claimed: int | None, resolved: int | None, due_in: int = 60, resolve_in=240):
        clinic.task(
            created=created,
            first_claimed_at=created + claimed * MIN if claimed is not None else None,
            resolved_at=created + resolved * MIN if resolved is not None else None,
            claim_due_at=created + due_in * MIN,
            resolve_due_at=created + resolve_in * MIN,
        )

    sla_task(30, 200)  # claim met, resolution met
    sla_task(90, 300)  # both missed
    sla_task(None, None)  # never claimed, both past due: both missed
    # Claim due in the future (not decided yet), resolution not due yet either.
    sla_task(None, None, due_in=11 * 60, resolve_in=12 * 60)
    # No policy covers Statements.
    clinic.task(clinic.statements, created=created)

    rows = selectors.period_counts(clinic.scope()).sla
    by_name = {row.name: row for row in rows}
    row = by_name["Claims"]
    assert (row.first_claim_minutes, row.resolution_minutes, row.tasks) == (60, 240, 4)
    assert (row.claim_met, row.claim_decided) == (1, 3)
    assert (row.resolve_met, row.resolve_decided) == (1, 3)
    assert by_name["No SLA policy"].tasks == 1
    assert by_name["No SLA policy"].claim_share is None
    assert rows[-1].name == "All tasks" and rows[-1].tasks == 5


def test_demand_by_weekday_hour_in_clinic_time_and_by_type(clinic):
    tuesday_9 = NOW.replace(hour=9, minute=15) - timedelta(days=7)
    for minutes in (0, 10, 35):
        clinic.task(created=tuesday_9 + minutes * MIN)
    clinic.task(clinic.statements, created=tuesday_9 + timedelta(days=1, hours=5))
    clinic.task(clinic.release, created=tuesday_9)  # another department

    counts = selectors.period_counts(clinic.scope())
    heatmap = counts.heatmap
    assert heatmap.cells == {(1, 9): 3, (2, 14): 1}
    assert heatmap.grid[1][9] == 3 and heatmap.peak == 3

    assert [(r.label, r.count, r.share) for r in counts.by_type] == [
        ("Claim denial", 3, 0.75),
        ("Statement question", 1, 0.25),
    ]


def test_holding_time_by_reason_groups_typed_reasons_as_other(clinic):
    payer = "Waiting for the payer's answer"
    first, second, third, elsewhere = (
        clinic.task(created=NOW - timedelta(days=3), status=Task.Status.RESOLVED) for _ in range(4)
    )
    held = NOW - timedelta(days=2)
    event(first, "held", held, reason=payer)
    event(first, "commented", held + 10 * MIN, reason="Called them")
    event(first, "resumed", held + 60 * MIN)
    event(second, "held", held, reason=payer)
    event(second, "resolved", held + 120 * MIN)
    Task.objects.filter(pk=third.pk).update(status=Task.Status.ON_HOLD)
    event(third, "held", NOW - 30 * MIN, reason="Call Mrs Jones back on Friday")
    event(elsewhere, "held", START - 10 * MIN, reason=payer)  # began before the period
    event(elsewhere, "resumed", START + 10 * MIN)

    rows = selectors.holding_by_reason(clinic.scope())

    assert [(r.reason, r.holds, r.ongoing) for r in rows] == [
        (payer, 2, 0),
        (selectors.OTHER_REASON, 1, 1),
    ]
    assert (rows[0].median_s, rows[0].p90_s, rows[0].total_s) == (5400, 6840, 10800)
    assert rows[1].median_s == 1800
    assert "Jones" not in str(rows)


def test_backlog_by_queue_and_age_band(clinic):
    for age in (30 * MIN, 2 * 60 * MIN, timedelta(days=5)):
        clinic.task(created=NOW - age)
    clinic.task(created=NOW - 30 * MIN, status=Task.Status.RESOLVED)
    clinic.task(created=NOW - 20 * MIN, status=Task.Status.ON_HOLD)
    clinic.task(clinic.release, created=NOW - 30 * MIN)

    rows = selectors.backlog_by_queue(clinic.scope())

    assert [(r.queue, r.bands, r.total) for r in rows] == [
        ("Claims", [2, 1, 0, 0, 1], 4),
        ("Statements", [0, 0, 0, 0, 0], 0),
    ]


def test_load_now_and_imbalance_across_each_team(clinic):
    # Billing: Sam 2 of 5 (0.4), Alice 2 of 4 (0.5), Bob 2 of 8 (0.25); Carl is away.
    bob = StaffProfileFactory(
        user__first_name="Bob", user__last_name="Baker", departments=[clinic.billing], capacity=8
    )
    StaffProfileFactory(
        user__first_name="Carl",
        user__last_name="Away",
        departments=[clinic.billing],
        availability=StaffProfile.Availability.AWAY,
        capacity=5,
    )
    StaffProfile.objects.filter(user__in=[clinic.supervisor, clinic.agent, bob.user]).update(
        active_load=2
    )
    StaffProfileFactory(departments=[clinic.records], capacity=5)  # another department

    scope = clinic.scope()
    people = selectors.staff_load(scope)
    assert [(p.name, p.load, p.capacity) for p in people] == [
        ("Alice Agent", 2, 4),
        ("Bob Baker", 2, 8),
        ("Carl Away", 0, 5),
        ("Sam Supervisor", 2, 5),
    ]
    (team,) = selectors.team_balance(scope)
    assert (team.department, team.people, team.load, team.capacity) == ("Billing", 3, 6, 17)
    # Shares of capacity 0.5, 0.25, 0.4: mean 0.3833, population deviation 0.1027.
    assert team.cv == pytest.approx(0.26800, abs=1e-4)


def test_balance_is_zero_when_nobody_holds_anything(clinic):
    (team,) = selectors.team_balance(clinic.scope())
    assert (team.people, team.cv) == (2, 0.0)


def test_load_over_today_is_rebuilt_from_the_timeline(clinic):
    scope = clinic.scope()
    day = scope.day_start
    # Alice held a weight-2 task from 08:00 until she resolved it at 09:30.
    task = clinic.task(
        created=day + timedelta(hours=7),
        status=Task.Status.RESOLVED,
        weight=2,
        updated_at=day + timedelta(hours=9, minutes=30),
    )
    event(task, "assigned", day + timedelta(hours=8), to_user=clinic.agent)
    event(task, "started", day + timedelta(hours=8, minutes=5))
    event(task, "resolved", day + timedelta(hours=9, minutes=30))
    # Sam has held a task since yesterday afternoon and nothing changed it today.
    yesterday = day - timedelta(hours=9)
    held = clinic.task(created=yesterday, status=Task.Status.ASSIGNED, assignee=clinic.supervisor)
    event(held, "claimed", yesterday, to_user=clinic.supervisor)

    people = selectors.staff_load(scope)
    result = selectors.load_over_day(scope, people)

    assert len(result.hours) == 12  # midnight to noon
    loads = {name: values for _, name, values in result.people}
    assert loads["Alice Agent"] == [0.0] * 8 + [2.0, 1.0, 0.0, 0.0]
    assert loads["Sam Supervisor"] == [1.0] * 12
    assert result.team_total()[8] == 3.0
