"""`routing/simulate.py` and `manage.py simulate --day`.

The metrics on hand-built outcomes; the three strategies on a tiny day whose every event is
traced by hand below; then the demo clinic's day (needs the database): determinism, the JSON,
ClinicDesk never breaking skills or capacity, and the strategies' expected order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from routing import engine, simulate
from routing.simulate import (
    SimDay,
    SimStaff,
    SimTask,
    StaffOutcome,
    TaskOutcome,
    compute_metrics,
    percentile,
)

TUESDAY = date(2025, 3, 4)
QUEUE, REVIEW = 10, 99
A, B = 1, 2

# --- The metrics on hand-built outcomes --------------------------------------------------------


def test_percentile_interpolates_between_ranks_like_percentile_cont():
    ages = [36, 0, 28, 0, 28]
    assert percentile(ages, 0.5) == 28
    assert percentile(ages, 0.9) == pytest.approx(32.8)  # rank 3.6: 28 + 0.6 * (36 - 28)
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([], 0.5) is None


def test_metrics_of_five_tasks_and_two_teams_by_hand():
    tasks = [
        TaskOutcome(1, arrival=0, start=10, priority=1, idle_while_waiting=False, worker_id=A),
        TaskOutcome(2, arrival=0, start=40, priority=1, idle_while_waiting=False, worker_id=B),
        TaskOutcome(3, arrival=5, start=5, priority=3, idle_while_waiting=False, worker_id=A),
        TaskOutcome(4, arrival=10, start=30, priority=3, idle_while_waiting=True, worker_id=B),
        # Not started that day: waits at least until 8:00 the next morning (minute 1920).
        TaskOutcome(
            5, arrival=900, start=None, priority=2, idle_while_waiting=True, worker_id=None
        ),
    ]
    staff = [
        StaffOutcome(A, frozenset({1}), busy_minutes=300, working_minutes=480),  # 0.625
        StaffOutcome(B, frozenset({1}), busy_minutes=150, working_minutes=480),  # 0.3125
        StaffOutcome(3, frozenset({2}), busy_minutes=240, working_minutes=480),  # 0.5
        StaffOutcome(4, frozenset({2}), busy_minutes=120, working_minutes=240),  # 0.5
        StaffOutcome(5, frozenset({3}), busy_minutes=400, working_minutes=480),  # team of one
        StaffOutcome(6, frozenset({1}), busy_minutes=0, working_minutes=0),  # not on shift
    ]

    m = compute_metrics(tasks, staff, next_day_start=1920)

    # Queue ages 10, 40, 0, 20, 1020 -> sorted 0, 10, 20, 40, 1020.
    assert m.queue_age_median_min == 20
    assert m.queue_age_p90_min == pytest.approx(40 + 0.6 * (1020 - 40))
    assert (m.urgent_tasks, m.urgent_within_30_min) == (2, 1)
    assert m.urgent_within_30_min_share == 0.5
    # Team 1: shares 0.625 and 0.3125, mean 0.46875, deviation 0.15625: CV 1/3.
    # Team 2: 0.5 and 0.5: CV 0. Weighted by size: (2 * 1/3 + 2 * 0) / 4.
    assert m.load_imbalance_cv == pytest.approx(1 / 6)
    assert m.idle_while_waiting_count == 2
    assert m.carried_over_count == 1


def test_metrics_without_urgent_tasks_or_teams_say_so():
    tasks = [TaskOutcome(1, 0, 3, priority=3, idle_while_waiting=False, worker_id=A)]
    staff = [StaffOutcome(A, frozenset({1}), busy_minutes=10, working_minutes=100)]
    m = compute_metrics(tasks, staff, next_day_start=1920)
    assert m.urgent_within_30_min_share is None
    assert m.load_imbalance_cv is None
    assert m.as_dict()["urgent_within_30_min_share"] is None


# --- A tiny day, traced by hand ----------------------------------------------------------------


def tiny_rules() -> engine.CompiledRuleSet:
    """One team queue; the request type names the task type; "hola" asks for Spanish."""
    return engine.compile_ruleset(
        engine.RuleSetSpec(
            version=1,
            task_types={
                "routine": engine.TaskTypeSpec("routine", "Routine", QUEUE, default_priority=3),
                "urgent": engine.TaskTypeSpec("urgent", "Urgent", QUEUE, default_priority=1),
            },
            queues={
                QUEUE: engine.QueueSpec(QUEUE, "Team", department_id=1),
                REVIEW: engine.QueueSpec(
                    REVIEW, "Needs review", department_id=1, kind="review", policy="pull_only"
                ),
            },
            review_queue_id=REVIEW,
            red_flag_queue_id=QUEUE,
            classification_rules=(
                engine.ClassificationRuleSpec(
                    1, "Spanish", order=1, phrases=("hola",), add_tags=("spanish",)
                ),
                engine.ClassificationRuleSpec(
                    2, "Urgent", order=2, request_types=("urgent",), set_task_type="urgent"
                ),
                engine.ClassificationRuleSpec(
                    3, "Routine", order=3, request_types=("routine",), set_task_type="routine"
                ),
            ),
            routing_rules=(
                engine.RoutingRuleSpec(
                    1,
                    "Spanish: a Spanish speaker",
                    QUEUE,
                    tags_any=("spanish",),
                    required_skill="spanish",
                    min_skill_level=2,
                ),
            ),
            red_flag_task_type="urgent",
        )
    )


def person(staff_id: int, *, on: tuple[float, float] = (0, 600), **skills: int) -> SimStaff:
    candidate = engine.CandidateSpec(
        staff_id=staff_id,
        name=f"Person {staff_id}",
        queue_ids=frozenset({QUEUE, REVIEW}),
        capacity=2,
        skills=skills,
    )
    return SimStaff(candidate, (on,))


def task(
    task_id: int,
    arrival: float,
    service: float,
    *,
    urgent: bool = False,
    spanish: bool = False,
) -> SimTask:
    kind = "urgent" if urgent else "routine"
    return SimTask(
        id=task_id,
        arrival=arrival,
        facts=engine.TaskFacts(
            key=f"t{task_id}",
            channel="api",
            subject="hola, una pregunta" if spanish else f"{kind} request",
            body="",
            local_now=datetime(2025, 3, 4, tzinfo=UTC) + timedelta(minutes=arrival),
            request_type=kind,
        ),
        true_queue_id=QUEUE,
        true_type=kind,
        service=service,
        true_priority=1 if urgent else 3,
        true_skill="spanish" if spanish else "",
        true_level=2 if spanish else 0,
        triage=1,
        review=2,
        handback=3,
    )


def tiny_day(staff: list[SimStaff], tasks: list[SimTask]) -> SimDay:
    coordinator = SimStaff(
        engine.CandidateSpec(staff_id=0, name="Coordinator", queue_ids=frozenset()), ((0, 600),)
    )
    return SimDay(
        day=TUESDAY,
        zone="UTC",
        ruleset=tiny_rules(),
        staff=tuple(staff),
        tasks=tuple(tasks),
        coordinator=coordinator,
        window=(0, 600),
        next_day_start=1440 + 480,
        seed=1,
    )


def five_tasks_two_people() -> SimDay:
    """A works from minute 0, B from minute 20; capacity 2 units each. Five tasks in the first
    five minutes; the third is urgent."""
    return tiny_day(
        [person(A), person(B, on=(20, 600))],
        [
            task(1, 0, 30),
            task(2, 1, 30),
            task(3, 2, 10, urgent=True),
            task(4, 3, 5),
            task(5, 4, 5),
        ],
    )


def starts(result: simulate.RunResult) -> dict[int, tuple[float | None, int | None]]:
    return {t.task_id: (t.start, t.worker_id) for t in result.tasks}


def flagged(result: simulate.RunResult) -> set[int]:
    return {t.task_id for t in result.tasks if t.idle_while_waiting}


def test_clinicdesk_on_the_tiny_day():
    result = simulate.simulate(five_tasks_two_people(), "clinicdesk")

    # 0: T1 -> A (B is off), starts. 1: T2 -> A's pile (A at 2/2). 2-4: T3-T5 wait in the
    # queue. 20: B arrives, the pass offers the queue urgent first: T3 -> B (starts), T4 -> B.
    # 30: A frees a unit: T5 -> A; A starts T2 (T5 is younger); B starts T4. 35: B is idle
    # while T5 waits in A's pile. 60: A starts T5.
    assert starts(result) == {
        1: (0, A),
        2: (30, A),
        3: (20, B),
        4: (30, B),
        5: (60, A),
    }
    assert flagged(result) == {5}
    m = result.metrics()
    assert m.queue_age_median_min == 27  # ages 0, 29, 18, 27, 56
    assert m.queue_age_p90_min == pytest.approx(29 + 0.6 * (56 - 29))
    assert m.urgent_within_30_min_share == 1.0
    assert m.idle_while_waiting_count == 1
    # A busy 65 of 600 minutes, B 15 of 580: for two people CV = (a - b) / (a + b).
    a, b = 65 / 600, 15 / 580
    assert m.load_imbalance_cv == pytest.approx((a - b) / (a + b))
    assert all(r.load_after <= r.capacity for r in result.assignments)


def test_inbox_order_on_the_tiny_day():
    result = simulate.simulate(five_tasks_two_people(), "inbox_order")

    # The coordinator reads T1..T5 oldest first, a minute each, and hands each to the only
    # person on duty, A, who works the pile in order. A is idle during T1's triage (minute
    # 0); B, idle from minute 20, sees T2-T5 waiting in A's pile.
    assert starts(result) == {
        1: (1, A),
        2: (31, A),
        3: (61, A),
        4: (71, A),
        5: (76, A),
    }
    assert flagged(result) == {1, 2, 3, 4, 5}
    m = result.metrics()
    assert m.queue_age_median_min == 59  # ages 1, 30, 59, 68, 72
    assert m.queue_age_p90_min == pytest.approx(68 + 0.6 * (72 - 68))
    assert m.urgent_within_30_min_share == 0.0
    assert m.load_imbalance_cv == pytest.approx(1.0)  # 80/600 and 0/580


def test_round_robin_on_the_tiny_day():
    result = simulate.simulate(five_tasks_two_people(), "round_robin")

    # Dealt in turn among those on duty: all to A before B arrives; B then idles beside it.
    assert starts(result) == {
        1: (0, A),
        2: (30, A),
        3: (60, A),
        4: (70, A),
        5: (75, A),
    }
    assert flagged(result) == {2, 3, 4, 5}
    m = result.metrics()
    assert m.queue_age_median_min == 58  # ages 0, 29, 58, 67, 71
    assert m.urgent_within_30_min_share == 0.0
    assert m.idle_while_waiting_count == 4


def spanish_day() -> SimDay:
    """A has no Spanish, B does. T1 goes to A, T2 to B, then a Spanish message arrives."""
    return tiny_day(
        [person(A), person(B, spanish=3)],
        [task(1, 0, 20), task(2, 1, 20), task(3, 2, 5, spanish=True)],
    )


def test_clinicdesk_waits_for_the_person_with_the_skill():
    result = simulate.simulate(spanish_day(), "clinicdesk")

    # A is idle from minute 20, but cannot take the Spanish message: it is not "waiting while
    # someone qualified is idle", and nobody hands it back.
    assert starts(result)[3] == (21, B)
    assert flagged(result) == set()
    assert result.metrics().handbacks == 0
    spanish = [r for r in result.assignments if r.task_id == 3]
    assert [(r.staff_id, r.required_skill, r.min_level, r.level) for r in spanish] == [
        (B, "spanish", 2, 3)
    ]


def test_round_robin_deals_without_skills_and_pays_a_hand_back():
    result = simulate.simulate(spanish_day(), "round_robin")

    # T3 is A's turn. A opens it at 20, passes it on (3 minutes) to B, who has been idle
    # since 21: it starts at 23, after one hand-back, and waited while B was idle.
    assert starts(result)[3] == (23, B)
    assert flagged(result) == {3}
    assert result.metrics().handbacks == 1


def unclear(task_id: int, arrival: float, service: float, *, true_queue: int) -> SimTask:
    """A message no rule can type: the engine sends it to Needs review (pull-only)."""
    base = task(task_id, arrival, service)
    facts = replace(base.facts, subject="a question", request_type="")
    return replace(base, facts=facts, true_queue_id=true_queue, true_type="")


def test_clinicdesk_idle_people_pull_needs_review_at_once_and_route_what_they_read():
    day = tiny_day(
        [person(A)],
        [unclear(1, 5, 4, true_queue=REVIEW), unclear(2, 20, 6, true_queue=QUEUE)],
    )
    result = simulate.simulate(day, "clinicdesk")

    # T1 truly belongs in Needs review: A, idle, pulls it on arrival and does it (5-9).
    # T2 belongs to the team: A pulls it at 20, reviews it (2 minutes), routes it to the team
    # queue, gets it (least loaded) and starts the work at 22.
    assert starts(result) == {1: (5, A), 2: (22, A)}
    assert [t.handbacks for t in result.tasks] == [0, 1]
    assert flagged(result) == set()


def test_the_same_day_gives_the_same_result():
    first = {s: simulate.simulate(five_tasks_two_people(), s) for s in simulate.STRATEGIES}
    again = {s: simulate.simulate(five_tasks_two_people(), s) for s in simulate.STRATEGIES}
    assert first == again


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="inbox_order, round_robin, clinicdesk"):
        simulate.simulate(five_tasks_two_people(), "fastest")


# --- The demo clinic's day ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_days(django_db_setup, django_db_blocker):
    """Two generated days against the demo clinic, built inside a transaction that is rolled
    back: the days are plain data, the database is left as it was."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from clinicdesk.demo import build_demo_clinic
    from clinicdesk.roles import ROLES, sync_role_permissions

    with django_db_blocker.unblock(), transaction.atomic():
        if Group.objects.filter(name__in=ROLES).count() < len(ROLES):
            sync_role_permissions(apps)
        build_demo_clinic()
        days = {seed: simulate.build_day(day=TUESDAY, seed=seed, tasks=400) for seed in (2025, 7)}
        again = simulate.build_day(day=TUESDAY, seed=2025, tasks=400)
        transaction.set_rollback(True)
    return days, again


