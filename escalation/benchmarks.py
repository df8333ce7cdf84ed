"""Benchmark of the SLA escalation sweep (`escalation.services.sweep_batch`) at scale.

`sla_sweep_1m`, on the demo clinic in a scratch database, with one around-the-clock policy of
two steps (resolution in 4 hours: mark at risk at 75%, raise the priority at 100%):

- idle (nothing due, nothing changed: every open task has a current TaskSla row whose steps
  fire a day from now, and `sla_version = version`): median and p95 of one `sweep()` call at
  10k, 100k and 1M open tasks, and the ratio 1M / 10k (flat = close to 1); the plans
  (EXPLAIN ANALYZE) of the changed-task and due-row queries at 1M;
- at 1M, 10% due: every 10th open task not on hold gets both steps due a minute ago (100,000
  tasks, 200,000 steps), and `sweep_batch()` with its default batch runs until nothing is due:
  the whole sweep, measured; then the counts are checked (each step once, each priority raised
  once, one timeline event per step);
- breach → escalation recorded, measured end to end: tasks whose step comes due at moments
  spread evenly over a window of a few minutes, while `escalation.jobs.sweep_job` runs on the
  schedule's interval (60 s) in this process; each step's delay is the time from its due
  moment until the job run that fired it had returned (committed);
- a burst of 10k changed tasks (their `version` raised, as a claim or a hold does): the
  batches and seconds it takes to recompute them (business-time planning in Python);
- the floor: another 10% of the open tasks due, and only the two writes any design must make
  for them (an Escalation row per step, the raised priority), as plain SQL in two connections
  at once: the least the 10%-due sweep can take on this machine.

The tasks are generated inside PostgreSQL by `queues.benchmarks.bulk_load_tasks` (all open),
the TaskSla rows by one `INSERT … SELECT` over them, then VACUUM ANALYZE.

Sizes and the breach window can be made smaller for a quick look:
`CLINICDESK_BENCH_SLA_SIZES=10000,100000`, `CLINICDESK_BENCH_SLA_BREACH_WINDOW_S=60`.
"""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
from typing import Any

from django.db import connection

from clinicdesk.bench import BenchContext, median, percentile

SIZES = tuple(
    int(size)
    for size in os.environ.get("CLINICDESK_BENCH_SLA_SIZES", "10000,100000,1000000").split(",")
)
DUE_SHARE_MODULO = 10  # every 10th task is due: 10%
CHANGED_BURST = 10_000
DUE_BUDGET_S = float(os.environ.get("CLINICDESK_BENCH_SWEEP_BUDGET_S", "120"))
CHANGED_BUDGET_S = float(os.environ.get("CLINICDESK_BENCH_SWEEP_CHANGED_BUDGET_S", "120"))
# The `escalation-sweep` schedule's interval (clinicdesk setup_schedules); shorter only for a
# quick look at the benchmark itself.
SCHEDULE_INTERVAL_S = float(os.environ.get("CLINICDESK_BENCH_SLA_INTERVAL_S", "60"))
BREACH_WINDOW_S = float(os.environ.get("CLINICDESK_BENCH_SLA_BREACH_WINDOW_S", "180"))
BREACH_TASKS = 6_000  # due over the window: ~2,000 a minute

# A current SLA for every open task that has none: both steps pending, a day from now.
_TASKSLA_SQL = """
INSERT INTO escalation_tasksla (task_id, policy_id, task_version, next_step_at,
                                pending_step_ids, pending_fire_at, at_risk, computed_at)
SELECT t.id, %(policy)s, t.version, %(future)s, %(steps)s, ARRAY[%(future)s, %(later)s],
       false, %(now)s
  FROM queues_task t
  LEFT JOIN escalation_tasksla s ON s.task_id = t.id
 WHERE s.task_id IS NULL
"""
_SETTLE_SQL = """
UPDATE queues_task SET sla_version = version, claim_due_at = NULL,
       resolve_due_at = coalesce(received_at, created_at) + interval '240 minutes'
 WHERE NOT (sla_version = version)
"""


