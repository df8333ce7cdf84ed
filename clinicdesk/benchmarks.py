"""Benchmarks that run the whole routing path through Django on the demo clinic: intake →
classify → route → assign in one transaction, the 250-task demo morning, and a concurrency
storm of assigners. Each runs in a scratch database; `make bench` prints them beside W."""

from __future__ import annotations

import contextlib
import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from django.db import connection, connections

from clinicdesk.bench import BenchContext, median, percentile

CLINIC_ZONE = ZoneInfo("America/New_York")


def _weekday_morning() -> datetime:
    """A fixed Tuesday 10:00 in the clinic's zone: the demo staff are on shift, whatever the
    hour the benchmark runs at."""
    return datetime(2026, 11, 17, 10, 0, tzinfo=CLINIC_ZONE)


def _demo_clinic(extra_staff: int = 0, capacity: int | None = None) -> None:
    from clinicdesk.demo import build_demo_clinic

    build_demo_clinic()
    if extra_staff or capacity:
        _grow_staff(extra_staff, capacity)


def _grow_staff(extra: int, capacity: int | None) -> None:
    """Clone demo staff until the clinic has `extra` more people, spread over departments."""
    from django.contrib.auth import get_user_model

    from accounts.models import StaffProfile, StaffSkill
    from accounts.services import staff_set_departments

    profiles = list(StaffProfile.objects.select_related("user").order_by("id"))
    User = get_user_model()
    for n in range(extra):
        model = profiles[n % len(profiles)]
        user = User.objects.create(username=f"bench{n}", first_name="Bench", last_name=str(n))
        clone = StaffProfile.objects.create(
            user=user,
            capacity=model.capacity,
            availability=StaffProfile.Availability.AVAILABLE,
            shift_start=None,
            shift_end=None,
            time_zone=model.time_zone,
        )
        departments = [g.department for g in model.user.groups.filter(department__isnull=False)]
        staff_set_departments(profile=clone, departments=departments)
        StaffSkill.objects.bulk_create(
            StaffSkill(staff=clone, skill_id=s.skill_id, level=s.level) for s in model.skills.all()
        )
    if capacity:
        StaffProfile.objects.update(capacity=capacity)
    StaffProfile.objects.update(availability=StaffProfile.Availability.AVAILABLE)


def _items(n: int, seed: int = 7):
    from clinicdesk.demo_traffic import generate_morning

    return generate_morning(n, seed=seed)


def _submit(item, external_id: str, now: datetime):
    from routing.services import task_submit

    return task_submit(
        actor="client:bench",
        now=now,
        channel=item.channel,
        subject=item.subject,
        body=item.body,
        external_id=external_id,
        patient_mrn=item.patient_mrn,
        patient_name=item.patient_name,
        request_type=item.request_type,
        source_system=item.source_system,
        metadata=dict(item.metadata),
    )


def _client_process(slot: int, seconds: float, items, now, start_at: float, out) -> None:
    """One client in its own process, as a gunicorn worker would be: warm up, wait for the
    common start, submit tasks for `seconds`, send back the latencies."""
    from django.db import connections as child_connections

    try:
        _submit(items[slot], f"warm-{slot}", now)
        samples = _timed_loop(
            seconds,
            start_at,
            lambda n: _submit(items[(slot * 7919 + n) % len(items)], f"bench-{slot}-{n}", now),
        )
        out.send(("ok", samples))
    except BaseException as error:  # reported by the parent
        out.send(("error", repr(error)))
    finally:
        child_connections.close_all()
        out.close()


def _timed_loop(seconds: float, start_at: float, step) -> list[float]:
    """Wait for the clients' common start, then call `step(n)` for `seconds`: each latency."""
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    samples: list[float] = []
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        step(len(samples))
        samples.append(time.perf_counter() - began)
    return samples