def test_a_seed_gives_the_same_day_and_the_same_report(demo_days):
    days, again = demo_days
    assert [t.facts for t in days[2025].tasks] == [t.facts for t in again.tasks]
    report = simulate.summary(simulate.simulate_all(days[2025]))
    assert report == simulate.summary(simulate.simulate_all(again))
    assert report != simulate.summary(simulate.simulate_all(days[7]))


def test_the_report_has_every_metric_for_every_strategy(demo_days):
    days, _ = demo_days
    report = simulate.summary(simulate.simulate_all(days[2025]))
    assert list(report) == ["inbox_order", "round_robin", "clinicdesk"]
    for metrics in report.values():
        assert set(simulate.METRIC_KEYS) <= set(metrics)
        assert metrics["tasks"] == 400


def test_clinicdesk_never_assigns_without_the_skill_or_over_capacity(demo_days):
    days, _ = demo_days
    for day in days.values():
        result = simulate.simulate(day, "clinicdesk")
        assert result.assignments
        assert all(r.load_after <= r.capacity for r in result.assignments)
        assert all(r.level >= r.min_level for r in result.assignments)
        # The demo rules do ask for skills (Spanish, appeals, Medicare), so this is tested.
        assert any(r.required_skill for r in result.assignments)


def test_clinicdesk_reaches_urgent_work_sooner_than_the_inbox_and_idles_less(demo_days):
    days, _ = demo_days
    for day in days.values():
        report = simulate.summary(simulate.simulate_all(day))
        inbox, robin, desk = (report[s] for s in simulate.STRATEGIES)
        assert desk["urgent_within_30_min_share"] >= inbox["urgent_within_30_min_share"]
        assert desk["queue_age_median_min"] <= inbox["queue_age_median_min"]
        assert desk["idle_while_waiting_count"] <= min(
            inbox["idle_while_waiting_count"], robin["idle_while_waiting_count"]
        )


