"""A simulated clinic day, dispatched three ways: `python manage.py simulate --day`.

One generated day of requests (the demo's mix and wording, `clinicdesk/demo_traffic.py`)
meets the clinic's staff as configured in the database (queues, skills, capacities, shifts,
the active rule set) three times, each under one dispatch strategy:

- ``inbox_order``: manual dispatch. One coordinator (an extra person, on 8:00-17:00 with a
  half-hour lunch) reads the shared inbox oldest first, whatever the priority, spends a triage
  delay on each item, and hands it to a person of the right department, chosen at random
  among those on shift: no idea of skills or load. People work their own pile in the order it
  was handed to them.
- ``round_robin``: the rules of the active rule set choose the queue (as in ClinicDesk), then
  each queue deals its tasks to its members in turn, skipping people off shift, ignoring load,
  capacity and skills. People work their own pile in the order it was dealt.
- ``clinicdesk``: the real engine. `engine.decide` classifies, routes and assigns on arrival
  with a `CandidatePool` of the simulated loads, availability (lunch) and shifts; a task no one
  can take waits in its queue; freed capacity starts an assignment pass (`choose_assignee`);
  people pull from pull-only queues (Next task) when their own pile is empty; piles and queues
  are worked priority first, then oldest first.

All three see the same arrivals and the same drawn work times (common random numbers), so the
difference between them is the dispatch alone. Nothing here writes to the database; only
`build_day` reads it. The model (arrivals, work times, lunch, hand-backs) is described in
docs/simulation.md, with the definitions of the metrics (`compute_metrics`).

Times are minutes after local midnight of the simulated day (in the clinic's time zone).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from routing import engine

STRATEGIES = ("inbox_order", "round_robin", "clinicdesk")
STRATEGY_LABELS = {
    "inbox_order": "Inbox order (manual)",
    "round_robin": "Round robin",
    "clinicdesk": "ClinicDesk",
}
METRIC_KEYS = (
    "queue_age_median_min",
    "queue_age_p90_min",
    "urgent_within_30_min_share",
    "load_imbalance_cv",
    "idle_while_waiting_count",
)

DEFAULT_TASKS = 400
MAX_TASKS = 5000
URGENT_PRIORITY = 1
URGENT_MINUTES = 30.0

# Arrivals: the share of the day's requests in each local clock hour (weights sum to 100).
# A morning peak 8-10 (the night's portal messages and voicemails land with the first hour),
# a dip over lunch and a smaller wave after it. Within an hour, times are uniform at random.
ARRIVAL_PROFILE: tuple[tuple[int, int], ...] = (
    (7, 3),
    (8, 20),
    (9, 18),
    (10, 13),
    (11, 10),
    (12, 5),
    (13, 12),
    (14, 9),
    (15, 6),
    (16, 4),
)

# Work times: lognormal, median in minutes per task type, sigma below (p90 = 1.9 x median).
SERVICE_MEDIANS: dict[str, float] = {
    "appointment_request": 6,
    "callback_request": 7,
    "billing_question": 9,
    "payment_plan": 12,
    "claim_denial": 22,
    "records_request": 12,
    "portal_access": 6,
    "registration_admission": 14,
    "eligibility_verification": 9,
    "referral_packet": 20,
    "prior_auth_request": 25,
    "prior_auth_update": 11,
    "lab_result_followup": 8,
    "clinical_triage": 15,
    "scheduling_readiness": 10,
    "general_inquiry": 6,
}
DEFAULT_SERVICE_MEDIAN = 10.0
SERVICE_SIGMA = 0.5
TRIAGE_MEDIAN = 1.0  # the coordinator reads an item and decides who gets it
REVIEW_MEDIAN = 2.0  # a person reads a Needs review item, picks its type and routes it
HANDBACK_MEDIAN = 3.0  # a person opens something that is not theirs and passes it on
HANDLING_SIGMA = 0.4

LUNCH_MINUTES = 30
LUNCH_STARTS = (11 * 60 + 30, 12 * 60, 12 * 60 + 30)  # staggered by staff id
LUNCH_MIN_SHIFT = 6 * 60  # shorter shifts take no lunch
COORDINATOR_SHIFT = (8 * 60, 17 * 60)
COORDINATOR_LUNCH = (12 * 60, 12 * 60 + 30)
DAY_WINDOW = (7 * 60, 17 * 60)  # the span load shares are measured over
COORDINATOR_ID = 0

_ARRIVE, _FINISH, _WAKE, _TRIAGED, _COORDINATOR_BACK = 0, 1, 2, 3, 4
_WORK, _REROUTE, _SKILL = "work", "reroute", "skill"


class SimulationSetupError(LookupError):
    """The database lacks what a simulated day needs (the demo clinic, an active rule set)."""


# --- The day ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimStaff:
    """A person as the simulation sees them. `candidate` is what the engine sees (its load,
    availability and last assignment are replaced as the day goes on)."""

    candidate: engine.CandidateSpec
    on_shift: tuple[tuple[float, float], ...]  # [start, end) minutes
    lunch: tuple[float, float] | None = None

    @property
    def id(self) -> int:
        return self.candidate.staff_id

    def on_duty(self, t: float) -> bool:
        """On shift (a dispatcher counts them in, lunch or not)."""
        return any(a <= t < b for a, b in self.on_shift)

    def working(self, t: float) -> bool:
        """On shift and not at lunch: may start work."""
        if self.lunch is not None and self.lunch[0] <= t < self.lunch[1]:
            return False
        return self.on_duty(t)

    def wakes(self) -> list[float]:
        """The moments they become able to start work."""
        moments = [a for a, _ in self.on_shift]
        if self.lunch is not None:
            moments.append(self.lunch[1])
        return moments

    def working_minutes(self, lo: float, hi: float) -> float:
        total = sum(_overlap(a, b, lo, hi) for a, b in self.on_shift)
        if self.lunch is not None:
            total -= sum(
                _overlap(max(a, self.lunch[0]), min(b, self.lunch[1]), lo, hi)
                for a, b in self.on_shift
            )
        return total

    def qualifies(self, queue_id: int, skill: str, level: int, weight: int) -> bool:
        c = self.candidate
        if queue_id not in c.queue_ids or weight > c.capacity:
            return False
        return not skill or c.skills.get(skill, 0) >= level


@dataclass(frozen=True, slots=True)
class SimTask:
    """One request of the day, and what it really is (as a person at the clinic would decide:
    the truth that a misrouted task is corrected to)."""

    id: int
    arrival: float
    facts: engine.TaskFacts
    true_queue_id: int
    true_type: str
    service: float  # minutes of the work itself
    true_priority: int = 3
    true_skill: str = ""
    true_level: int = 0
    weight: int = 1  # capacity units of the true type
    triage: float = TRIAGE_MEDIAN
    review: float = REVIEW_MEDIAN
    handback: float = HANDBACK_MEDIAN
    kind: str = ""

    @property
    def need(self) -> tuple[int, str, int, int]:
        return (self.true_queue_id, self.true_skill, self.true_level, self.weight)


@dataclass(frozen=True)
class SimDay:
    day: date
    zone: str
    ruleset: engine.CompiledRuleSet
    staff: tuple[SimStaff, ...]
    tasks: tuple[SimTask, ...]
    coordinator: SimStaff
    window: tuple[float, float] = DAY_WINDOW
    next_day_start: float = 24 * 60 + 8 * 60
    seed: int = 0

    def moment(self, minutes: float) -> datetime:
        return _midnight(self.day, self.zone) + timedelta(minutes=minutes)


@cache
def _midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


# --- Results and metrics ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    task_id: int
    arrival: float
    start: float | None  # start of the work that resolves it; None: not started that day
    priority: int  # the true priority
    idle_while_waiting: bool
    worker_id: int | None
    handbacks: int = 0


@dataclass(frozen=True, slots=True)
class StaffOutcome:
    staff_id: int
    teams: frozenset[int]  # department ids of the queues they work
    busy_minutes: float  # within the day window
    working_minutes: float  # on shift, less lunch, within the day window


@dataclass(frozen=True, slots=True)
class AssignmentRecord:
    """One task given to one person (pushed, dealt, handed or pulled)."""

    task_id: int
    staff_id: int
    at: float
    queue_id: int
    required_skill: str
    min_level: int
    level: int  # the person's level of `required_skill` (0 when none is required)
    load_after: int
    capacity: int


@dataclass(frozen=True, slots=True)
class Metrics:
    queue_age_median_min: float | None
    queue_age_p90_min: float | None
    urgent_within_30_min_share: float | None
    load_imbalance_cv: float | None
    idle_while_waiting_count: int
    tasks: int
    urgent_tasks: int
    urgent_within_30_min: int
    carried_over_count: int
    handbacks: int

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None, digits: int) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "queue_age_median_min": r(self.queue_age_median_min, 1),
            "queue_age_p90_min": r(self.queue_age_p90_min, 1),
            "urgent_within_30_min_share": r(self.urgent_within_30_min_share, 3),
            "load_imbalance_cv": r(self.load_imbalance_cv, 3),
            "idle_while_waiting_count": self.idle_while_waiting_count,
            "tasks": self.tasks,
            "urgent_tasks": self.urgent_tasks,
            "urgent_within_30_min": self.urgent_within_30_min,
            "carried_over_count": self.carried_over_count,
            "handbacks": self.handbacks,
        }


@dataclass(frozen=True)
class RunResult:
    strategy: str
    tasks: tuple[TaskOutcome, ...]
    staff: tuple[StaffOutcome, ...]
    assignments: tuple[AssignmentRecord, ...]
    next_day_start: float

    def metrics(self) -> Metrics:
        return compute_metrics(self.tasks, self.staff, next_day_start=self.next_day_start)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def queue_age(task: TaskOutcome, next_day_start: float) -> float:
    """Arrival to the start of the work that resolves it. A task nobody started that day
    counts as started at the next day's first shift: a lower bound of its real wait."""
    start = task.start if task.start is not None else max(next_day_start, task.arrival)
    return start - task.arrival


