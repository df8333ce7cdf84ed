"""Benchmarks that run the whole routing path through Django on the demo clinic: intake →
classify → route → assign in one transaction, the 250-task demo morning, and a concurrency
storm of assigners. Each runs in a scratch database; `make bench` prints them beside W."""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
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


def intake_route_assign_8_clients(ctx: BenchContext) -> dict:
    """8 concurrent clients, each submitting tasks one transaction at a time."""
    clients, seconds = 8, 8.0
    with ctx.scratch_database("intake_8"):
        _demo_clinic()
        items = _items(500)
        now = _weekday_morning()
        counter = itertools.count()
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors: list[BaseException] = []
        start_gate = threading.Barrier(clients + 1)

        def client(slot: int) -> None:
            try:
                # Warm the process-level caches once (rule snapshot, connection).
                _submit(items[slot], f"warm-{slot}", now)
                start_gate.wait()
                deadline = time.perf_counter() + seconds
                mine = latencies[slot]
                while time.perf_counter() < deadline:
                    n = next(counter)
                    began = time.perf_counter()
                    _submit(items[n % len(items)], f"bench-{n}", now)
                    mine.append(time.perf_counter() - began)
            except BaseException as error:  # reported below
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start_gate.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise errors[0]
        samples = [s for slot in latencies for s in slot]
        from queues.models import Task

        committed = Task.objects.filter(external_id__startswith="bench-").count()
        connections.close_all()
    rate = len(samples) / elapsed
    return {
        "tasks_per_s": round(rate, 1),
        "target_tasks_per_s": ">= 0.3 W",
        "p50_ms": round(median(samples) * 1000, 2),
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "target_p99_ms": 15,
        "tasks": len(samples),
        "committed_tasks": committed,
        "clients": clients,
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
        "seconds": round(run.seconds, 3),
        "target_seconds": 1.0,
        "routed": run.created,
        "red_flags": total,
        "red_flags_in_triage": in_triage,
        "target_red_flags_in_triage": f">= {total}",
        "accuracy_pct": round(100 * right / checked, 1) if checked else 0.0,
        "per_queue": counts,
    }


def assigners_32_20k(ctx: BenchContext) -> dict:
    """32 concurrent assigners over 20,000 tasks and 40 staff: submitting, resolving (which
    offers the freed capacity to waiting work) and pressing Next task, all at once."""
    from django.contrib.auth import get_user_model

    from accounts.models import StaffProfile
    from queues.models import Task, TaskEvent
    from queues.services import CapacityError, task_claim_next
    from routing import services

    workers, total_tasks = 32, 20_000
    with ctx.scratch_database("assigners_32"):
        _demo_clinic()
        have = StaffProfile.objects.count()
        _grow_staff(max(0, 40 - have), capacity=None)
        staff_ids = list(StaffProfile.objects.values_list("user_id", flat=True))
        users = {u.pk: u for u in get_user_model().objects.filter(pk__in=staff_ids)}
        items = _items(1000, seed=11)
        now = _weekday_morning()
        counter = itertools.count()
        errors: list[BaseException] = []
        rng_seed = itertools.count(1)

        def assigner() -> None:
            rng = random.Random(next(rng_seed))
            try:
                while True:
                    n = next(counter)
                    if n >= total_tasks:
                        break
                    _submit(items[n % len(items)], f"storm-{n}", now)
                    roll = rng.random()
                    if roll < 0.45:
                        _resolve_one(rng)
                    elif roll < 0.55:
                        with contextlib.suppress(CapacityError):
                            task_claim_next(user=users[rng.choice(staff_ids)])
            except BaseException as error:  # reported below
                errors.append(error)
            finally:
                connection.close()

        def _resolve_one(rng: random.Random) -> None:
            user_id = rng.choice(staff_ids)
            task_id = (
                Task.objects.filter(assignee_id=user_id, status__in=Task.LOADED_STATUSES)
                .values_list("id", flat=True)
                .first()
            )
            if task_id is None:
                return
            # Someone else may have resolved or moved it first.
            with contextlib.suppress(services.queues_services.TaskStateError):
                services.task_resolve(task_id=task_id, actor=users[user_id], outcome="done")

        threads = [threading.Thread(target=assigner) for _ in range(workers)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise errors[0]

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
        "target_tasks_lost": 0,
        "people_over_capacity": over_capacity,
        "target_people_over_capacity": 0,
        "load_mismatches": load_mismatch,
        "target_load_mismatches": 0,
        "tasks_assigned_twice": assigned_twice,
        "target_tasks_assigned_twice": 0,
        "assignments": assigned_events,
        "resolved": resolved,
        "staff": len(staff_ids),
        "workers": workers,
        "tasks_per_s": round(total_tasks / elapsed, 1),
        "seconds": round(elapsed, 1),
    }


BENCHMARKS = {
    "intake_route_assign_8_clients": intake_route_assign_8_clients,
    "demo_morning_250": demo_morning_250,
    "assigners_32_20k_tasks_40_staff": assigners_32_20k,
}
