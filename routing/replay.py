"""Replay: what a rule set would have decided for past (or generated) traffic, side by side
with what happened. The evidence a manager reads before asking for a draft to go live, and
that the approving manager reads before approving it.

Reads, then runs the pure engine; writes nothing but the `ReplayRun` that keeps the report.

1. **Traffic.** The tasks created in a period, in arrival order, with the facts routing saw:
   channel, subject, body, request type, source system, site, patient key, urgency hint and
   the tags they arrived with (the task's tags without those its classification rules added),
   and their arrival time (`received_at`, else `created_at`: what the batch loader and intake
   route at). Duplicates and tasks never routed are counted, not replayed. A workflow
   follow-up keeps the type its workflow gave it: only the routing rules run for it, as live.
   Or a generated clinic morning (`clinicdesk.demo_traffic.generate_morning`), whose items
   carry where a person would put them.
2. **Decisions.** `engine.decide` for every task with the draft, keyed by task id as live (so
   a rule in partial rollout samples the same tasks it would live), against the baseline:
   what was recorded when the task was routed (its `routed` event), or the active rule set
   replayed the same way (always, for a generated day).
3. **Truth.** What people finally decided: a task a person rerouted or reclassified counts
   its last such queue (and its type then) as right; a task nobody corrected counts its
   routing as right. A generated item counts its expected queue and type.
4. **Load and queue age, simulated** (the approximation, stated on the report): the staff,
   skills and queue memberships of now, everyone available during their own shift hours
   (today's availability switch is ignored), loads starting from empty. Tasks arrive in
   order; `engine.choose_assignee` pushes each to the best person with room, as live (a
   pull-only queue is treated as claimed by its people as soon as they have room). A task
   holds its units for the median handling time of its type (resolution minus first claim,
   over the 30 days before the period ends; 20 minutes where there is none), then frees
   them; freed capacity takes the oldest waiting task of that person's queues first. Queue
   age is arrival to assignment. Queues with waiting work are looked at again every 15
   minutes (shift starts); a task still waiting 24 hours after the last arrival counts with
   its age then. Patient continuity is not modelled. The same model runs for the baseline
   and the draft, so the difference between them is the rules' doing.

Deterministic: the same data and parameters give the same report.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import time as _time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection

from queues.models import Queue
from routing import engine, selectors
from routing.models import ClassificationRule, ReplayRun, RuleSet

MAX_TASKS = 50_000
DEFAULT_HANDLING_MINUTES = 20.0
HANDLING_LOOKBACK = timedelta(days=30)
TICK = timedelta(minutes=15)
HORIZON = timedelta(hours=24)
EXAMPLES = 5
DRAIN_TRIES = 5
_NOBODY = engine.CandidatePool(())
RECORDED, ACTIVE = "recorded", "active"


class ReplayError(ValueError):
    """The replay cannot run as asked (too many tasks, no active set to compare with)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    queue_id: int
    task_type: str  # "" when it needs review without an agreed type
    priority: int
    required_skill: str = ""
    min_level: int = 0
    needs_review: bool = False


@dataclass(frozen=True, slots=True)
class ReplayItem:
    number: int  # the task id (a generated item's number)
    at: datetime
    key: str  # what rollout buckets hash: the task id, as live
    channel: str
    subject: str
    body: str
    request_type: str = ""
    source_system: str = ""
    site_id: int | None = None
    patient_key: str = ""
    urgency_hint: int | None = None
    tags: tuple[str, ...] = ()
    follow_up_type: str = ""  # a workflow follow-up: its type is given, only routing runs
    recorded: Outcome | None = None
    truth_queue_id: int | None = None
    truth_type: str | None = None
    corrected: bool = False  # a person rerouted or reclassified it


@dataclass(frozen=True)
class Traffic:
    items: list[ReplayItem]
    source: dict[str, Any]
    skipped: int = 0  # duplicates and tasks never routed


# --- loading traffic -------------------------------------------------------------------------