def load_imbalance_cv(staff: Iterable[StaffOutcome]) -> float | None:
    """Imbalance within teams. A person's load share is their busy minutes over their working
    minutes (on shift, less lunch) in the day window. A team is everyone who works a queue of a
    department; its imbalance is the coefficient of variation of its members' load shares
    (population standard deviation over the mean; 0 when nobody was busy). The result is the
    mean over teams of two or more, weighted by team size; None when there is no such team."""
    teams: dict[int, list[float]] = {}
    for s in staff:
        if s.working_minutes <= 0:
            continue
        share = s.busy_minutes / s.working_minutes
        for team in s.teams:
            teams.setdefault(team, []).append(share)
    weighted = 0.0
    people = 0
    for team in sorted(teams):
        shares = teams[team]
        if len(shares) < 2:
            continue
        mean = math.fsum(shares) / len(shares)
        cv = statistics.pstdev(shares) / mean if mean > 0 else 0.0
        weighted += cv * len(shares)
        people += len(shares)
    return weighted / people if people else None


def compute_metrics(
    tasks: Sequence[TaskOutcome], staff: Sequence[StaffOutcome], *, next_day_start: float
) -> Metrics:
    ages = [queue_age(t, next_day_start) for t in tasks]
    urgent = [age for t, age in zip(tasks, ages, strict=True) if t.priority == URGENT_PRIORITY]
    reached = sum(1 for age in urgent if age <= URGENT_MINUTES)
    return Metrics(
        queue_age_median_min=percentile(ages, 0.5),
        queue_age_p90_min=percentile(ages, 0.9),
        urgent_within_30_min_share=reached / len(urgent) if urgent else None,
        load_imbalance_cv=load_imbalance_cv(staff),
        idle_while_waiting_count=sum(1 for t in tasks if t.idle_while_waiting),
        tasks=len(tasks),
        urgent_tasks=len(urgent),
        urgent_within_30_min=reached,
        carried_over_count=sum(1 for t in tasks if t.start is None),
        handbacks=sum(t.handbacks for t in tasks),
    )