def _policy() -> tuple[int, list[int]]:
    from escalation.models import EscalationStep, SlaPolicy

    policy = SlaPolicy.objects.create(
        name="Bench: resolve in 4 hours", order=1, first_claim_minutes=None, resolution_minutes=240
    )
    target = EscalationStep.Target.RESOLUTION
    steps = [
        EscalationStep.objects.create(
            policy=policy, level=1, target=target, percent=75, action="mark_at_risk"
        ),
        EscalationStep.objects.create(
            policy=policy, level=2, target=target, percent=100, action="raise_priority"
        ),
    ]
    # The demo clinic's own policies stand aside: every task is under this one.
    SlaPolicy.objects.exclude(pk=policy.pk).update(is_active=False)
    return policy.pk, [step.pk for step in steps]


def _grow(total: int, policy_id: int, step_ids: list[int]) -> dict[str, int]:
    """Load open tasks until the table holds `total`, each with a current SLA whose steps
    fire a day from now: nothing due, nothing changed."""
    from django.utils import timezone

    from queues.benchmarks import bulk_load_tasks

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM queues_task")
        have = cursor.fetchone()[0]
    if total > have:
        bulk_load_tasks(total - have, closed_share=0.0)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _TASKSLA_SQL,
            {
                "policy": policy_id,
                "steps": step_ids,
                "future": now + timedelta(days=1),
                "later": now + timedelta(days=1, hours=1),
                "now": now,
            },
        )
        cursor.execute(_SETTLE_SQL)
        cursor.execute("VACUUM ANALYZE escalation_tasksla")
        cursor.execute("VACUUM ANALYZE queues_task")
        cursor.execute("SELECT status, count(*) FROM queues_task GROUP BY status")
        return dict(cursor.fetchall())


def _explain(sql_text: str, params: dict[str, Any]) -> str:
    from queues.benchmarks import summarize_plan

    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql_text}", params)
            plan = cursor.fetchone()[0]
        finally:
            cursor.execute("ROLLBACK")
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    return summarize_plan(plan[0])


def _idle_sweep(ctx: BenchContext) -> tuple[float, float]:
    from escalation import services

    def once() -> None:
        assert not services.sweep_batch().worked

    samples = ctx.measure_latencies(once, seconds=3.0, min_samples=50, max_samples=2000, warmup=5)
    return median(samples) * 1000, percentile(samples, 95) * 1000


def _sweep_until_done(budget_s: float) -> dict[str, Any]:
    """`sweep_batch()` until it finds nothing to do (or the budget runs out)."""
    from escalation import services

    fired = batches = recomputed = 0
    slowest = 0.0
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        result = services.sweep_batch()
        slowest = max(slowest, time.perf_counter() - started)
        batches += 1
        fired += result.fired
        recomputed += result.recomputed
        elapsed = time.perf_counter() - began
        if not result.worked or elapsed > budget_s:
            return {
                "fired": fired,
                "batches": batches,
                "recomputed": recomputed,
                "seconds": elapsed,
                "slowest_batch_s": slowest,
                "finished": not result.worked,
            }


def _count(sql_text: str, params: dict[str, Any] | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql_text, params or {})
        return cursor.fetchone()[0]


def _make_due(step_ids: list[int], *, remainder: int) -> int:
    """Both steps due a minute or two ago for every open task not on hold whose id leaves
    `remainder` modulo DUE_SHARE_MODULO (10% of them); how many."""
    from django.utils import timezone

    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE escalation_tasksla s SET next_step_at = %(first)s,"
            " pending_step_ids = %(steps)s, pending_fire_at = ARRAY[%(first)s, %(second)s]"
            "  FROM queues_task t WHERE t.id = s.task_id AND t.status <> 'on_hold'"
            "   AND mod(t.id, %(m)s) = %(r)s",
            {
                "first": now - timedelta(minutes=2),
                "second": now - timedelta(minutes=1),
                "steps": step_ids,
                "m": DUE_SHARE_MODULO,
                "r": remainder,
            },
        )
        due_rows = cursor.rowcount
        cursor.execute("VACUUM ANALYZE escalation_tasksla")
    return due_rows