# A task's events are read through its timeline index. The kind test is written so that no
# index on the kind can serve it: right after a large batch, before autovacuum's ANALYZE, the
# planner otherwise ANDs the index of every routed event into each of the 10,000 lookups
# (5 s instead of 0.2 s for 10,000 tasks).
PERIOD_SQL = """
SELECT t.id, COALESCE(t.received_at, t.created_at) AS at, t.channel, t.subject, t.body,
       t.request_type, t.source_system, t.site_id, t.patient_mrn, t.metadata -> 'urgency',
       t.tags, (t.parent_id IS NOT NULL AND t.metadata ? 'workflow') AS follow_up, tt.code,
       r.to_queue_id, r.explanation ->> 'task_type',
       (r.explanation -> 'priority' ->> 'final')::int,
       COALESCE(r.explanation -> 'route' ->> 'required_skill', ''),
       COALESCE((r.explanation -> 'route' ->> 'min_skill_level')::int, 0),
       COALESCE(jsonb_typeof(r.explanation -> 'needs_review') = 'object', false),
       r.explanation -> 'classification_rule_ids',
       COALESCE(jsonb_typeof(r.explanation -> 'red_flag') = 'object', false),
       c.to_queue_id
  FROM queues_task t
  LEFT JOIN queues_tasktype tt ON tt.id = t.task_type_id
  JOIN LATERAL (
        SELECT e.to_queue_id, e.explanation FROM queues_taskevent e
         WHERE e.task_id = t.id AND e.kind || '' = 'routed'
         ORDER BY e.created_at, e.id LIMIT 1) r ON true
  LEFT JOIN LATERAL (
        SELECT e.to_queue_id FROM queues_taskevent e
         WHERE e.task_id = t.id AND e.kind || '' IN ('rerouted', 'reclassified')
           AND e.actor_id IS NOT NULL
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1) c ON true
 WHERE t.created_at >= %(start)s AND t.created_at < %(end)s
 ORDER BY at, t.id
 LIMIT %(limit)s
"""

PERIOD_COUNT_SQL = """
SELECT count(*) FROM queues_task WHERE created_at >= %(start)s AND created_at < %(end)s
"""


def _text_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def load_period(start: datetime, end: datetime, *, limit: int = MAX_TASKS) -> Traffic:
    """The tasks created in [start, end), as routing saw them, with what happened to them."""
    params = {"start": start, "end": end, "limit": limit + 1}
    with connection.cursor() as cursor:
        cursor.execute(PERIOD_SQL, params)
        rows = cursor.fetchall()
        cursor.execute(PERIOD_COUNT_SQL, params)
        (total,) = cursor.fetchone()
    if len(rows) > limit:
        raise ReplayError(
            f"More than {limit:,} tasks were created in that period: choose a shorter one."
        )
    rule_ids = {rule_id for row in rows for rule_id in _text_list(row[19])}
    added = dict(ClassificationRule.objects.filter(pk__in=rule_ids).values_list("pk", "add_tags"))
    items = []
    for (
        task_id,
        at,
        channel,
        subject,
        body,
        request_type,
        source_system,
        site_id,
        patient_mrn,
        urgency,
        tags,
        follow_up,
        type_now,
        routed_queue,
        routed_type,
        routed_priority,
        skill,
        level,
        needs_review,
        rule_ids_applied,
        red_flag,
        corrected_queue,
    ) in rows:
        # The tags it arrived with: routing added those of the rules that applied.
        by_rules = {
            tag for rule_id in _text_list(rule_ids_applied) for tag in added.get(rule_id, ())
        }
        if red_flag:
            by_rules.add(engine.RED_FLAG_TAG)
        recorded = Outcome(
            queue_id=routed_queue,
            task_type=routed_type or "",
            priority=routed_priority or 3,
            required_skill=skill or "",
            min_level=level or 0,
            needs_review=needs_review,
        )
        corrected = corrected_queue is not None
        items.append(
            ReplayItem(
                number=task_id,
                at=at,
                key=str(task_id),
                channel=channel,
                subject=subject,
                body=body,
                request_type=request_type,
                source_system=source_system,
                site_id=site_id,
                patient_key=patient_mrn,
                urgency_hint=urgency if urgency in (1, 2, 3, 4) else None,
                tags=tuple(t for t in tags if t not in by_rules),
                follow_up_type=(type_now or "") if follow_up else "",
                recorded=recorded,
                truth_queue_id=corrected_queue if corrected else routed_queue,
                truth_type=(type_now or "") if corrected else recorded.task_type,
                corrected=corrected,
            )
        )
    return Traffic(
        items=items,
        source={"kind": "period", "start": start.isoformat(), "end": end.isoformat()},
        skipped=total - len(items),
    )