# --- The simulation -------------------------------------------------------------------------


class _Person:
    __slots__ = (
        "activity",
        "busy",
        "current",
        "id",
        "last_assigned",
        "load",
        "patients",
        "pile",
        "spec",
    )

    def __init__(self, spec: SimStaff) -> None:
        self.spec = spec
        self.id = spec.id
        self.current: _Task | None = None
        self.activity = ""
        self.pile: list[_Task] = []  # given to them, not started
        self.load = 0  # capacity units of the tasks they hold (pile and current)
        self.last_assigned: float | None = None
        self.busy = 0.0
        self.patients: Counter[str] = Counter()

    def level(self, skill: str) -> int:
        return self.spec.candidate.skills.get(skill, 0) if skill else 0


class _Task:
    __slots__ = (
        "flagged",
        "handbacks",
        "level",
        "priority",
        "queue_id",
        "skill",
        "start",
        "task",
        "waived",
        "weight",
        "worker",
    )

    def __init__(self, task: SimTask) -> None:
        self.task = task
        self.queue_id = 0  # where it is now; 0 before routing
        self.priority = task.true_priority
        self.skill = ""
        self.level = 0
        self.weight = task.weight
        self.start: float | None = None
        self.worker: int | None = None
        self.flagged = False
        self.handbacks = 0
        self.waived = False  # nobody with the skill was on duty: done without it

    def order(self) -> tuple[int, float, int]:
        return (self.priority, self.task.arrival, self.task.id)