def _due_sweep(figures: dict[str, Any], step_ids: list[int]) -> None:
    """10% of the open tasks with both steps due a minute ago; sweep until nothing is due."""
    from django.utils import timezone

    from escalation import services

    due_rows = _make_due(step_ids, remainder=0)
    events_before = _count("SELECT count(*) FROM queues_taskevent WHERE kind = 'escalated'")
    figures["due_tasks"] = due_rows
    figures["due_steps"] = 2 * due_rows
    figures["plan_due_query_with_due"] = _explain(
        services.selectors.DUE_SQL, {"now": timezone.now(), "limit": services.SWEEP_BATCH}
    )
    run = _sweep_until_done(DUE_BUDGET_S)
    figures["due_sweep_batch_size"] = services.SWEEP_BATCH
    figures["due_sweep_batches"] = run["batches"]
    figures["due_sweep_steps_fired"] = run["fired"]
    figures["due_sweep_total_s"] = round(run["seconds"], 2)
    figures["due_sweep_total_is"] = (
        "measured: until nothing was due" if run["finished"] else "NOT finished (budget)"
    )
    figures["target_due_sweep_total_s"] = "<= 2"
    figures["due_sweep_slowest_batch_s"] = round(run["slowest_batch_s"], 3)
    figures["due_sweep_steps_per_s"] = round(run["fired"] / run["seconds"]) if run["seconds"] else 0
    # What the sweep left behind: each step once, each task raised once, nothing due.
    figures["check_escalations"] = _count("SELECT count(*) FROM escalation_escalation")
    figures["check_escalated_events"] = (
        _count("SELECT count(*) FROM queues_taskevent WHERE kind = 'escalated'") - events_before
    )
    figures["check_tasks_at_risk"] = _count("SELECT count(*) FROM escalation_tasksla WHERE at_risk")
    # Loaded at version 1; a raise moves it to 2, and a second raise would move it to 3.
    figures["check_tasks_raised"] = _count("SELECT count(*) FROM queues_task WHERE version = 2")
    figures["check_tasks_raised_twice"] = _count(
        "SELECT count(*) FROM queues_task WHERE version > 2"
    )
    figures["check_still_due"] = _count(
        "SELECT count(*) FROM escalation_tasksla WHERE next_step_at <= now()"
    )
    figures["check_stale_after"] = _count(
        "SELECT count(*) FROM (" + services.selectors.STALE_TASKS_SQL + ") s", {"limit": 10**9}
    )


def _breach_to_recorded(figures: dict[str, Any], step_ids: list[int]) -> None:
    """Steps coming due spread over BREACH_WINDOW_S while the sweep job runs every
    SCHEDULE_INTERVAL_S; the delay of each from its due moment to the end of the job run that
    fired it (that run had committed it)."""
    from django.utils import timezone

    from escalation import jobs

    rng = random.Random(5)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.task_id FROM escalation_tasksla s JOIN queues_task t ON t.id = s.task_id"
            " WHERE t.status NOT IN ('on_hold', 'resolved') AND NOT s.at_risk"
            "   AND NOT EXISTS (SELECT 1 FROM escalation_escalation e WHERE e.task_id = t.id)"
            " ORDER BY s.task_id DESC LIMIT %(n)s",
            {"n": BREACH_TASKS},
        )
        task_ids = [row[0] for row in cursor.fetchall()]
    start = timezone.now() + timedelta(seconds=5)
    due_at = {
        task_id: start + timedelta(seconds=rng.uniform(0, BREACH_WINDOW_S)) for task_id in task_ids
    }
    with connection.cursor() as cursor:
        # Level 1 comes due in the window; level 2 an hour later, outside it.
        cursor.execute(
            "UPDATE escalation_tasksla s SET next_step_at = v.at, pending_step_ids = %(steps)s,"
            " pending_fire_at = ARRAY[v.at, v.at + interval '1 hour']"
            "  FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[]) AS v(id, at)"
            " WHERE s.task_id = v.id",
            {"ids": task_ids, "at": [due_at[i] for i in task_ids], "steps": step_ids},
        )
        cursor.execute("SELECT max(id) FROM escalation_escalation")
        last_id = cursor.fetchone()[0] or 0
    delays: list[float] = []
    runs: list[float] = []
    # The schedule's phase relative to the due moments is arbitrary: a random offset.
    next_run = time.time() + rng.uniform(0, SCHEDULE_INTERVAL_S)
    end = start.timestamp() + BREACH_WINDOW_S + SCHEDULE_INTERVAL_S
    while next_run <= end + SCHEDULE_INTERVAL_S:
        time.sleep(max(0.0, next_run - time.time()))
        began = time.perf_counter()
        jobs.sweep_job()
        returned = time.time()
        runs.append(time.perf_counter() - began)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, task_id FROM escalation_escalation WHERE id > %(last)s",
                {"last": last_id},
            )
            for escalation_id, task_id in cursor.fetchall():
                last_id = max(last_id, escalation_id)
                if task_id in due_at:
                    delays.append(returned - due_at[task_id].timestamp())
        next_run += SCHEDULE_INTERVAL_S
    figures["breach_steps_due"] = len(task_ids)
    figures["breach_steps_recorded"] = len(delays)
    figures["breach_window_s"] = BREACH_WINDOW_S
    figures["breach_job_runs"] = len(runs)
    figures["breach_job_run_median_s"] = round(median(runs), 3)
    figures["breach_job_run_max_s"] = round(max(runs), 3)
    figures["breach_to_recorded_p50_s"] = round(median(delays), 2)
    figures["breach_to_recorded_p99_s"] = round(percentile(delays, 99), 2)
    figures["breach_to_recorded_max_s"] = round(max(delays), 2)
    figures["target_breach_to_recorded_p99_s"] = f"<= {SCHEDULE_INTERVAL_S + 2}"
    figures["breach_to_recorded_is"] = (
        f"measured: sweep_job called every {SCHEDULE_INTERVAL_S} s in this process "
        "(the q2 broker's pick-up delay, poll = 1 s, not included)"
    )