def load_generated(*, n: int, seed: int, day: date, review_queue_id: int) -> Traffic:
    """A generated clinic morning on `day`; each item's truth is where a person would put it."""
    # The generator belongs to the project shell (it writes the demo's traffic); a replay
    # only reads its items.
    from accounts.models import Site
    from clinicdesk.demo_traffic import CLINIC_ZONE, generate_morning

    sites = dict(Site.objects.values_list("code", "id"))
    queues = dict(Queue.objects.values_list("code", "id"))
    items = []
    for number, item in enumerate(generate_morning(n, seed), start=1):
        review = item.expected_queue == "needs-review"
        items.append(
            ReplayItem(
                number=number,
                at=item.received_at(day, CLINIC_ZONE),
                key=f"generated:{seed}:{number}",
                channel=item.channel,
                subject=item.subject,
                body=item.body,
                request_type=item.request_type,
                source_system=item.source_system,
                site_id=sites.get(item.site),
                patient_key=item.patient_mrn,
                truth_queue_id=review_queue_id if review else queues.get(item.expected_queue),
                truth_type=item.expected_type,
            )
        )
    return Traffic(
        items=items,
        source={"kind": "generated", "n": n, "seed": seed, "day": day.isoformat()},
    )


# --- decisions -------------------------------------------------------------------------------


def _facts(item: ReplayItem, snapshot: selectors.RoutingSnapshot) -> engine.TaskFacts:
    local_now, site_open = snapshot.local_now(item.site_id, item.at)
    return engine.TaskFacts(
        key=item.key,
        channel=item.channel,
        subject=item.subject,
        body=item.body,
        local_now=local_now,
        request_type=item.request_type,
        source_system=item.source_system,
        site_id=item.site_id,
        patient_key=item.patient_key,
        urgency_hint=item.urgency_hint,
        tags=item.tags,
        site_business_open=site_open,
    )


def decide_all(snapshot: selectors.RoutingSnapshot, items: Sequence[ReplayItem]) -> list[Outcome]:
    """What the rule set decides for each item: classification and route (who gets it is the
    simulation's business)."""
    compiled, task_types = snapshot.compiled, snapshot.spec.task_types
    out = []
    for item in items:
        facts = _facts(item, snapshot)
        if item.follow_up_type and item.follow_up_type in task_types:
            code = item.follow_up_type
            route = engine.route_classified(
                compiled, facts, code, task_types[code].default_priority, ()
            )
            out.append(
                Outcome(
                    route.queue_id,
                    code,
                    route.priority,
                    route.required_skill,
                    route.min_skill_level,
                )
            )
            continue
        d = engine.decide(compiled, facts, _NOBODY, item.at)
        out.append(
            Outcome(
                d.queue_id,
                d.task_type,
                d.priority,
                d.required_skill,
                d.min_skill_level,
                d.needs_review,
            )
        )
    return out


# --- load and queue age, simulated -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    number: int
    at: datetime
    queue: engine.QueueSpec
    required_skill: str
    min_level: int
    weight: int
    priority: int
    minutes: float