class _Run:
    """The event loop and what every strategy shares. Subclasses decide who gets what."""

    strategy = ""

    def __init__(self, day: SimDay) -> None:
        self.day = day
        self.people = {s.id: _Person(s) for s in sorted(day.staff, key=lambda s: s.id)}
        self.tasks = {t.id: _Task(t) for t in day.tasks}
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.assignments: list[AssignmentRecord] = []
        self.spec = day.ruleset.spec
        self.rng = random.Random(f"{day.seed}:{self.strategy}")
        # Idle-while-waiting bookkeeping: waiting, not yet flagged tasks by what they need,
        # and what each person is qualified for.
        self.unflagged: dict[tuple[int, str, int, int], set[int]] = {}
        needs = {t.need for t in day.tasks}
        self.covers = {
            p.id: frozenset(n for n in needs if p.spec.qualifies(*n)) for p in self.people.values()
        }
        self.pending: dict[int, list[_Task]] = {}  # queue id -> tasks nobody on duty could get

    # the loop

    def push(self, t: float, kind: int, arg: int) -> None:
        heapq.heappush(self.events, (t, self.seq, kind, arg))
        self.seq += 1

    def run(self) -> RunResult:
        for task in sorted(self.day.tasks, key=lambda t: (t.arrival, t.id)):
            self.push(task.arrival, _ARRIVE, task.id)
        for person in self.people.values():
            for moment in person.spec.wakes():
                self.push(moment, _WAKE, person.id)
        self.schedule()
        events = self.events
        while events:
            t, _, kind, arg = heapq.heappop(events)
            if kind == _ARRIVE:
                task = self.tasks[arg]
                self.unflagged.setdefault(task.task.need, set()).add(arg)
                self.arrive(t, task)
            elif kind == _FINISH:
                self.finish(t, self.people[arg])
            elif kind == _WAKE:
                self.wake(t, self.people[arg])
                self.kick(t, self.people[arg])
            elif kind == _TRIAGED:
                self.triaged(t, self.tasks[arg])
            else:
                self.coordinator_free(t)
            if not events or events[0][0] > t:
                self.check_idle(t)
        return self.result()

    def check_idle(self, t: float) -> None:
        """Flag every waiting task that an idle, working, qualified person could start now.
        The state holds until the next event, so the wait overlaps the idleness."""
        covered: set[tuple[int, str, int, int]] = set()
        for person in self.people.values():
            if person.current is None and person.spec.working(t):
                covered |= self.covers[person.id]
        for need in covered:
            ids = self.unflagged.get(need)
            if ids:
                for task_id in ids:
                    self.tasks[task_id].flagged = True
                ids.clear()

    def result(self) -> RunResult:
        lo, hi = self.day.window
        queues = self.spec.queues
        staff = tuple(
            StaffOutcome(
                staff_id=p.id,
                teams=frozenset(
                    queues[q].department_id for q in p.spec.candidate.queue_ids if q in queues
                ),
                busy_minutes=p.busy,
                working_minutes=p.spec.working_minutes(lo, hi),
            )
            for p in self.people.values()
        )
        tasks = tuple(
            TaskOutcome(
                task_id=t.task.id,
                arrival=t.task.arrival,
                start=t.start,
                priority=t.task.true_priority,
                idle_while_waiting=t.flagged,
                worker_id=t.worker,
                handbacks=t.handbacks,
            )
            for t in sorted(self.tasks.values(), key=lambda t: t.task.id)
        )
        return RunResult(
            self.strategy, tasks, staff, tuple(self.assignments), self.day.next_day_start
        )

    # people and work

    def give(self, t: float, person: _Person, task: _Task) -> None:
        person.pile.append(task)
        person.load += task.weight
        person.last_assigned = t
        if task.task.facts.patient_key:
            person.patients[task.task.facts.patient_key] += 1
        self.assignments.append(
            AssignmentRecord(
                task_id=task.task.id,
                staff_id=person.id,
                at=t,
                queue_id=task.queue_id,
                required_skill=task.skill,
                min_level=task.level,
                level=person.level(task.skill),
                load_after=person.load,
                capacity=person.spec.candidate.capacity,
            )
        )
        self.changed()

    def release(self, person: _Person, task: _Task) -> None:
        person.load -= task.weight
        key = task.task.facts.patient_key
        if key:
            person.patients[key] -= 1
            if person.patients[key] <= 0:
                del person.patients[key]
        self.changed()

    def kick(self, t: float, person: _Person) -> None:
        if person.current is not None or not person.spec.working(t):
            return
        task = self.next_for(t, person)
        if task is not None:
            self.start(t, person, task)

    def next_for(self, t: float, person: _Person) -> _Task | None:
        return person.pile.pop(0) if person.pile else None

    def start(self, t: float, person: _Person, task: _Task) -> None:
        sim = task.task
        if task.queue_id != sim.true_queue_id:
            activity = _REROUTE
            minutes = sim.review if task.queue_id == self.spec.review_queue_id else sim.handback
        elif (
            sim.true_skill
            and not task.waived
            and person.level(sim.true_skill) < sim.true_level
            and self.qualified_on_duty(t, sim, exclude=person.id)
        ):
            activity, minutes = _SKILL, sim.handback
        else:
            activity, minutes = _WORK, sim.service
            task.start = t
            task.worker = person.id
            waiting = self.unflagged.get(sim.need)
            if waiting is not None:
                waiting.discard(sim.id)
        person.current = task
        person.activity = activity
        lo, hi = self.day.window
        person.busy += _overlap(t, t + minutes, lo, hi)
        self.push(t + minutes, _FINISH, person.id)

    def finish(self, t: float, person: _Person) -> None:
        task, activity = person.current, person.activity
        assert task is not None
        person.current = None
        self.release(person, task)
        if activity == _REROUTE:
            task.handbacks += 1
            self.reroute(t, task)
        elif activity == _SKILL:
            task.handbacks += 1
            self.skill_reroute(t, task, person)
        self.freed(t, person)
        self.kick(t, person)

    def qualified_on_duty(self, t: float, sim: SimTask, *, exclude: int = -1) -> list[_Person]:
        return [
            p
            for p in self.people.values()
            if p.id != exclude and p.spec.on_duty(t) and p.spec.qualifies(*sim.need)
        ]

    def members_on_duty(self, t: float, queue_id: int) -> list[_Person]:
        return [
            p
            for p in self.people.values()
            if queue_id in p.spec.candidate.queue_ids and p.spec.on_duty(t)
        ]

    def to_true_queue(self, task: _Task) -> None:
        sim = task.task
        task.queue_id = sim.true_queue_id
        task.priority = sim.true_priority
        task.skill, task.level, task.weight = sim.true_skill, sim.true_level, sim.weight

    # hooks

    def schedule(self) -> None:
        pass

    def arrive(self, t: float, task: _Task) -> None:
        raise NotImplementedError

    def reroute(self, t: float, task: _Task) -> None:
        raise NotImplementedError

    def skill_reroute(self, t: float, task: _Task, person: _Person) -> None:
        raise NotImplementedError

    def wake(self, t: float, person: _Person) -> None:
        """Someone came on shift or back from lunch: what was waiting for nobody is dealt."""
        for queue_id in sorted(person.spec.candidate.queue_ids):
            for task in self.pending.pop(queue_id, []):
                self.deal(t, task)

    def deal(self, t: float, task: _Task) -> None:
        raise NotImplementedError

    def freed(self, t: float, person: _Person) -> None:
        pass

    def changed(self) -> None:
        pass

    def coordinator_free(self, t: float) -> None:
        pass

    def triaged(self, t: float, task: _Task) -> None:
        pass