def _changed_burst(figures: dict[str, Any]) -> None:
    """10,000 changed tasks (version raised, received 10 minutes ago so that nothing comes
    due): the recompute alone."""
    from django.utils import timezone

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE queues_task SET version = version + 1, received_at = %(fresh)s,"
            " created_at = %(fresh)s WHERE id IN ("
            " SELECT id FROM queues_task WHERE status <> 'on_hold' "
            " ORDER BY id DESC LIMIT %(n)s)",
            {"n": CHANGED_BURST, "fresh": timezone.now() - timedelta(minutes=10)},
        )
        cursor.execute("VACUUM ANALYZE queues_task")
    run = _sweep_until_done(CHANGED_BUDGET_S)
    figures["changed_10k_recomputed"] = run["recomputed"]
    figures["changed_10k_steps_fired"] = run["fired"]
    figures["changed_10k_batches"] = run["batches"]
    figures["changed_10k_s"] = round(run["seconds"], 2)
    figures["changed_10k_finished"] = "yes" if run["finished"] else "no (budget)"


# The floor under any sweep: only the two writes the issue itself requires of a due step,
# as plain SQL over all due tasks at once, no timeline event, no TaskSla bookkeeping, no
# notification. Each connection takes the tasks whose id / 10 falls in its share.
_FLOOR_CLAIM_SQL = """
INSERT INTO escalation_escalation (task_id, step_id, level, due_at, fired_at)
SELECT s.task_id, p.step_id, p.ord::int, p.fire_at, now()
  FROM escalation_tasksla s
 CROSS JOIN LATERAL unnest(s.pending_step_ids, s.pending_fire_at) WITH ORDINALITY
       AS p(step_id, fire_at, ord)
 WHERE s.next_step_at <= now() AND mod(s.task_id / 10, %(shares)s) = %(share)s
    ON CONFLICT (task_id, step_id) DO NOTHING
"""
_FLOOR_RAISE_SQL = """
UPDATE queues_task t SET priority = t.priority - 1, version = t.version + 1, updated_at = now()
  FROM escalation_tasksla s
 WHERE s.task_id = t.id AND s.next_step_at <= now() AND t.priority > 1
   AND mod(s.task_id / 10, %(shares)s) = %(share)s
"""
FLOOR_CONNECTIONS = 2