@dataclass
class QueueSim:
    tasks: int = 0
    waited: int = 0
    not_reached: int = 0
    ages: list[float] = dataclasses.field(default_factory=list)
    units: int = 0
    peak_units: int = 0


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (what a person can check by counting), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def simulate(jobs: Sequence[Job], people: Iterable[engine.CandidateSpec]) -> dict[int, QueueSim]:
    """Push every job, in arrival order, to the best person with room (`choose_assignee`);
    see the module's docstring for the model. Pure and deterministic."""
    staff = {
        c.staff_id: dataclasses.replace(
            c,
            availability="available",
            active_load=0,
            last_assigned_at=None,
            open_patient_keys=frozenset(),
        )
        for c in people
    }
    stats: dict[int, QueueSim] = defaultdict(QueueSim)
    waiting: dict[int, list[tuple[int, datetime, int, Job]]] = defaultdict(list)
    done: list[tuple[datetime, int, int, int, int]] = []  # (at, seq, staff, weight, queue)
    seq = 0
    pool: engine.CandidatePool | None = None

    def assign(job: Job, now: datetime) -> bool:
        nonlocal pool, seq
        if pool is None:
            pool = engine.CandidatePool(staff.values())
        queue = job.queue
        if queue.policy == "pull_only":  # claimed by its people as soon as they have room
            queue = dataclasses.replace(queue, policy="push_least_loaded")
        chosen = engine.choose_assignee(
            queue, job.required_skill, job.min_level, job.weight, pool, "", now
        ).assignee_id
        if chosen is None:
            return False
        person = staff[chosen]
        staff[chosen] = dataclasses.replace(
            person, active_load=person.active_load + job.weight, last_assigned_at=now
        )
        pool = None
        s = stats[job.queue.id]
        s.ages.append((now - job.at).total_seconds() / 60)
        s.waited += now > job.at
        s.units += job.weight
        s.peak_units = max(s.peak_units, s.units)
        seq += 1
        heapq.heappush(
            done, (now + timedelta(minutes=job.minutes), seq, chosen, job.weight, job.queue.id)
        )
        return True

    def drain(queue_ids: Iterable[int], now: datetime) -> None:
        # Most urgent, then oldest first; a task nobody free can take (a skill) is passed
        # over, as the live offer does, up to a few in a row.
        for queue_id in sorted(queue_ids):
            line = waiting.get(queue_id)
            i = failures = 0
            while line and i < len(line) and failures < DRAIN_TRIES:
                if assign(line[i][3], now):
                    line.pop(i)
                else:
                    i += 1
                    failures += 1

    def finish_until(now: datetime) -> None:
        nonlocal pool
        while done and done[0][0] <= now:
            at, _, staff_id, weight, queue_id = heapq.heappop(done)
            person = staff[staff_id]
            staff[staff_id] = dataclasses.replace(person, active_load=person.active_load - weight)
            stats[queue_id].units -= weight
            pool = None
            drain(person.queue_ids & waiting.keys(), at)

    def tick_until(now: datetime, last_tick: datetime) -> datetime:
        while last_tick + TICK <= now:
            last_tick += TICK
            finish_until(last_tick)
            drain([q for q, line in waiting.items() if line], last_tick)
        return last_tick

    if not jobs:
        return {}
    last_tick = jobs[0].at
    for job in jobs:
        last_tick = tick_until(job.at, last_tick)
        finish_until(job.at)
        stats[job.queue.id].tasks += 1
        if not assign(job, job.at):
            bisect.insort(waiting[job.queue.id], (job.priority, job.at, job.number, job))
    horizon = jobs[-1].at + HORIZON
    while any(waiting.values()) and last_tick + TICK <= horizon:
        last_tick = tick_until(last_tick + TICK, last_tick)
    for queue_id, line in waiting.items():
        for _, at, _, _ in line:
            stats[queue_id].not_reached += 1
            stats[queue_id].waited += 1
            stats[queue_id].ages.append((horizon - at).total_seconds() / 60)
    return dict(stats)


HANDLING_SQL = """
SELECT tt.code,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
           t.resolved_at - COALESCE(t.first_claimed_at, t.first_assigned_at, t.created_at)) / 60)
  FROM queues_task t JOIN queues_tasktype tt ON tt.id = t.task_type_id
 WHERE t.status = 'resolved' AND t.resolved_at >= %(since)s AND t.resolved_at < %(until)s
 GROUP BY tt.code
"""


def handling_minutes(until: datetime) -> dict[str, float]:
    """Median handling time per task type over the 30 days before `until`, 1 minute to 8 h."""
    with connection.cursor() as cursor:
        cursor.execute(HANDLING_SQL, {"since": until - HANDLING_LOOKBACK, "until": until})
        return {
            code: min(max(float(m), 1.0), 480.0) for code, m in cursor.fetchall() if m is not None
        }