class _InboxOrder(_Run):
    strategy = "inbox_order"

    def __init__(self, day: SimDay) -> None:
        super().__init__(day)
        self.inbox: deque[_Task] = deque()
        self.coordinator_busy = False

    def schedule(self) -> None:
        for moment in self.day.coordinator.wakes():
            self.push(moment, _COORDINATOR_BACK, COORDINATOR_ID)

    def arrive(self, t: float, task: _Task) -> None:
        self.inbox.append(task)
        self.coordinator_free(t)

    def coordinator_free(self, t: float) -> None:
        if self.coordinator_busy or not self.inbox or not self.day.coordinator.working(t):
            return
        task = self.inbox.popleft()  # the oldest, whatever it says
        self.coordinator_busy = True
        self.push(t + task.task.triage, _TRIAGED, task.task.id)

    def triaged(self, t: float, task: _Task) -> None:
        self.coordinator_busy = False
        self.to_true_queue(task)  # a person reads it and knows whose it is
        task.skill, task.level = "", 0  # ...but not who has the skill
        self.deal(t, task)
        self.coordinator_free(t)

    def deal(self, t: float, task: _Task) -> None:
        members = self.members_on_duty(t, task.queue_id)
        if not members:
            self.pending.setdefault(task.queue_id, []).append(task)
            return
        person = self.rng.choice(members)
        self.give(t, person, task)
        self.kick(t, person)

    def reroute(self, t: float, task: _Task) -> None:
        self.to_true_queue(task)
        self.deal(t, task)

    def skill_reroute(self, t: float, task: _Task, person: _Person) -> None:
        qualified = self.qualified_on_duty(t, task.task, exclude=person.id)
        if not qualified:
            task.waived = True
            self.give(t, person, task)
            return
        colleague = self.rng.choice(qualified)
        self.give(t, colleague, task)
        self.kick(t, colleague)