def _floor_writes(figures: dict[str, Any], step_ids: list[int]) -> None:
    """Another 10% of the open tasks (not on hold) with both steps due, and only the writes
    every design must make for them: one Escalation row per step (the exactly-once claim the
    issue prescribes) and the raised priority on the task, committed, in
    FLOOR_CONNECTIONS connections at once (one per CPU). What is left of the 2 s for the
    timeline events, the SLA bookkeeping and the notifications is 2 s minus this."""
    import threading

    import psycopg

    from clinicdesk.bench import conn_params

    figures["floor_due_tasks"] = _make_due(step_ids, remainder=DUE_SHARE_MODULO // 2)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE queues_task")
        cursor.execute("CHECKPOINT")
    database = connection.settings_dict["NAME"]
    results: list[tuple[int, int, float, float, float]] = []
    errors: list[BaseException] = []

    def share(number: int) -> None:
        try:
            with psycopg.connect(**conn_params(database)) as conn:
                params = {"shares": FLOOR_CONNECTIONS, "share": number}
                began = time.perf_counter()
                claimed = conn.execute(_FLOOR_CLAIM_SQL, params).rowcount
                inserted = time.perf_counter()
                raised = conn.execute(_FLOOR_RAISE_SQL, params).rowcount
                updated = time.perf_counter()
                conn.commit()
                done = time.perf_counter()
            results.append((claimed, raised, inserted - began, updated - inserted, done - updated))
        except BaseException as error:  # reported below
            errors.append(error)

    began = time.perf_counter()
    workers = [threading.Thread(target=share, args=(n,)) for n in range(FLOOR_CONNECTIONS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    figures["floor_connections"] = FLOOR_CONNECTIONS
    figures["floor_total_s"] = round(time.perf_counter() - began, 2)
    figures["floor_escalation_rows"] = sum(r[0] for r in results)
    figures["floor_tasks_raised"] = sum(r[1] for r in results)
    figures["floor_insert_s"] = round(max(r[2] for r in results), 2)
    figures["floor_raise_s"] = round(max(r[3] for r in results), 2)
    figures["floor_commit_s"] = round(max(r[4] for r in results), 2)


def sla_sweep_1m(ctx: BenchContext) -> dict[str, Any]:
    from django.utils import timezone

    from clinicdesk.demo import build_demo_clinic
    from escalation import selectors, services

    figures: dict[str, Any] = {}
    with ctx.scratch_database("sla_sweep"):
        build_demo_clinic()
        policy_id, step_ids = _policy()
        idle: dict[int, float] = {}
        for size in SIZES:
            began = time.perf_counter()
            by_status = _grow(size, policy_id, step_ids)
            ctx.log(f"{size:,} open tasks loaded in {time.perf_counter() - began:.1f} s")
            p50, p95 = _idle_sweep(ctx)
            label = f"{size // 1000}k"
            figures[f"idle_sweep_{label}_median_ms"] = round(p50, 3)
            figures[f"idle_sweep_{label}_p95_ms"] = round(p95, 3)
            figures[f"target_idle_sweep_{label}_median_ms"] = "<= 25"
            figures[f"target_idle_sweep_{label}_p95_ms"] = "<= 25"
            idle[size] = p50
        figures["open_tasks"] = sum(by_status.values())
        figures["open_tasks_on_hold"] = by_status.get("on_hold", 0)
        figures[f"idle_sweep_ratio_{SIZES[-1] // 1000}k_to_{SIZES[0] // 1000}k"] = round(
            idle[SIZES[-1]] / idle[SIZES[0]], 2
        )
        largest = f"{SIZES[-1] // 1000}k"
        figures[f"plan_stale_query_{largest}"] = _explain(
            selectors.STALE_TASKS_SQL, {"limit": services.SWEEP_BATCH}
        )
        figures[f"plan_due_query_{largest}"] = _explain(
            selectors.DUE_SQL, {"now": timezone.now(), "limit": services.SWEEP_BATCH}
        )

        ctx.log("10% due: sweeping until nothing is due")
        _due_sweep(figures, step_ids)
        ctx.log(f"breach → recorded over {BREACH_WINDOW_S:.0f} s (+ one interval)")
        _breach_to_recorded(figures, step_ids)
        ctx.log("10k changed tasks")
        _changed_burst(figures)
        ctx.log("the floor: the required writes alone, another 10% due")
        _floor_writes(figures, step_ids)
        connection.close()
    return figures


BENCHMARKS = {"sla_sweep_1m": sla_sweep_1m}