def test_the_days_shifts_agree_with_the_engines_shift_check(demo_days):
    """Who the simulation counts as on duty is who the engine would assign to."""
    days, _ = demo_days
    day = days[2025]
    assert any(len(s.on_shift) == 2 for s in day.staff)  # the on-call nurse's night
    for staff in day.staff:
        queue_id = min(staff.candidate.queue_ids)
        queue = engine.QueueSpec(queue_id, "q")
        candidate = replace(staff.candidate, availability="available", active_load=0)
        for minute in [*range(0, 1920, 10), 479.5, 480, 959.5, 960, 1019.5, 1020]:
            a = engine.choose_assignee(queue, "", 0, 1, [candidate], "", day.moment(minute))
            assert (a.assignee_id is not None) == staff.on_duty(minute), (staff.id, minute)


# --- The command --------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("simulate", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_command_prints_one_json_object_keyed_by_strategy_and_a_table():
    from clinicdesk.demo import build_demo_clinic

    build_demo_clinic()
    args = ("--day", "--seed", "11", "--date", "2025-03-04", "--tasks", "150")
    report = json.loads(run(*args, "--json"))
    assert set(report) == {"inbox_order", "round_robin", "clinicdesk"}
    for metrics in report.values():
        assert set(simulate.METRIC_KEYS) <= set(metrics)
    assert json.loads(run(*args, "--json")) == report

    table = run(*args)
    assert "Tue 2025-03-04, seed 11: 150 requests" in table
    assert "| urgent (P1) reached within 30 min" in table
    median = f"{report['clinicdesk']['queue_age_median_min']:.1f}"
    assert any(
        line.startswith("| queue age, median") and line.rstrip(" |").endswith(median)
        for line in table.splitlines()
    )


@pytest.mark.django_db
def test_command_on_a_closed_day_names_the_date_flag():
    from clinicdesk.demo import build_demo_clinic

    build_demo_clinic()
    with pytest.raises(CommandError, match=r"--date 2025-03-08 is a Saturday.*--date 2025-03-10"):
        run("--day", "--date", "2025-03-08")


@pytest.mark.django_db
def test_command_without_the_demo_clinic_says_how_to_build_it():
    with pytest.raises(CommandError, match=r"manage.py demo"):
        run("--day", "--date", "2025-03-04")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--day", "--date", "04/03/2025"), r"--date '04/03/2025' is not a date: .*YYYY-MM-DD"),
        (("--day", "--seed", "abc"), r"--seed 'abc' is not a whole number"),
        (("--day", "--tasks", "0"), r"--tasks '0' is not a whole number from 1"),
        (("--day", "--speed", "2"), r"unrecognized arguments: --speed 2.*Usage: .*--day"),
        ((), r"Pass --day"),
    ],
)
def test_command_refuses_bad_input_naming_the_flag(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