class _RoundRobin(_Run):
    strategy = "round_robin"

    def __init__(self, day: SimDay) -> None:
        super().__init__(day)
        self.nobody = engine.CandidatePool(())
        self.turn: Counter[tuple[int, str]] = Counter()

    def arrive(self, t: float, task: _Task) -> None:
        d = engine.decide(self.day.ruleset, task.task.facts, self.nobody, self.day.moment(t))
        task.queue_id, task.priority, task.weight = d.queue_id, d.priority, d.explanation.weight
        task.skill, task.level = "", 0
        self.deal(t, task)

    def _next_in_turn(self, t: float, queue_id: int, sim: SimTask | None) -> _Person | None:
        members = [
            p
            for p in self.people.values()
            if queue_id in p.spec.candidate.queue_ids
            and (sim is None or p.spec.qualifies(*sim.need))
        ]
        key = (queue_id, sim.true_skill if sim else "")
        for step in range(len(members)):
            i = (self.turn[key] + step) % len(members)
            if members[i].spec.on_duty(t):
                self.turn[key] = i + 1
                return members[i]
        return None

    def deal(self, t: float, task: _Task) -> None:
        person = self._next_in_turn(t, task.queue_id, None)
        if person is None:
            self.pending.setdefault(task.queue_id, []).append(task)
            return
        self.give(t, person, task)
        self.kick(t, person)

    def reroute(self, t: float, task: _Task) -> None:
        self.to_true_queue(task)
        task.skill, task.level = "", 0
        self.deal(t, task)

    def skill_reroute(self, t: float, task: _Task, person: _Person) -> None:
        # The person passes it to the next colleague in turn who has the skill.
        colleague = self._next_in_turn(t, task.queue_id, task.task)
        if colleague is None or colleague is person:
            task.waived = True
            self.give(t, person, task)
            return
        self.give(t, colleague, task)
        self.kick(t, colleague)


class _ClinicDesk(_Run):
    strategy = "clinicdesk"

    def __init__(self, day: SimDay) -> None:
        super().__init__(day)
        self.waiting: dict[int, list[_Task]] = {}  # queue id -> tasks in the queue
        self.pull_queues = frozenset(
            q.id for q in self.spec.queues.values() if q.policy == "pull_only"
        )
        self._pool: engine.CandidatePool | None = None
        self._pool_at = -1.0

    # the pool of candidates as the engine sees them now

    def changed(self) -> None:
        self._pool = None

    def pool(self, t: float) -> engine.CandidatePool:
        if self._pool is not None and self._pool_at == t:
            return self._pool
        candidates = []
        for p in self.people.values():
            base = p.spec.candidate
            if p.spec.working(t):
                availability = "available"
            else:
                availability = "away" if p.spec.on_duty(t) else "offline"
            candidates.append(
                replace(
                    base,
                    availability=availability,
                    active_load=p.load,
                    last_assigned_at=None
                    if p.last_assigned is None
                    else self.day.moment(p.last_assigned),
                    open_patient_keys=frozenset(p.patients),
                )
            )
        self._pool = engine.CandidatePool(candidates)
        self._pool_at = t
        return self._pool

    # routing and assignment

    def arrive(self, t: float, task: _Task) -> None:
        d = engine.decide(self.day.ruleset, task.task.facts, self.pool(t), self.day.moment(t))
        task.queue_id, task.priority, task.weight = d.queue_id, d.priority, d.explanation.weight
        task.skill, task.level = d.required_skill, d.min_skill_level
        if d.assignee_id is not None:
            person = self.people[d.assignee_id]
            self.give(t, person, task)
            self.kick(t, person)
        else:
            self.enqueue(t, task)

    def enqueue(self, t: float, task: _Task) -> None:
        """Into its queue. In a pull-only queue, whoever of its people is idle presses Next
        task (the longest without an assignment first); push queues wait for freed capacity."""
        self.waiting.setdefault(task.queue_id, []).append(task)
        if task.queue_id not in self.pull_queues:
            return
        idle = [
            p
            for p in self.people.values()
            if task.queue_id in p.spec.candidate.queue_ids
            and p.current is None
            and p.spec.working(t)
        ]
        idle.sort(key=lambda p: (p.last_assigned is not None, p.last_assigned or 0.0, p.id))
        for person in idle:
            self.kick(t, person)

    def offer(self, t: float, task: _Task) -> bool:
        queue = self.spec.queues[task.queue_id]
        a = engine.choose_assignee(
            queue,
            task.skill,
            task.level,
            task.weight,
            self.pool(t),
            task.task.facts.patient_key,
            self.day.moment(t),
        )
        if a.assignee_id is None:
            return False
        person = self.people[a.assignee_id]
        self.give(t, person, task)
        self.kick(t, person)
        return True

    def reroute(self, t: float, task: _Task) -> None:
        self.to_true_queue(task)
        if self.spec.queues[task.queue_id].policy == "pull_only" or not self.offer(t, task):
            self.enqueue(t, task)

    def skill_reroute(self, t: float, task: _Task, person: _Person) -> None:
        self.reroute(t, task)

    def wake(self, t: float, person: _Person) -> None:
        self.assignment_pass(t, person)

    def freed(self, t: float, person: _Person) -> None:
        self.assignment_pass(t, person)

    def assignment_pass(self, t: float, person: _Person) -> None:
        """Freed capacity (or someone back) offers the queued work of that person's queues,
        most urgent first. Only their state changed, so other queues cannot move."""
        for queue_id in sorted(person.spec.candidate.queue_ids - self.pull_queues):
            queued = self.waiting.get(queue_id)
            if not queued:
                continue
            failed: set[tuple[str, int, int]] = set()
            for task in sorted(queued, key=_Task.order):
                need = (task.skill, task.level, task.weight)
                if need in failed:
                    continue
                if self.offer(t, task):
                    queued.remove(task)
                else:
                    failed.add(need)

    def next_for(self, t: float, person: _Person) -> _Task | None:
        if not person.pile:
            self.pull(t, person)
        if not person.pile:
            return None
        task = min(person.pile, key=_Task.order)
        person.pile.remove(task)
        return task

    def pull(self, t: float, person: _Person) -> None:
        """Next task: the most urgent, then oldest, task of a pull-only queue they work."""
        free = person.spec.candidate.capacity - person.load
        best: _Task | None = None
        for queue_id in person.spec.candidate.queue_ids & self.pull_queues:
            for task in self.waiting.get(queue_id, ()):
                if task.weight > free or person.level(task.skill) < task.level:
                    continue
                if best is None or task.order() < best.order():
                    best = task
        if best is not None:
            self.waiting[best.queue_id].remove(best)
            self.give(t, person, best)


