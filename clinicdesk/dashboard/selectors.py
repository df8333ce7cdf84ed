"""The operations dashboard's reads: one aggregate query per measure, or per family of
measures that count the same rows.

Every number is computed by PostgreSQL (`percentile_cont`, `FILTER`, grouping); Python only
names and arranges the few rows that come back, so the cost follows the size of the period,
not of the table, and never a loop over tasks.

Definitions (the dashboard's help text repeats them):

- **The period's tasks**: tasks created in [start, end) that sit now in a queue of the scope,
  duplicates left out (they were closed at intake, never waited nor worked). A task moved to
  another department's queue counts for the department that has it now.
- **Queue age**: from creation until a person first had the task: `first_assigned_at`, set
  when routing pushes it to someone (push queues) or when someone claims it with Next task
  (pull queues: a claim sets both columns), or when a supervisor assigns it; the earlier of
  `first_assigned_at` and `first_claimed_at`, so that rows written by other paths count too.
  A task nobody has had yet counts with the time it has waited so far (a stuck queue cannot
  look fast); one that waits for another task to be resolved first (`blocked_by`) is not
  waiting for a person and is left out until someone has it.
- **Reroute rate**: share of the period's tasks that a person moved after routing decided:
  rerouted to another queue or reassigned to someone else (`reroute_count > 0`). Moves by the
  escalation sweep do not count.
- **First-contact resolution**: of the period's tasks resolved at least once (resolved now,
  or reopened since), the share resolved and never reopened.
- **Escalation rate**: share of the period's tasks for which an escalation step that involves
  a supervisor fired: email the queue's supervisors, move to an escalation queue, or take it
  from its holder and offer it to someone else (`SUPERVISOR_ACTIONS`). Warnings, priority
  raises and outside notifications are automatic and do not count.
- **SLA attainment**, per policy (the active policy that matches the task's type, priority
  and queue now: `escalation.services.policy_for`, the sweep's own rule): first claim met when
  `first_claimed_at` (a pull claim, or the start of a pushed task: the escalation sweep's own
  clock) is at or before `claim_due_at`; resolution met when `resolved_at` is at or before
  `resolve_due_at` (the due times stored on each task, paused while on hold). Only decided
  tasks count: met, or past due (claimed late, or still unclaimed after the due time); tasks
  still within their time are left out.

The counts over the period's tasks (the three rates, SLA attainment, demand by type and by
weekday and hour) come from one pass over them (`period_counts`); queue age is a second pass.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection

from accounts.models import Department
from escalation.models import EscalationStep
from escalation.selectors import active_policies
from escalation.services import policy_for
from queues.forms import HOLD_REASONS
from queues.models import Priority, Queue, Task, TaskType

MINUTE = 60
HOUR = 60 * MINUTE

# Clinic targets (issue 8). P2 ("high") is not named by the clinic: two hours, between the
# urgent half hour and the routine four hours, the same step the bulk loader and the demo's
# claim-due times use.
QUEUE_AGE_TARGET_MINUTES = {1: 30, 2: 120, 3: 240, 4: 240}
REROUTE_TARGET = 0.10  # below
FIRST_CONTACT_TARGET = 0.75  # above
ESCALATION_TARGET = 0.08  # below

SUPERVISOR_ACTIONS = (
    EscalationStep.Action.NOTIFY_SUPERVISOR,
    EscalationStep.Action.MOVE_TO_ESCALATION_QUEUE,
    EscalationStep.Action.REASSIGN,
)

# Age bands of the backlog: (label, upper bound in seconds; None: no bound).
AGE_BANDS = (
    ("< 1 h", HOUR),
    ("1-4 h", 4 * HOUR),
    ("4-24 h", 24 * HOUR),
    ("1-3 days", 72 * HOUR),
    ("> 3 days", None),
)
OTHER_REASON = "Other (typed by hand)"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# The timeline events after which a task is in someone's load (their `to_user`), and those
# after which it is in nobody's. Other kinds (started, commented, …) change nothing.
LOADING_KINDS = ("assigned", "claimed", "reassigned", "resumed")
UNLOADING_KINDS = ("held", "resolved", "released", "rerouted", "reopened", "reclassified")
# A hold ends when the task resumes, is resolved from hold, or is moved to another queue.
HOLD_ENDS = ("resumed", "resolved", "rerouted")


@dataclass(frozen=True)
class Scope:
    """What the dashboard counts: the queues (and departments) a person may see, and a
    period. `now` is passed in, so that a page and its CSV export agree."""

    queue_ids: tuple[int, ...]
    department_ids: tuple[int, ...]
    start: datetime
    end: datetime
    now: datetime
    time_zone: str = field(default_factory=lambda: settings.TIME_ZONE)

    @property
    def params(self) -> dict:
        return {
            "queue_ids": list(self.queue_ids),
            "department_ids": list(self.department_ids),
            "start": self.start,
            "end": self.end,
            "now": self.now,
            "tz": self.time_zone,
        }

    @property
    def day_start(self) -> datetime:
        """Midnight of today in the clinic's time zone."""
        local = self.now.astimezone(ZoneInfo(self.time_zone))
        return local.replace(hour=0, minute=0, second=0, microsecond=0)