def _jobs(
    items: Sequence[ReplayItem],
    outcomes: Sequence[Outcome],
    snapshot: selectors.RoutingSnapshot,
    queues: dict[int, engine.QueueSpec],
    handling: dict[str, float],
) -> list[Job]:
    return [
        Job(
            number=item.number,
            at=item.at,
            queue=queues.get(o.queue_id) or engine.QueueSpec(o.queue_id, f"queue {o.queue_id}"),
            required_skill=o.required_skill,
            min_level=o.min_level if o.required_skill else 0,
            weight=snapshot.task_types.get(o.task_type, (None, 1))[1],
            priority=o.priority,
            minutes=handling.get(o.task_type, DEFAULT_HANDLING_MINUTES),
        )
        for item, o in zip(items, outcomes, strict=True)
    ]


# --- the report ------------------------------------------------------------------------------


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _queue_figures(sim: QueueSim | None, capacity: int) -> dict[str, Any]:
    sim = sim or QueueSim()
    return {
        "tasks": sim.tasks,
        "waited": sim.waited,
        "not_reached": sim.not_reached,
        "queue_age_median_min": _round(percentile(sim.ages, 50)),
        "queue_age_p90_min": _round(percentile(sim.ages, 90)),
        "peak_load_units": sim.peak_units,
        "capacity_units": capacity,
    }