RUNS: dict[str, type[_Run]] = {
    "inbox_order": _InboxOrder,
    "round_robin": _RoundRobin,
    "clinicdesk": _ClinicDesk,
}


def simulate(day: SimDay, strategy: str) -> RunResult:
    """One strategy over the day. Deterministic: the day's seed drives every choice."""
    try:
        run = RUNS[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}") from None
    return run(day).run()


def simulate_all(day: SimDay) -> dict[str, RunResult]:
    return {strategy: simulate(day, strategy) for strategy in STRATEGIES}


# --- Building a day from the clinic's configuration ---------------------------------------


def shift_intervals(
    candidate: engine.CandidateSpec, day: date, zone: str
) -> tuple[tuple[float, float], ...]:
    """The minutes of `day` (and the night after it) the person is on shift, read as the
    engine reads a shift: the shifts that start on the day before and on the day itself."""
    tz = ZoneInfo(candidate.time_zone or "UTC")
    base = _midnight(day, zone)
    start, end = candidate.shift_start, candidate.shift_end
    spans: list[tuple[float, float]] = []
    for offset in (-1, 0):
        d = day + timedelta(days=offset)
        if candidate.shift_weekdays and d.weekday() not in candidate.shift_weekdays:
            continue
        if start is None or end is None or start == end:
            begin = datetime.combine(d, time(0), tzinfo=tz)
            finish = datetime.combine(d + timedelta(days=1), time(0), tzinfo=tz)
        else:
            begin = datetime.combine(d, start, tzinfo=tz)
            finish = datetime.combine(d if start < end else d + timedelta(days=1), end, tzinfo=tz)
        a = max(0.0, (begin - base).total_seconds() / 60)
        b = (finish - base).total_seconds() / 60
        if b > a:
            spans.append((a, b))
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def lunch_for(spans: Sequence[tuple[float, float]], turn: int) -> tuple[float, float] | None:
    """Half an hour at 11:30, 12:00 or 12:30 (by turn) for a shift of six hours or more."""
    begin = LUNCH_STARTS[turn % len(LUNCH_STARTS)]
    lunch = (float(begin), float(begin + LUNCH_MINUTES))
    for a, b in spans:
        if b - a >= LUNCH_MIN_SHIFT and a <= lunch[0] and lunch[1] <= b:
            return lunch
    return None


def arrival_minutes(counts: Sequence[tuple[int, int]], rng: random.Random) -> list[float]:
    """(hour, count) pairs: that many arrivals uniform at random in that local hour, sorted."""
    minutes = [hour * 60 + rng.random() * 60 for hour, count in counts for _ in range(count)]
    return sorted(minutes)


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