def dashboard_departments(user):
    """Departments the person may watch: those owning a queue they may see (supervisors:
    their own; managers and compliance reviewers: every department)."""
    return (
        Department.objects.filter(queues__in=Queue.objects.visible_to(user).values("id"))
        .distinct()
        .order_by("name")
    )


def scope_queue_ids(user, department_ids: list[int]) -> tuple[int, ...]:
    """The queues the person may see, of those departments."""
    return tuple(
        Queue.objects.visible_to(user)
        .filter(department_id__in=department_ids)
        .order_by("id")
        .values_list("id", flat=True)
    )


def fetch_rows(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- the period's tasks ---------------------------------------------------------------------

PERIOD_TASKS = """
    SELECT * FROM queues_task
     WHERE created_at >= %(start)s AND created_at < %(end)s
       AND queue_id = ANY(%(queue_ids)s) AND status <> 'duplicate'
"""


@dataclass(frozen=True)
class Rate:
    """A share of tasks against a target; `above` when the target is a minimum."""

    label: str
    part: int
    whole: int
    target: float
    above: bool = False

    @property
    def value(self) -> float | None:
        return share(self.part, self.whole)

    @property
    def percent(self) -> float | None:
        return None if self.value is None else round(self.value * 100, 1)

    @property
    def target_percent(self) -> float:
        return round(self.target * 100, 1)

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.above else self.value < self.target


@dataclass(frozen=True)
class QueueAgeRow:
    priority: int | None  # None: every priority
    tasks: int
    waiting: int
    median_s: float | None
    p90_s: float | None

    @property
    def label(self) -> str:
        return Priority(self.priority).label if self.priority else "All priorities"

    @property
    def median_minutes(self) -> float | None:
        return None if self.median_s is None else round(self.median_s / MINUTE, 1)

    @property
    def p90_minutes(self) -> float | None:
        return None if self.p90_s is None else round(self.p90_s / MINUTE, 1)

    @property
    def target_minutes(self) -> int | None:
        return QUEUE_AGE_TARGET_MINUTES.get(self.priority) if self.priority else None

    @property
    def status(self) -> str:
        """met (9 in 10 within the target), partly (the median within it), missed, or ''."""
        target = self.target_minutes
        if target is None or self.median_s is None:
            return ""
        if self.p90_s is not None and self.p90_s < target * MINUTE:
            return "met"
        return "partly" if self.median_s < target * MINUTE else "missed"


QUEUE_AGE_SQL = f"""
SELECT priority, count(*), count(*) FILTER (WHERE picked_at IS NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY waited),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY waited),
       GROUPING(priority)
  FROM (SELECT priority, picked_at,
               extract(epoch FROM coalesce(picked_at, %(now)s) - created_at) AS waited
          FROM (SELECT priority, created_at, blocked_by_id,
                       least(first_assigned_at, first_claimed_at) AS picked_at
                  FROM ({PERIOD_TASKS}) AS t) AS t
         WHERE picked_at IS NOT NULL OR blocked_by_id IS NULL) AS t
 GROUP BY ROLLUP (priority)
 ORDER BY GROUPING(priority), priority
"""


def queue_age(scope: Scope) -> list[QueueAgeRow]:
    """Median and p90 queue age per priority, then over every priority."""
    rows = fetch_rows(QUEUE_AGE_SQL, scope.params)
    by_priority = {
        (None if rolled else priority): QueueAgeRow(
            None if rolled else priority, tasks, waiting, median, p90
        )
        for priority, tasks, waiting, median, p90, rolled in rows
    }
    ordered = [by_priority.get(p, QueueAgeRow(p, 0, 0, None, None)) for p in (1, 2, 3, 4)]
    return [*ordered, by_priority.get(None, QueueAgeRow(None, 0, 0, None, None))]


@dataclass(frozen=True)
class SlaRow:
    policy_id: int | None
    name: str
    first_claim_minutes: int | None
    resolution_minutes: int | None
    tasks: int
    claim_met: int
    claim_decided: int
    resolve_met: int
    resolve_decided: int

    @property
    def claim_share(self) -> float | None:
        return share(self.claim_met, self.claim_decided)

    @property
    def resolve_share(self) -> float | None:
        return share(self.resolve_met, self.resolve_decided)


# --- demand ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heatmap:
    """Tasks received per weekday (0 = Monday) and hour of the clinic's day."""

    cells: dict[tuple[int, int], int]

    @property
    def grid(self) -> list[list[int]]:
        return [[self.cells.get((day, hour), 0) for hour in range(24)] for day in range(7)]

    @property
    def peak(self) -> int:
        return max(self.cells.values(), default=0)


@dataclass(frozen=True)
class CountRow:
    key: int | None
    label: str
    count: int
    share: float | None = None


# One pass over the period's tasks, grouped by type, priority, queue and hour (a few
# thousand groups), then rolled up four ways: by type (demand by type), by weekday and hour of
# the clinic's clock (the heat map: the hours are those of UTC, converted once per group,
# exact for whole-hour time zones), by type, priority and queue (which SLA policy applies)
# and in total (the rates).
PERIOD_COUNTS_SQL = f"""
WITH g AS (
    SELECT task_type_id, priority, queue_id, date_trunc('hour', created_at) AS hour,
           count(*) AS tasks,
           count(*) FILTER (WHERE reroute_count > 0) AS rerouted,
           count(*) FILTER (WHERE status = 'resolved' AND reopen_count = 0) AS first_contact,
           count(*) FILTER (WHERE status = 'resolved' OR reopen_count > 0) AS resolved,
           count(*) FILTER (WHERE id IN (
               SELECT e.task_id FROM escalation_escalation e
                 JOIN escalation_escalationstep s ON s.id = e.step_id
                WHERE s.action = ANY(%(actions)s) AND e.fired_at >= %(start)s)) AS escalated,
           count(*) FILTER (WHERE first_claimed_at <= claim_due_at) AS claim_met,
           count(*) FILTER (WHERE claim_due_at IS NOT NULL
                              AND (first_claimed_at IS NOT NULL OR claim_due_at <= %(now)s))
               AS claim_decided,
           count(*) FILTER (WHERE resolved_at <= resolve_due_at) AS resolve_met,
           count(*) FILTER (WHERE resolve_due_at IS NOT NULL
                              AND (resolved_at IS NOT NULL OR resolve_due_at <= %(now)s))
               AS resolve_decided
      FROM ({PERIOD_TASKS}) t
     GROUP BY 1, 2, 3, 4
), local AS (
    SELECT g.*, extract(isodow FROM hour AT TIME ZONE %(tz)s)::int - 1 AS weekday,
           extract(hour FROM hour AT TIME ZONE %(tz)s)::int AS clock_hour
      FROM g
)
SELECT GROUPING(task_type_id, priority, queue_id, weekday, clock_hour),
       task_type_id, priority, queue_id, weekday, clock_hour,
       {
    ", ".join(
        f"coalesce(sum({c}), 0)::int"
        for c in (
            "tasks",
            "rerouted",
            "first_contact",
            "resolved",
            "escalated",
            "claim_met",
            "claim_decided",
            "resolve_met",
            "resolve_decided",
        )
    )
}
  FROM local
 GROUP BY GROUPING SETS ((task_type_id), (weekday, clock_hour),
                        (task_type_id, priority, queue_id), ())
"""
# GROUPING(...) of each set: one bit per column rolled up, the first column the highest.
BY_TYPE, BY_HOUR, BY_POLICY_KEY, TOTAL = 0b01111, 0b11100, 0b00011, 0b11111


@dataclass(frozen=True)
class PeriodCounts:
    """The measures that are counts over the period's tasks, from one scan of them."""

    reroute: Rate
    first_contact: Rate
    escalation: Rate
    heatmap: Heatmap
    by_type: list[CountRow]
    sla: list[SlaRow]

    @property
    def rates(self) -> list[Rate]:
        return [self.reroute, self.first_contact, self.escalation]


def period_counts(scope: Scope) -> PeriodCounts:
    """Reroute rate, first-contact resolution, escalation rate, demand by weekday and hour,
    demand by type and SLA attainment: all counts of the same tasks, so one scan of them
    serves the six."""
    rows = fetch_rows(
        PERIOD_COUNTS_SQL, {**scope.params, "actions": [str(a) for a in SUPERVISOR_ACTIONS]}
    )
    totals = next((r[6:] for r in rows if r[0] == TOTAL), (0,) * 9)
    tasks, rerouted, first_contact, resolved, escalated = totals[:5]
    types = sorted(
        ((r[1], r[6]) for r in rows if r[0] == BY_TYPE), key=lambda r: (-r[1], r[0] or 0)
    )
    names = dict(
        TaskType.objects.filter(pk__in=[t for t, _ in types if t]).values_list("id", "name")
    )
    return PeriodCounts(
        reroute=Rate("Reroute rate", rerouted, tasks, REROUTE_TARGET),
        first_contact=Rate(
            "First-contact resolution", first_contact, resolved, FIRST_CONTACT_TARGET, above=True
        ),
        escalation=Rate("Escalation rate", escalated, tasks, ESCALATION_TARGET),
        heatmap=Heatmap({(r[4], r[5]): r[6] for r in rows if r[0] == BY_HOUR}),
        by_type=[
            CountRow(type_id, names.get(type_id, "Not classified"), n, share(n, tasks))
            for type_id, n in types
        ],
        sla=_sla_rows([r for r in rows if r[0] == BY_POLICY_KEY], totals),
    )


def _sla_rows(groups: list[tuple], totals: tuple) -> list[SlaRow]:
    """SLA attainment per policy: each (type, priority, queue) group of tasks goes to the
    policy that matches it now (`escalation.services.policy_for`, the sweep's own rule; the
    due times counted are those stored on each task), then all tasks together."""
    policies = active_policies()
    sums: dict[int | None, list[int]] = defaultdict(lambda: [0] * 5)
    for _, type_id, priority, queue_id, _, _, n, *rest in groups:
        probe = Task(task_type_id=type_id, priority=priority, queue_id=queue_id)
        policy = policy_for(probe, policies)
        counted = sums[policy.pk if policy else None]
        for i, value in enumerate((n, *rest[4:])):
            counted[i] += value
    rows = [
        SlaRow(p.pk, p.name, p.first_claim_minutes, p.resolution_minutes, *sums[p.pk])
        for p in policies
        if p.pk in sums
    ]
    if None in sums:
        rows.append(SlaRow(None, "No SLA policy", None, None, *sums[None]))
    rows.append(SlaRow(None, "All tasks", None, None, totals[0], *totals[5:]))
    return rows


# --- holding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldRow:
    reason: str
    holds: int
    ongoing: int
    median_s: float | None
    p90_s: float | None
    total_s: float


HOLDING_SQL = """
SELECT CASE WHEN h.reason = ANY(%(reasons)s) THEN h.reason ELSE '' END AS reason,
       count(*), count(*) FILTER (WHERE ended.at IS NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY held.seconds),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY held.seconds),
       sum(held.seconds)
  FROM queues_taskevent h
  JOIN queues_task t ON t.id = h.task_id
  LEFT JOIN LATERAL (
       SELECT e.created_at AS at FROM queues_taskevent e
        WHERE e.task_id = h.task_id AND (e.created_at, e.id) > (h.created_at, h.id)
          AND e.kind = ANY(%(ends)s)
        ORDER BY e.created_at, e.id LIMIT 1) AS ended ON true
 CROSS JOIN LATERAL (
       SELECT extract(epoch FROM least(coalesce(ended.at, %(now)s), %(now)s) - h.created_at)
              AS seconds) AS held
 WHERE h.kind = 'held' AND h.created_at >= %(start)s AND h.created_at < %(end)s
   AND t.queue_id = ANY(%(queue_ids)s)
 GROUP BY 1
 ORDER BY 6 DESC, 1
"""


def holding_by_reason(scope: Scope) -> list[HoldRow]:
    """Holds that began in the period, by reason: how long tasks stood still, until they
    resumed, were resolved from hold or moved (a hold still running counts until now).
    Reasons typed by hand are grouped as one, so free text (which may name a patient)
    never reaches the dashboard."""
    rows = fetch_rows(
        HOLDING_SQL, {**scope.params, "reasons": list(HOLD_REASONS), "ends": list(HOLD_ENDS)}
    )
    return [
        HoldRow(reason or OTHER_REASON, holds, ongoing, median, p90, total or 0.0)
        for reason, holds, ongoing, median, p90, total in rows
    ]


# --- backlog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacklogRow:
    queue_id: int
    queue: str
    department: str
    bands: list[int]

    @property
    def total(self) -> int:
        return sum(self.bands)


def _band_case() -> str:
    parts = [
        f"WHEN created_at > %(now)s - interval '{bound} seconds' THEN {n}"
        for n, (_, bound) in enumerate(AGE_BANDS)
        if bound is not None
    ]
    return f"CASE {' '.join(parts)} ELSE {len(AGE_BANDS) - 1} END"


BACKLOG_SQL = f"""
SELECT queue_id, {_band_case()}, count(*)
  FROM queues_task
 WHERE status IN ('new', 'queued', 'assigned', 'in_progress', 'on_hold')
   AND queue_id = ANY(%(queue_ids)s)
 GROUP BY 1, 2
"""


def backlog_by_queue(scope: Scope) -> list[BacklogRow]:
    """Open tasks now, per queue and age band (every queue of the scope, empty ones too)."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0] * len(AGE_BANDS))
    for queue_id, band, n in fetch_rows(BACKLOG_SQL, scope.params):
        counts[queue_id][band] = n
    queues = (
        Queue.objects.filter(pk__in=scope.queue_ids, is_active=True)
        .select_related("department")
        .order_by("department__name", "name")
    )
    rows = [
        BacklogRow(q.pk, q.name, q.department.name, counts.get(q.pk, [0] * len(AGE_BANDS)))
        for q in queues
    ]
    return sorted(rows, key=lambda r: (-r.total, r.department, r.queue))


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonLoad:
    department_id: int
    department: str
    user_id: int
    name: str
    availability: str
    capacity: int
    load: int

    @property
    def utilisation(self) -> float | None:
        return share(self.load, self.capacity)


STAFF_LOAD_SQL = """
SELECT d.id, d.name, u.id,
       coalesce(nullif(trim(u.first_name || ' ' || u.last_name), ''), u.username),
       sp.availability, sp.capacity, sp.active_load
  FROM accounts_staffprofile sp
  JOIN auth_user u ON u.id = sp.user_id AND u.is_active
  JOIN auth_user_groups ug ON ug.user_id = u.id
  JOIN accounts_department d ON d.group_id = ug.group_id
 WHERE d.id = ANY(%(department_ids)s)
 ORDER BY d.name, 4, u.id
"""


def staff_load(scope: Scope) -> list[PersonLoad]:
    """Each member of the departments: units of work held now against their capacity."""
    return [PersonLoad(*row) for row in fetch_rows(STAFF_LOAD_SQL, scope.params)]


@dataclass(frozen=True)
class TeamBalance:
    department_id: int
    department: str
    people: int  # available members with a capacity
    load: int
    capacity: int
    cv: float | None

    @property
    def utilisation(self) -> float | None:
        return share(self.load, self.capacity)


TEAM_BALANCE_SQL = """
SELECT d.id, d.name, count(sp.user_id), coalesce(sum(sp.active_load), 0),
       coalesce(sum(sp.capacity), 0),
       stddev_pop(sp.active_load::float8 / sp.capacity)
           / nullif(avg(sp.active_load::float8 / sp.capacity), 0)
  FROM accounts_department d
  LEFT JOIN (auth_user_groups ug
        JOIN auth_user u ON u.id = ug.user_id AND u.is_active
        JOIN accounts_staffprofile sp ON sp.user_id = u.id
             AND sp.availability = 'available' AND sp.capacity > 0)
    ON ug.group_id = d.group_id
 WHERE d.id = ANY(%(department_ids)s)
 GROUP BY d.id, d.name
 ORDER BY d.name
"""


def team_balance(scope: Scope) -> list[TeamBalance]:
    """Per department, how evenly its available people are loaded: the coefficient of
    variation (standard deviation over mean) of each person's load as a share of their own
    capacity, which is their share of the team's load over their share of its capacity.
    0 is perfectly even; 0 too when nobody holds anything; no value with nobody available."""
    rows = fetch_rows(TEAM_BALANCE_SQL, scope.params)
    return [
        TeamBalance(d_id, name, people, load, capacity, 0.0 if people and cv is None else cv)
        for d_id, name, people, load, capacity, cv in rows
    ]


@dataclass(frozen=True)
class DayLoad:
    """Average units held per hour of today, per person (reconstructed from the timeline)."""

    hours: list[datetime]
    people: list[tuple[int, str, list[float]]]  # (user id, name, load per hour)

    def team_total(self) -> list[float]:
        return [round(sum(p[2][i] for p in self.people), 2) for i in range(len(self.hours))]


# A task is in someone's load from the event that gave it to them (assigned, claimed,
# reassigned, resumed to its holder: the event's `to_user`) until the next event that changes
# who holds it. The tasks looked at are those changed today (every change raises
# `updated_at`, indexed) and those loaded now; their holder events come through the
# timeline index. Each hour's figure is the time-weighted average of units held.
DAY_LOAD_SQL = f"""
WITH scope AS (
    SELECT id, weight FROM queues_task WHERE updated_at >= %(day_start)s
    UNION
    SELECT id, weight FROM queues_task
     WHERE status IN ('assigned', 'in_progress') AND assignee_id = ANY(%(staff)s)
), changes AS (
    SELECT e.task_id, s.weight, e.created_at AS since,
           CASE WHEN e.kind IN {LOADING_KINDS} THEN e.to_user_id END AS holder,
           lead(e.created_at, 1, %(now)s) OVER (
               PARTITION BY e.task_id ORDER BY e.created_at, e.id) AS until
      FROM scope s JOIN queues_taskevent e ON e.task_id = s.id
     WHERE e.kind IN {LOADING_KINDS + UNLOADING_KINDS}
), hours AS (
    SELECT h AS hour_start, least(h + interval '1 hour', %(now)s) AS hour_end
      FROM generate_series(%(day_start)s::timestamptz, %(now)s::timestamptz - interval '1 second',
                           interval '1 hour') AS h
)
SELECT c.holder, h.hour_start,
       sum(c.weight * extract(epoch FROM least(c.until, h.hour_end)
                                         - greatest(c.since, h.hour_start)))
         / extract(epoch FROM h.hour_end - h.hour_start)
  FROM changes c JOIN hours h ON c.since < h.hour_end AND c.until > h.hour_start
 WHERE c.holder = ANY(%(staff)s)
 GROUP BY c.holder, h.hour_start, h.hour_end
"""


def load_over_day(scope: Scope, people: list[PersonLoad]) -> DayLoad:
    day_start, now = scope.day_start, scope.now
    hours = []
    moment = day_start.astimezone(UTC)  # absolute hours, also across a change of clock
    while moment < now:
        hours.append(moment)
        moment += timedelta(hours=1)
    names = {p.user_id: p.name for p in people}
    staff = sorted(names)
    values: dict[int, list[float]] = {user_id: [0.0] * len(hours) for user_id in staff}
    if staff and hours:
        index = {hour: n for n, hour in enumerate(hours)}
        for holder, hour_start, average in fetch_rows(
            DAY_LOAD_SQL, {**scope.params, "day_start": day_start, "staff": staff}
        ):
            values[holder][index[hour_start]] = round(float(average), 2)
    people_rows = sorted(
        ((user_id, names[user_id], values[user_id]) for user_id in staff), key=lambda r: r[1]
    )
    return DayLoad(hours, people_rows)