def floor_write_sql(*, link_inbound: bool = False) -> str:
    """One statement that writes a task and its timeline as a copy of a template task (a new
    external id and patient), and with `link_inbound` links the raw payload to it: the rows
    intake must write, with nothing decided in Python. Parameters: external_id, patient,
    template (the task copied), inbound (the payload's id)."""
    from queues.models import Task, TaskEvent

    def columns(model, skip):
        return [f.column for f in model._meta.concrete_fields if f.column not in skip]

    task_columns = ", ".join(columns(Task, {"id", "external_id", "patient_mrn"}))
    event_columns = columns(TaskEvent, {"id", "task_id"})
    link = (
        """,
i AS (
  UPDATE queues_inboundmessage SET task_id = (SELECT id FROM t), status = 'parsed'
   WHERE id = %(inbound)s)"""
        if link_inbound
        else ""
    )
    return f"""
WITH t AS (
  INSERT INTO queues_task (external_id, patient_mrn, {task_columns})
  SELECT %(external_id)s, %(patient)s, {task_columns} FROM queues_task WHERE id = %(template)s
  RETURNING id),
e AS (
  INSERT INTO queues_taskevent (task_id, {", ".join(event_columns)})
  SELECT t.id, {", ".join("x." + c for c in event_columns)}
    FROM t, queues_taskevent x WHERE x.task_id = %(template)s){link}
SELECT id FROM t"""


def _floor_process(slot, seconds, params, template_id, queue_id, start_at, out) -> None:
    """A floor client: per task the routing staff read and the one write, prepared
    statements on plain psycopg, autocommit (one statement, one transaction)."""
    import psycopg

    from routing.selectors import CANDIDATES_SQL

    try:
        write = floor_write_sql()
        with psycopg.connect(**{**params, "prepare_threshold": 0}, autocommit=True) as conn:
            cursor = conn.cursor()

            def step(n: int) -> None:
                patient = f"FLOOR-{slot}-{n % 300}"
                cursor.execute(CANDIDATES_SQL, {"patient": patient, "queue_id": queue_id})
                cursor.fetchall()
                cursor.execute(
                    write,
                    {
                        "external_id": f"floor-{slot}-{n}",
                        "patient": patient,
                        "template": template_id,
                    },
                )
                cursor.fetchall()

            samples = _timed_loop(seconds, start_at, step)
        out.send(("ok", samples))
    except BaseException as error:  # reported by the parent
        out.send(("error", repr(error)))
    finally:
        out.close()


def _fork_all(target, args_list: list[tuple], who: str = "a client") -> list:
    """Run `target(*args, pipe)` in one forked process per `args`; each sends ("ok", detail)
    or ("error", what) through its pipe. Returns the details; raises on a failure."""
    import multiprocessing

    connections.close_all()  # children open their own
    fork = multiprocessing.get_context("fork")
    pipes, processes = [], []
    for args in args_list:
        receive, send = fork.Pipe(duplex=False)
        process = fork.Process(target=target, args=(*args, send))
        process.start()
        send.close()
        pipes.append(receive)
        processes.append(process)
    results = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join()
    failures = [detail for status, detail in results if status != "ok"]
    if failures:
        raise RuntimeError(f"{who} failed: {failures[0]}")
    return [detail for _, detail in results]


def _run_processes(target, clients: int, args_for) -> list[float]:
    """Start `clients` forked processes (`target(*args_for(slot), start_at, pipe)`), all
    starting together, and gather their latencies."""
    start_at = time.time() + 3.0
    details = _fork_all(target, [(*args_for(slot), start_at) for slot in range(clients)])
    return [sample for slot_samples in details for sample in slot_samples]