def replay(
    *,
    rule_set: RuleSet,
    traffic: Traffic,
    baseline: str = RECORDED,
    people: Sequence[engine.CandidateSpec] | None = None,
    handling: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The report (JSON-able) of `rule_set` replayed on `traffic` against the baseline."""
    began = _time.perf_counter()
    items = traffic.items
    draft = selectors.routing_snapshot(rule_set.pk)
    if baseline == RECORDED and traffic.source["kind"] != "period":
        baseline = ACTIVE
    if baseline == ACTIVE:
        try:
            active = selectors.routing_snapshot()
        except selectors.NoActiveRuleSet as error:
            raise ReplayError(str(error)) from error
        before = decide_all(active, items)
        baseline_label = f"the active rules (v{active.version}), replayed"
    else:
        before = [item.recorded for item in items]
        versions = _recorded_versions(items)
        baseline_label = "what happened (the routing recorded on each task)"
        active = None
    after = decide_all(draft, items)

    names = dict(Queue.objects.values_list("id", "name"))
    specs = {q.id: q for q in Queue.objects.all()}
    queue_specs = {
        qid: engine.QueueSpec(qid, q.name, q.department_id, q.kind, q.assignment_policy)
        for qid, q in specs.items()
    }
    if people is None:
        people = selectors.candidates()
    if handling is None:
        end = max((i.at for i in items), default=None)
        handling = handling_minutes(end) if end is not None else {}

    # What changes, and the from → to matrix.
    moves: Counter[tuple[int, int]] = Counter()
    examples: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    changed_type = changed_priority = 0
    review_examples: list[dict[str, Any]] = []
    for item, b, a in zip(items, before, after, strict=True):
        moves[(b.queue_id, a.queue_id)] += 1
        if b.queue_id != a.queue_id and len(examples[(b.queue_id, a.queue_id)]) < EXAMPLES:
            examples[(b.queue_id, a.queue_id)].append(
                {"task": item.number, "from_type": b.task_type, "to_type": a.task_type}
            )
        changed_type += b.task_type != a.task_type
        changed_priority += b.priority != a.priority
        if a.needs_review and not b.needs_review and len(review_examples) < EXAMPLES:
            review_examples.append({"task": item.number, "from_type": b.task_type})
    changed_queue = sum(n for (f, t), n in moves.items() if f != t)
    used = sorted({q for pair in moves for q in pair}, key=lambda q: (names.get(q, ""), q))
    matrix = {
        "queues": [names.get(q, f"queue {q}") for q in used],
        "rows": [
            {
                "from": names.get(f, f"queue {f}"),
                "cells": [moves.get((f, t), 0) for t in used],
                "total": sum(moves.get((f, t), 0) for t in used),
            }
            for f in used
            if any(moves.get((f, t), 0) for t in used)
        ],
        "totals": [sum(moves.get((f, t), 0) for f in used) for t in used],
    }
    move_list = [
        {
            "from": names.get(f, f"queue {f}"),
            "to": names.get(t, f"queue {t}"),
            "count": n,
            "examples": examples[(f, t)],
        }
        for (f, t), n in sorted(
            moves.items(), key=lambda kv: (-kv[1], names.get(kv[0][0], ""), names.get(kv[0][1], ""))
        )
        if f != t
    ]

    # Agreement with what people finally decided.
    judged = [(i, b, a) for i, b, a in zip(items, before, after, strict=True) if i.truth_queue_id]
    corrected = [(i, b, a) for i, b, a in judged if i.corrected]

    def agree(rows, side: int, field: str) -> int:
        if field == "queue":
            return sum((b, a)[side].queue_id == i.truth_queue_id for i, b, a in rows)
        return sum(
            (b, a)[side].task_type == i.truth_type for i, b, a in rows if i.truth_type is not None
        )

    typed = sum(1 for i, _, _ in judged if i.truth_type is not None)
    agreement = {
        "judged": len(judged),
        "corrected": len(corrected),
        "queue": {
            "baseline": _share(agree(judged, 0, "queue"), len(judged)),
            "draft": _share(agree(judged, 1, "queue"), len(judged)),
        },
        "type": {
            "baseline": _share(agree(judged, 0, "type"), typed),
            "draft": _share(agree(judged, 1, "type"), typed),
        },
        "corrected_queue": {
            "baseline": agree(corrected, 0, "queue"),
            "draft": agree(corrected, 1, "queue"),
        },
    }

    # Load and queue age, simulated the same way for both.
    sims = [
        simulate(_jobs(items, outcomes, draft, queue_specs, handling), people)
        for outcomes in (before, after)
    ]
    capacity: Counter[int] = Counter()
    for person in people:
        for q in person.queue_ids:
            capacity[q] += person.capacity
    sim_queues = sorted(set(sims[0]) | set(sims[1]), key=lambda q: (names.get(q, ""), q))
    per_queue = [
        {
            "queue": names.get(q, f"queue {q}"),
            "baseline": _queue_figures(sims[0].get(q), capacity[q]),
            "draft": _queue_figures(sims[1].get(q), capacity[q]),
        }
        for q in sim_queues
    ]

    report = {
        "rule_set": {"id": rule_set.pk, "version": rule_set.version, "name": rule_set.name},
        "rule_set_revision": draft.fingerprint[2] if draft.fingerprint else rule_set.revision,
        "source": traffic.source,
        "baseline": {
            "kind": baseline,
            "label": baseline_label,
            "versions": [active.version] if active is not None else versions,
        },
        "tasks": len(items),
        "skipped": traffic.skipped,
        "changed_queue": changed_queue,
        "changed_type": changed_type,
        "changed_priority": changed_priority,
        "needs_review": {
            "baseline": sum(o.needs_review for o in before),
            "draft": sum(o.needs_review for o in after),
            "examples": review_examples,
        },
        "matrix": matrix,
        "moves": move_list,
        "agreement": agreement,
        "queues": per_queue,
        "model": {
            "handling_minutes": {k: round(v, 1) for k, v in sorted(handling.items())},
            "default_handling_minutes": DEFAULT_HANDLING_MINUTES,
            "staff": len(people),
        },
    }
    report["seconds"] = round(_time.perf_counter() - began, 3)
    return report


def _recorded_versions(items: Sequence[ReplayItem]) -> list[int]:
    # The recorded routing does not carry its version in the item; the tasks do.
    ids = [i.number for i in items]
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT rule_set_version FROM queues_task"
            " WHERE id = ANY(%s) AND rule_set_version IS NOT NULL ORDER BY 1",
            [ids],
        )
        return [row[0] for row in cursor.fetchall()]


def replay_run_create(*, rule_set: RuleSet, traffic: Traffic, baseline: str, actor) -> ReplayRun:
    """Replay and keep the report, for the approving manager."""
    report = replay(rule_set=rule_set, traffic=traffic, baseline=baseline)
    return ReplayRun.objects.create(
        rule_set=rule_set,
        rule_set_revision=report["rule_set_revision"],
        created_by=actor,
        source=traffic.source,
        task_count=report["tasks"],
        changed_queue=report["changed_queue"],
        seconds=report["seconds"],
        report=report,
    )