def next_weekday(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def build_day(
    *, day: date, seed: int, tasks: int = DEFAULT_TASKS, rule_set_id: int | None = None
) -> SimDay:
    """The demo's traffic for `day` against the clinic as configured in the database: the
    active rule set (or `rule_set_id`), queues, task types, skills, and everyone with a work
    queue who is not offline (availability "away" is a moment, not a day off). Reads only.
    Raises SimulationSetupError when the demo clinic or an active rule set is missing."""
    from accounts.models import Site
    from clinicdesk import demo_traffic  # upward, on purpose: the demo's message generator
    from queues.models import Queue
    from routing import selectors

    try:
        snapshot = selectors.routing_snapshot(rule_set_id)
    except selectors.NoActiveRuleSet as error:
        raise SimulationSetupError(
            f"{error} Run `python manage.py demo` to build the demo clinic and its rules."
        ) from error
    codes = dict(Queue.objects.filter(is_active=True).values_list("code", "id"))
    wanted = sorted({queue for queue, _, _ in demo_traffic.EXPECTED.values()})
    missing = [code for code in wanted if code not in codes]
    if missing:
        raise SimulationSetupError(
            f"The demo clinic's queues {', '.join(missing)} are missing: run "
            "`python manage.py demo` first."
        )
    compiled = snapshot.compiled
    zone = demo_traffic.CLINIC_ZONE
    staff = []
    for turn, candidate in enumerate(
        c for c in selectors.candidates() if c.queue_ids and c.availability != "offline"
    ):
        spans = shift_intervals(candidate, day, zone)
        if spans:
            staff.append(SimStaff(candidate, spans, lunch_for(spans, turn)))
    if not staff:
        raise SimulationSetupError(
            "Nobody works a queue on that day: give the staff queues and shifts in the admin, "
            "or run `python manage.py demo`."
        )
    coordinator = SimStaff(
        engine.CandidateSpec(staff_id=COORDINATOR_ID, name="Coordinator", queue_ids=frozenset()),
        (tuple(float(m) for m in COORDINATOR_SHIFT),),
        tuple(float(m) for m in COORDINATOR_LUNCH),
    )
    sites = dict(Site.objects.values_list("code", "id"))

    items = demo_traffic.generate_morning(tasks, seed)
    rng = random.Random(f"simulate:{seed}")
    hours = [hour for hour, _ in ARRIVAL_PROFILE]
    counts = demo_traffic.split(len(items), [weight for _, weight in ARRIVAL_PROFILE])
    arrivals = arrival_minutes(list(zip(hours, counts, strict=True)), rng)
    shell = SimDay(day, zone, compiled, (), (), coordinator, seed=seed)
    nobody = engine.CandidatePool(())
    sim_tasks = []
    # The items come in the generator's order (its overnight voicemails first): they take the
    # day's arrival times in order.
    for i, (item, arrival) in enumerate(zip(items, arrivals, strict=True), start=1):
        site_id = sites.get(item.site)
        local_now, site_open = snapshot.local_now(site_id, shell.moment(arrival))
        facts = engine.TaskFacts(
            key=item.external_id,
            channel=item.channel,
            subject=item.subject,
            body=item.body,
            local_now=local_now,
            request_type=item.request_type,
            source_system=item.source_system,
            site_id=site_id,
            patient_key=item.patient_mrn,
            site_business_open=site_open,
        )
        true_type = item.expected_type
        true_queue = codes[item.expected_queue]
        skill, level = "", 0
        if true_type in compiled.task_types:
            # The skill the clinic's routing rules ask of the correctly typed task.
            tags = engine.decide(compiled, facts, nobody, shell.moment(arrival)).tags
            route = engine.route_classified(
                compiled, facts, true_type, item.expected_priority or 3, tags
            )
            if route.queue_id == true_queue:
                skill, level = route.required_skill, route.min_skill_level
        work_type = true_type or "general_inquiry"
        sim_tasks.append(
            SimTask(
                id=i,
                arrival=arrival,
                facts=facts,
                true_queue_id=true_queue,
                true_type=true_type,
                service=lognormal(
                    rng, SERVICE_MEDIANS.get(work_type, DEFAULT_SERVICE_MEDIAN), SERVICE_SIGMA
                ),
                true_priority=item.expected_priority or 3,
                true_skill=skill,
                true_level=level,
                weight=snapshot.task_types.get(true_type, (0, 1))[1],
                triage=lognormal(rng, TRIAGE_MEDIAN, HANDLING_SIGMA),
                review=lognormal(rng, REVIEW_MEDIAN, HANDLING_SIGMA),
                handback=lognormal(rng, HANDBACK_MEDIAN, HANDLING_SIGMA),
                kind=item.kind,
            )
        )
    first_shift = min((a for s in staff for a, _ in s.on_shift if a > 0), default=8 * 60)
    return SimDay(
        day=day,
        zone=zone,
        ruleset=compiled,
        staff=tuple(staff),
        tasks=tuple(sim_tasks),
        coordinator=coordinator,
        next_day_start=24 * 60 + first_shift,
        seed=seed,
    )


def clinic_closed_on(day: date) -> str:
    """The name of the demo clinic's main site when it is closed on `day`, else ""."""
    from accounts.models import Site

    site = Site.objects.filter(code="riverside").first()
    if site is None or not site.open_weekdays or day.weekday() in site.open_weekdays:
        return ""
    return site.name


def summary(results: Mapping[str, RunResult]) -> dict[str, dict[str, Any]]:
    """The JSON the command prints: one object per strategy."""
    return {strategy: results[strategy].metrics().as_dict() for strategy in STRATEGIES}