def intake_route_assign_8_clients(ctx: BenchContext) -> dict:
    """8 concurrent clients, each a process submitting tasks one transaction at a time.

    Then the floor under it (`floor_*`): the same 8 processes doing only what no intake can
    skip, on plain psycopg with no Django and no decisions: the staff read routing needs to
    pick a person, and one statement writing the task and its events (a copy of one the
    product wrote). What the target asks of the whole path can be read against it."""
    clients, seconds = 8, 8.0
    with ctx.scratch_database("intake_8") as database:
        _demo_clinic()
        items = _items(500)
        now = _weekday_morning()
        samples = _run_processes(_client_process, clients, lambda slot: (slot, seconds, items, now))
        from queues.models import Task

        committed = Task.objects.filter(external_id__startswith="bench-").count()
        template = (
            Task.objects.filter(external_id__startswith="bench-", waiting_for_capacity=True)
            .order_by("id")
            .first()
        ) or Task.objects.filter(external_id__startswith="bench-").order_by("id").first()
        floor = _run_processes(
            _floor_process,
            clients,
            lambda slot: (slot, seconds, database.params, template.pk, template.queue_id),
        )
        floor_committed = Task.objects.filter(external_id__startswith="floor-").count()
        connections.close_all()
    floor_rate = len(floor) / seconds
    return {
        "tasks_per_s": round(len(samples) / seconds, 1),
        "target_tasks_per_s": ">= 0.3 W",
        "p50_ms": round(median(samples) * 1000, 2),
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "target_p99_ms": 15,
        "tasks": len(samples),
        "committed_tasks": committed,
        "target_committed_tasks": f">= {len(samples)}",
        "clients": clients,
        "client_kind": "processes",
        "floor_tasks_per_s": round(floor_rate, 1),
        "floor_p50_ms": round(median(floor) * 1000, 2),
        "floor_p99_ms": round(percentile(floor, 99) * 1000, 2),
        "floor_committed_tasks": floor_committed,
        "target_floor_committed_tasks": f">= {len(floor)}",
    }


def demo_morning_250(ctx: BenchContext) -> dict:
    """The 250-task demo morning, end to end through intake, routing and assignment."""
    from clinicdesk import demo_traffic

    with ctx.scratch_database("morning_250"):
        _demo_clinic()
        items = demo_traffic.generate_morning(250)
        # Warm the routing snapshot as a running server would have it.
        from routing.selectors import routing_snapshot

        routing_snapshot()
        run = demo_traffic.submit_morning(items, now=_weekday_morning())
        total, in_triage, _ = demo_traffic.red_flag_counts(run)
        right, checked, _ = demo_traffic.accuracy(run)
        counts = {c.name: c.total for c in demo_traffic.queue_counts(run)}
        connections.close_all()
    return {
        "elapsed_s": round(run.seconds, 3),
        "target_elapsed_s": "<= 1",
        "routed": run.created,
        "red_flags": total,
        "red_flags_in_triage": in_triage,
        "target_red_flags_in_triage": f">= {total}",
        "accuracy_pct": round(100 * right / checked, 1) if checked else 0.0,
        "per_queue": counts,
    }


def _assigner_process(seed: int, total: int, counter, items, now, staff_ids, out) -> None:
    """One of the concurrent assigners, in its own process: submit a task (routed and pushed),
    and now and then resolve someone's task (freeing capacity that is offered to waiting
    work) or press Next task for someone."""
    from django.contrib.auth import get_user_model
    from django.db import connections as child_connections

    from queues.models import Task
    from queues.services import CapacityError, TaskStateError, task_claim_next
    from routing import services

    rng = random.Random(seed)
    users = {u.pk: u for u in get_user_model().objects.filter(pk__in=staff_ids)}
    done = 0
    try:
        while True:
            with counter.get_lock():
                n = counter.value
                counter.value += 1
            if n >= total:
                break
            _submit(items[n % len(items)], f"storm-{n}", now)
            done += 1
            roll = rng.random()
            if roll < 0.45:
                user_id = rng.choice(staff_ids)
                task_id = (
                    Task.objects.filter(assignee_id=user_id, status__in=Task.LOADED_STATUSES)
                    .values_list("id", flat=True)
                    .first()
                )
                if task_id is not None:
                    # Someone else may have resolved or moved it first.
                    with contextlib.suppress(TaskStateError):
                        services.task_resolve(task_id=task_id, actor=users[user_id], outcome="done")
            elif roll < 0.55:
                with contextlib.suppress(CapacityError):
                    task_claim_next(user=users[rng.choice(staff_ids)])
        out.send(("ok", done))
    except BaseException as error:  # reported by the parent
        out.send(("error", repr(error)))
    finally:
        child_connections.close_all()
        out.close()


def assigners_32_20k(ctx: BenchContext) -> dict:
    """32 concurrent assigners (processes) over 20,000 tasks and 40 staff, all at once:
    nobody may end over capacity, and no task may be lost or assigned twice."""
    import multiprocessing

    from accounts.models import StaffProfile
    from queues.models import Task, TaskEvent

    workers, total_tasks = 32, 20_000
    with ctx.scratch_database("assigners_32"):
        _demo_clinic()
        have = StaffProfile.objects.count()
        _grow_staff(max(0, 40 - have), capacity=None)
        staff_ids = list(StaffProfile.objects.values_list("user_id", flat=True))
        items = _items(1000, seed=11)
        now = _weekday_morning()
        counter = multiprocessing.get_context("fork").Value("i", 0)
        began = time.perf_counter()
        _fork_all(
            _assigner_process,
            [(seed, total_tasks, counter, items, now, staff_ids) for seed in range(1, workers + 1)],
            who="an assigner",
        )
        elapsed = time.perf_counter() - began

        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT count(*) FILTER (WHERE sp.active_load > sp.capacity),
                       count(*) FILTER (WHERE sp.active_load <> COALESCE(held.units, 0))
                  FROM accounts_staffprofile sp
                  LEFT JOIN (SELECT assignee_id, sum(weight) AS units FROM queues_task
                              WHERE status IN ('assigned', 'in_progress')
                              GROUP BY assignee_id) held ON held.assignee_id = sp.user_id
                """
            )
            over_capacity, load_mismatch = cursor.fetchone()
            cursor.execute(
                """
                SELECT count(*) FROM (
                    SELECT task_id FROM queues_taskevent
                     WHERE kind IN ('assigned', 'claimed')
                     GROUP BY task_id HAVING count(*) > 1) twice
                """
            )
            (assigned_twice,) = cursor.fetchone()
        stored = Task.objects.filter(external_id__startswith="storm-").count()
        assigned_events = TaskEvent.objects.filter(kind__in=["assigned", "claimed"]).count()
        resolved = Task.objects.filter(status="resolved").count()
        connections.close_all()
    return {
        "tasks": total_tasks,
        "tasks_stored": stored,
        "tasks_lost": total_tasks - stored,
        "target_tasks_lost": "<= 0",
        "people_over_capacity": over_capacity,
        "target_people_over_capacity": "<= 0",
        "load_mismatches": load_mismatch,
        "target_load_mismatches": "<= 0",
        "tasks_assigned_twice": assigned_twice,
        "target_tasks_assigned_twice": "<= 0",
        "assignments": assigned_events,
        "resolved": resolved,
        "staff": len(staff_ids),
        "workers": workers,
        "worker_kind": "processes",
        "tasks_per_s": round(total_tasks / elapsed, 1),
        "elapsed_s": round(elapsed, 1),
    }


# The dashboard is a package of this app, not an app of its own: its scenario is listed here.
from clinicdesk.dashboard.bench_scenarios import dashboard_30_days_1m  # noqa: E402

BENCHMARKS = {
    "intake_route_assign_8_clients": intake_route_assign_8_clients,
    "demo_morning_250": demo_morning_250,
    "assigners_32_20k_tasks_40_staff": assigners_32_20k,
    "dashboard_30_days_1m": dashboard_30_days_1m,
}
