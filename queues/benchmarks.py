"""Benchmarks of the staff work paths at scale, each at 10,000 and at 1,000,000 tasks in the
table (95% of them closed), on the demo clinic in a scratch database:

- `next_task_32_workers`: 32 people pressing *Next task* (`task_claim_next`) at once, each
  with their own connection: claims/s, p50/p99 per claim, double claims, the rate at 1M over
  the rate at 10k, and the plan of the claim SELECT. The same rounds run a second time as the
  very statements the service sends, without the ORM (`sql_*` figures: the difference is what
  the service's Python costs); then as the one claim statement with
  the person's queues read once (`floor_*`), and at 1M from pgbench's C client
  (`pgbench_floor_1m_*`): floors under any implementation. Workers are threads by default;
  `CLINICDESK_BENCH_CLAIM_WORKERS=processes` runs them as forked processes instead (on the
  two-CPU reference machine processes measured about half the rate of threads: 64 runnable
  processes on two CPUs preempt backends that hold locks);
- `queue_page_50_rows`: server time of the Queue page (and of its htmx rows fragment) for a
  member of the department, through Django's test `Client`.

The tasks are generated inside PostgreSQL (`INSERT … SELECT … FROM generate_series`), with the
table's secondary indexes dropped during the load and rebuilt after it, then VACUUM ANALYZE.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, connections

from clinicdesk.bench import BenchContext, median, percentile

SIZES = (10_000, 1_000_000)
CLOSED_SHARE = 0.95
WORKERS = 32
# Next task runs in rounds: every round the workers share a budget of claims; between rounds
# (outside the timed window) the harness resolves what was claimed and queues as many
# never-touched closed tasks again, so the table keeps its size and its 95/5 mix even at 10k,
# where the queue holds only ~400 tasks.
CLAIMS_PER_ROUND = 320
ROUNDS = 8
WARMUP_CLAIMS = 64
WORKER_CAPACITY = 10_000

# --- bulk loader ---------------------------------------------------------------------------

_CHANNELS = ["portal", "email", "phone", "fax", "fhir", "api", "form"]

# One pseudo-random number in [0, 1) per (row, salt), the same on every run.
_U = "((hashint8(i * 8 + {salt}) & 2147483647)::float8 / 2147483648.0)"

# Due to be claimed within: P1 15 minutes, P2 2 hours, P3 a day, P4 three days.
_DUE = (
    "CASE priority WHEN 1 THEN interval '15 minutes' WHEN 2 THEN interval '2 hours' "
    "WHEN 3 THEN interval '1 day' ELSE interval '3 days' END"
)

_LOAD_SQL = f"""
INSERT INTO queues_task (
    channel, external_id, priority, status, weight, min_skill_level, waiting_for_capacity,
    patient_mrn, patient_name, subject, body, request_type, source_system, tags, metadata,
    created_at, updated_at, received_at, first_assigned_at, first_claimed_at, resolved_at,
    claim_due_at, resolve_due_at, hold_reason, follow_up_at, outcome, rule_set_version,
    routed_by_rule_id, reroute_count, reopen_count, version, assignee_id, queue_id,
    task_type_id, site_id)
SELECT channel, '', priority, status, weight, 1, false,
       'MRN' || (100000 + mod(i, 90000)), '', 'Bench task ' || i, '', '', 'bench-load',
       '{{}}', '{{}}',
       created_at, created_at, created_at,
       CASE WHEN status <> 'queued' THEN created_at + interval '20 minutes' END,
       CASE WHEN status <> 'queued' THEN created_at + interval '20 minutes' END,
       CASE WHEN status = 'resolved' THEN created_at + interval '3 hours' END,
       created_at + {_DUE},
       created_at + 4 * {_DUE},
       CASE WHEN status = 'on_hold' THEN 'Waiting for the payer' ELSE '' END,
       NULL,
       CASE WHEN status = 'resolved' THEN 'done' ELSE '' END,
       NULL, NULL, 0, 0, 1,
       CASE WHEN status <> 'queued' THEN staff END,
       queue_id, task_type_id, %(site_id)s
  FROM (
    SELECT i, status,
           -- The type's default priority seven times in ten, one step either side otherwise
           -- (so priorities follow the queues, as classification makes them).
           CASE WHEN u < 0.70 THEN base_priority
                WHEN u < 0.85 THEN greatest(1, base_priority - 1)
                ELSE least(4, base_priority + 1) END AS priority,
           (%(channels)s::text[])[1 + mod(i, {len(_CHANNELS)})::int] AS channel,
           (%(type_ids)s::bigint[])[1 + ty] AS task_type_id,
           (%(queue_ids)s::bigint[])[1 + ty] AS queue_id,
           (%(weights)s::int[])[1 + ty] AS weight,
           (%(staff_ids)s::int[])[1 + mod(i, %(staff_count)s)::int] AS staff,
           -- Closed tasks are the older ones; the open ones are mostly recent, with a few old
           -- stragglers spread through the table.
           %(now)s - (%(total)s - i) * %(step)s - interval '1 hour' * {_U.format(salt=3)}
               AS created_at
      FROM (
        SELECT i, ty, u, (%(priorities)s::int[])[1 + ty] AS base_priority, status
          FROM (
            SELECT i,
                   floor({_U.format(salt=1)} * %(type_count)s)::int AS ty,
                   {_U.format(salt=2)} AS u,
                   CASE WHEN i > %(recent_from)s OR mod(i, 200) = 0 THEN
                        CASE WHEN mod(i * 7919, 20) < 16 THEN 'queued'
                             WHEN mod(i * 7919, 20) = 16 THEN 'assigned'
                             WHEN mod(i * 7919, 20) = 17 THEN 'in_progress'
                             ELSE 'on_hold' END
                        ELSE 'resolved' END AS status
              FROM generate_series(1, %(total)s::bigint) AS i
          ) AS draws
      ) AS base
  ) AS row_values
"""


@dataclass
class LoadResult:
    rows: int
    seconds: float
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return sum(count for status, count in self.by_status.items() if status != "resolved")


def _declared_index_sql() -> dict[str, str]:
    from django.db.models import UniqueConstraint

    from queues.models import Task

    editor = connection.schema_editor()
    statements = {index.name: str(index.create_sql(Task, editor)) for index in Task._meta.indexes}
    for constraint in Task._meta.constraints:
        if isinstance(constraint, UniqueConstraint) and constraint.condition is not None:
            statements[constraint.name] = str(constraint.create_sql(Task, editor))
    return statements


@contextlib.contextmanager
def _indexes_and_foreign_keys_dropped() -> Iterator[None]:
    """Drop the task table's secondary indexes and foreign keys for the load and put them back,
    each from its own definition, after it: building an index once and checking a foreign key
    with one join is far faster than keeping fifteen indexes and queueing four deferred
    checks per row. Only ever used in a scratch database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            " WHERE i.schemaname = current_schema() AND i.tablename = 'queues_task' "
            "   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            " WHERE conrelid = 'queues_task'::regclass AND contype = 'f'"
        )
        foreign_keys = cursor.fetchall()
        for name, _ in foreign_keys:
            cursor.execute(f'ALTER TABLE queues_task DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    # The indexes the model declares are rebuilt from Django's own SQL (as the migration made
    # them): PostgreSQL's deparsed text of a partial index's `IN (…)` predicate parses back
    # into a different, if equivalent, expression.
    declared = _declared_index_sql()
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '256MB'")
            for name, definition in indexes:
                cursor.execute(declared.get(name, definition))
            for name, definition in foreign_keys:
                cursor.execute(f'ALTER TABLE queues_task ADD CONSTRAINT "{name}" {definition}')


def bulk_load_tasks(total: int, *, closed_share: float = CLOSED_SHARE) -> LoadResult:
    """Fill the (scratch) database's task table with `total` tasks over the demo clinic's
    queues: `closed_share` resolved, the rest open (80% queued, 10% assigned or in progress to
    demo staff, 10% on hold). Run `build_demo_clinic()` first. Ends with VACUUM ANALYZE."""
    from django.utils import timezone

    from accounts.models import Site, StaffProfile
    from queues.models import TaskType

    if connection.in_atomic_block:
        raise RuntimeError("bulk_load_tasks runs VACUUM: call it outside atomic()")
    types = list(
        TaskType.objects.filter(default_queue__kind="work")
        .order_by("id")
        .values_list("id", "default_queue_id", "capacity_weight", "default_priority")
    )
    # Closed and held work belongs to the clinic's people, never to the benchmark's workers.
    staff = list(
        StaffProfile.objects.exclude(user__username__startswith="bench-worker-")
        .order_by("id")
        .values_list("user_id", flat=True)
    )
    if not types or not staff:
        raise RuntimeError("bulk_load_tasks needs the demo clinic: call build_demo_clinic()")
    site = Site.objects.order_by("id").first()
    open_share = 1 - closed_share
    # Most open tasks are the latest ones; 0.5% of the older ones are open too.
    recent = max(0, round(total * (open_share - 0.005) / 0.995))
    params = {
        "total": total,
        "recent_from": total - recent,
        "now": timezone.now(),
        "step": timezone.timedelta(days=180) / max(total, 1),
        "channels": _CHANNELS,
        "type_ids": [t[0] for t in types],
        "queue_ids": [t[1] for t in types],
        "weights": [t[2] for t in types],
        "priorities": [t[3] for t in types],
        "type_count": len(types),
        "staff_ids": staff,
        "staff_count": len(staff),
        "site_id": site.pk if site else None,
    }
    began = time.perf_counter()
    with _indexes_and_foreign_keys_dropped(), connection.cursor() as cursor:
        cursor.execute(_LOAD_SQL, params)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE queues_task")
        cursor.execute("SELECT status, count(*) FROM queues_task GROUP BY status")
        by_status = dict(cursor.fetchall())
    return LoadResult(
        rows=sum(by_status.values()), seconds=time.perf_counter() - began, by_status=by_status
    )


# --- the claim statement and its plan ------------------------------------------------------


def claim_select_sql() -> str:
    """The claim's `SELECT id … FOR UPDATE SKIP LOCKED LIMIT 1` for several queues, as the
    service's statement runs it (same text, `%(queue_ids)s` / `%(room)s` parameters)."""
    from queues.services import CLAIM_MANY_QUEUES_PICK_SQL

    return CLAIM_MANY_QUEUES_PICK_SQL


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


_JOIN_NODES = {"Nested Loop", "Hash Join", "Merge Join", "Hash", "Materialize", "Memoize"}


def summarize_plan(plan: dict[str, Any], *, table: str | None = None) -> str:
    """`Limit > LockRows > Index Scan using task_claimable (rows 1, buffers hit 5 read 0);
    0.06 ms` from the JSON of an EXPLAIN (ANALYZE, BUFFERS). With `table`, only the nodes
    that read that table (and the ones above the joins) are named."""
    parts = []
    for node in _plan_nodes(plan["Plan"]):
        if table and (
            node["Node Type"] in _JOIN_NODES
            or node.get("Relation Name", table) != table
            or (
                node.get("Index Name") and not node["Index Name"].startswith(("task_", f"{table}_"))
            )
        ):
            continue
        text = node["Node Type"]
        if node.get("Index Name"):
            text += f" using {node['Index Name']}"
        elif node.get("Relation Name"):
            text += f" on {node['Relation Name']}"
        if "Actual Rows" in node and node.get("Index Name"):
            hit = node.get("Shared Hit Blocks", 0)
            read = node.get("Shared Read Blocks", 0)
            text += f" (rows {node['Actual Rows']}, buffers hit {hit} read {read})"
        parts.append(text)
    summary = " > ".join(parts)
    if "Execution Time" in plan:
        summary += f"; {plan['Execution Time']:.3f} ms"
    return summary


def explain_claim(
    queue_ids: Sequence[int], room: int, *, analyze: bool = True, generic: bool = False
) -> dict[str, Any]:
    """The JSON plan of the claim SELECT for these queues and room. With `generic`, the plan
    PostgreSQL caches for the prepared statement after five runs (psycopg prepares it: see
    `server_side_binding` in the settings), forced with `plan_cache_mode`. With `analyze` the
    SELECT runs (and locks the row it finds until the enclosing transaction ends)."""
    select = claim_select_sql()
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with connection.cursor() as cursor:
        if not generic:
            cursor.execute(
                f"EXPLAIN ({options}) {select}", {"queue_ids": list(queue_ids), "room": room}
            )
            return cursor.fetchone()[0][0]
        prepared = select.replace("%(queue_ids)s", "$1").replace("%(room)s", "$2")
        # A utility statement cannot take bound parameters: the values (integers) are inlined.
        ids = ", ".join(str(int(queue_id)) for queue_id in queue_ids)
        cursor.execute(f"PREPARE bench_claim_probe (bigint[], integer) AS {prepared}")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(
            f"EXPLAIN ({options}) EXECUTE bench_claim_probe (ARRAY[{ids}]::bigint[], {int(room)})"
        )
        plan = cursor.fetchone()[0][0]
        cursor.execute("DEALLOCATE bench_claim_probe")
        return plan


def _claim_plans(queue_ids: Sequence[int], room: int) -> dict[str, Any]:
    """The claim SELECT's plans (one-off and generic) for a person who works every queue, and
    the worst of them for a person who works one queue, in transactions rolled back."""
    from django.db import transaction

    from queues.models import Queue

    def explain(ids: Sequence[int], generic: bool) -> dict[str, Any]:
        with transaction.atomic():
            plan = explain_claim(ids, room, generic=generic)
            transaction.set_rollback(True)
        return plan

    figures: dict[str, Any] = {}
    for name, generic in (("plan", False), ("plan_generic", True)):
        plan = explain(queue_ids, generic)
        nodes = list(_plan_nodes(plan["Plan"]))
        indexes = sorted({node["Index Name"] for node in nodes if node.get("Index Name")})
        figures[f"claim_{name}"] = summarize_plan(plan)
        figures[f"claim_{name}_index"] = ", ".join(indexes) or "none"
        # The pick walks task_claimable in claim order (no sort, no table scan); the EXISTS
        # that first asks whether any of the person's queues has work probes
        # task_claimable_by_queue, once.
        figures[f"claim_{name}_walks_task_claimable"] = int(
            "task_claimable" in indexes
            and set(indexes) <= {"task_claimable", "task_claimable_by_queue"}
            and not any(node["Node Type"] in {"Sort", "Seq Scan"} for node in nodes)
        )
    # One queue: the index is in claim order across all queues, so the scan passes (and
    # fetches from the heap) every more urgent queued task of the other queues first.
    for name, generic in (("one_queue", False), ("one_queue_generic", True)):
        worst: tuple[float, str] = (-1.0, "")
        for code, queue_id in Queue.objects.filter(kind=Queue.Kind.WORK).values_list("code", "id"):
            plan = explain([queue_id], generic)
            scan = list(_plan_nodes(plan["Plan"]))[-1]
            buffers = scan.get("Shared Hit Blocks", 0) + scan.get("Shared Read Blocks", 0)
            text = (
                f"{code}: {scan['Node Type']} {scan.get('Index Name', '')}, "
                f"{scan.get('Rows Removed by Filter', 0)} rows removed, {buffers} buffers, "
                f"{plan['Execution Time']:.2f} ms"
            )
            worst = max(worst, (plan["Execution Time"], text))
        figures[f"claim_{name}_worst_ms"] = round(worst[0], 3)
        figures[f"claim_{name}_worst"] = worst[1]
    return figures


# --- the demo clinic and its workers -------------------------------------------------------


def _demo_clinic() -> None:
    from clinicdesk.demo import build_demo_clinic

    build_demo_clinic()


def _make_workers(count: int, capacity: int = WORKER_CAPACITY) -> list[int]:
    """`count` agents on shift, available, members of every department, with a large capacity
    (set in the database: the form's limit of 100 is for people)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from accounts.models import Department, StaffProfile
    from accounts.services import staff_set_departments
    from clinicdesk.roles import AGENT

    User = get_user_model()
    departments = list(Department.objects.all())
    agent = Group.objects.filter(name=AGENT).first()
    ids = []
    for n in range(count):
        user = User.objects.create(username=f"bench-worker-{n:02}", first_name="Worker")
        if agent:
            user.groups.add(agent)
        profile = StaffProfile.objects.create(
            user=user,
            availability=StaffProfile.Availability.AVAILABLE,
            shift_start=None,
            shift_end=None,
        )
        staff_set_departments(profile=profile, departments=departments)
        ids.append(user.pk)
    StaffProfile.objects.filter(user_id__in=ids).update(capacity=capacity)
    return ids


# --- Next task: 32 workers -----------------------------------------------------------------


@dataclass
class RoundReport:
    slot: int
    round: int
    latencies: list[float]
    claimed: list[int]
    empty: int
    error: str | None = None


class _Budget:
    """A shared countdown of claims: each worker takes one before each press of Next task."""

    def __init__(self, make_value: Callable[..., Any]) -> None:
        self.value = make_value("i", 0)

    def reset(self, claims: int) -> None:
        with self.value.get_lock():
            self.value.value = claims

    def take(self) -> bool:
        with self.value.get_lock():
            if self.value.value <= 0:
                return False
            self.value.value -= 1
            return True


class _SqlClaimer:
    """*Next task* as the very statements `task_claim_next` sends, in the same order (each
    committed by itself, as there), on a plain psycopg connection: what the database can do
    once the ORM's Python is out of the way.

    Both flavors run prepared statements (psycopg prepares a statement on its fifth run). With
    `floor`, less than the product may do: the person's queues are read once, not on every
    press, so a claim is the one statement and its round trip: the least a claim can cost from
    Python on this machine, to tell what no tuning of the service can beat."""

    def __init__(self, user, database_name: str, *, floor: bool = False) -> None:
        import psycopg

        from clinicdesk.bench import conn_params

        self.user = user
        self.floor = floor
        self.connection = psycopg.connect(**conn_params(database_name), autocommit=True)
        self.queue_ids = self._queue_ids() if floor else None

    def _queue_ids(self) -> list[int]:
        from queues.services import WORKABLE_QUEUE_IDS_SQL

        with self.connection.cursor() as cursor:
            rows = cursor.execute(WORKABLE_QUEUE_IDS_SQL, {"user_id": self.user.pk})
            return [row[0] for row in rows]

    def claim(self) -> int | None:
        from django.utils import timezone

        from queues.services import claim_next_statement

        queue_ids = self.queue_ids if self.floor else self._queue_ids()
        sql, params = claim_next_statement(user=self.user, queue_ids=queue_ids, now=timezone.now())
        with self.connection.cursor() as cursor:
            row = cursor.execute(sql, params).fetchone()
            return row[3]

    def close(self) -> None:
        self.connection.close()


def _claim_worker(
    slot: int,
    user_id: int,
    database_name: str,
    rounds: int,
    flavor: str,
    budget: _Budget,
    start: Any,
    end: Any,
    reports: Any,
) -> None:
    """One person pressing Next task as fast as they can, round after round."""
    from django.contrib.auth import get_user_model

    from queues.services import task_claim_next

    connections["default"].settings_dict["NAME"] = database_name
    sql_claimer = None
    try:
        user = get_user_model().objects.get(pk=user_id)
        if flavor in ("sql", "floor"):
            sql_claimer = _SqlClaimer(user, database_name, floor=flavor == "floor")
            connections.close_all()
            press = sql_claimer.claim
        else:

            def press() -> int | None:
                task = task_claim_next(user=user)
                return None if task is None else task.pk

        for number in range(rounds):
            start.wait(timeout=300)
            latencies: list[float] = []
            claimed: list[int] = []
            empty = 0
            clock = time.perf_counter
            while budget.take():
                began = clock()
                task_id = press()
                latencies.append(clock() - began)
                if task_id is None:
                    empty += 1
                else:
                    claimed.append(task_id)
            end.wait(timeout=300)
            reports.put(RoundReport(slot, number, latencies, claimed, empty))
    except BaseException as error:
        reports.put(RoundReport(slot, -1, [], [], 0, error=f"{type(error).__name__}: {error}"))
        start.abort()
        end.abort()
    finally:
        if sql_claimer is not None:
            sql_claimer.close()
        connections.close_all()


def _between_rounds(worker_ids: Sequence[int], claimed: int, mark: int) -> dict[str, int]:
    """Check the round, then reset for the next one, outside the timed window.

    Checks: every task a worker holds has exactly one CLAIMED event, by that worker; every
    CLAIMED event of the round (id above `mark`) is on a task assigned to its actor; every
    worker's load equals the weights they hold. Then: resolve what was claimed, give the
    workers their capacity back, and queue as many never-touched closed tasks again (loaded
    tasks are at version 1 and have no events; a claimed one never returns to version 1).
    """
    from django.utils import timezone

    now = timezone.now()
    workers = list(worker_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM queues_task t
             WHERE t.status = 'assigned' AND t.assignee_id = ANY(%(workers)s)
               AND (SELECT count(*) FROM queues_taskevent e
                     WHERE e.task_id = t.id AND e.kind = 'claimed'
                       AND e.actor_id = t.assignee_id) <> 1
            """,
            {"workers": workers},
        )
        (held_wrongly,) = cursor.fetchone()
        cursor.execute(
            """
            SELECT count(*), COALESCE(max(e.id), %(mark)s)
              FROM queues_taskevent e JOIN queues_task t ON t.id = e.task_id
             WHERE e.kind = 'claimed' AND e.id > %(mark)s
               AND (t.status <> 'assigned' OR t.assignee_id IS DISTINCT FROM e.actor_id)
            """,
            {"mark": mark},
        )
        (lost_claims, _) = cursor.fetchone()
        cursor.execute(
            """
            SELECT count(*) FROM accounts_staffprofile sp
              LEFT JOIN (SELECT assignee_id, sum(weight) AS units FROM queues_task
                          WHERE status IN ('assigned', 'in_progress')
                            AND assignee_id = ANY(%(workers)s)
                          GROUP BY assignee_id) held ON held.assignee_id = sp.user_id
             WHERE sp.user_id = ANY(%(workers)s)
               AND sp.active_load <> COALESCE(held.units, 0)
            """,
            {"workers": workers},
        )
        (load_mismatches,) = cursor.fetchone()
        cursor.execute("SELECT COALESCE(max(id), 0) FROM queues_taskevent")
        (next_mark,) = cursor.fetchone()
        cursor.execute(
            """
            UPDATE queues_task SET status = 'resolved', resolved_at = %(now)s,
                   outcome = 'bench', version = version + 1, updated_at = %(now)s
             WHERE status = 'assigned' AND assignee_id = ANY(%(workers)s)
            """,
            {"now": now, "workers": workers},
        )
        resolved = cursor.rowcount
        cursor.execute(
            "UPDATE accounts_staffprofile SET active_load = 0 WHERE user_id = ANY(%s)",
            [workers],
        )
        cursor.execute(
            """
            UPDATE queues_task t
               SET status = 'queued', assignee_id = NULL, resolved_at = NULL, outcome = '',
                   first_assigned_at = NULL, first_claimed_at = NULL,
                   claim_due_at = %(now)s + (t.claim_due_at - t.created_at),
                   version = 2, updated_at = %(now)s
             WHERE t.id IN (SELECT id FROM queues_task
                             WHERE status = 'resolved' AND version = 1 LIMIT %(count)s)
            """,
            {"now": now, "count": claimed},
        )
        requeued = cursor.rowcount
        cursor.execute("VACUUM queues_task")
    return {
        "wrong_assignee": held_wrongly + lost_claims,
        "load_mismatches": load_mismatches,
        "resolved": resolved,
        "requeued": requeued,
        "mark": next_mark,
    }


def _double_claims() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM (SELECT task_id FROM queues_taskevent
                                           WHERE kind = 'claimed'
                                           GROUP BY task_id HAVING count(*) > 1) twice),
                   (SELECT count(*) FROM queues_taskevent WHERE kind = 'claimed')
            """
        )
        twice, events = cursor.fetchone()
    return {"tasks_with_two_claimed_events": twice, "claimed_events": events}


@dataclass
class ClaimRun:
    claims: int
    seconds: float
    latencies: list[float]
    all_claims: int  # with the warm-up round
    empty: int
    duplicate_ids: int
    wrong_assignee: int
    load_mismatches: int
    requeued: int

    @property
    def rate(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


def _run_claim_rounds(
    worker_ids: Sequence[int],
    database_name: str,
    *,
    mode: str = "threads",
    flavor: str = "service",
    rounds: int = ROUNDS,
    per_round: int = CLAIMS_PER_ROUND,
    warmup: int = WARMUP_CLAIMS,
    seen: set[int] | None = None,
) -> ClaimRun:
    """Round 0 warms up (connections, prepared statements), then `rounds` timed rounds of
    `per_round` claims shared by the workers. `mode` is "threads" (one connection each) or
    "processes" (fork: one process and connection per worker, free of Python's GIL)."""
    from django.test.utils import override_settings

    total_rounds = rounds + 1
    if mode == "processes":
        context = multiprocessing.get_context("fork")
        budget = _Budget(context.Value)
        start = context.Barrier(len(worker_ids) + 1)
        end = context.Barrier(len(worker_ids) + 1)
        reports: Any = context.Queue()
        spawn: Callable[..., Any] = context.Process
    elif mode == "threads":
        budget = _Budget(lambda kind, value: _LockedValue(value))
        start = threading.Barrier(len(worker_ids) + 1)
        end = threading.Barrier(len(worker_ids) + 1)
        reports = queue_module.Queue()
        spawn = threading.Thread
    else:
        raise ValueError(f"mode must be 'processes' or 'threads', not {mode!r}")

    timed: list[float] = []
    latencies: list[float] = []
    seen = set() if seen is None else seen  # task ids claimed so far in this database
    claims = all_claims = duplicates = empty = wrong = mismatches = requeued = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(max(id), 0) FROM queues_taskevent")
        (mark,) = cursor.fetchone()
    # Workers run without DEBUG's query log, as a server does.
    with override_settings(DEBUG=False):
        connections.close_all()  # nothing open may cross the fork
        workers = [
            spawn(
                target=_claim_worker,
                args=(
                    slot,
                    user_id,
                    database_name,
                    total_rounds,
                    flavor,
                    budget,
                    start,
                    end,
                    reports,
                ),
                daemon=True,
            )
            for slot, user_id in enumerate(worker_ids)
        ]
        for worker in workers:
            worker.start()
        try:
            for number in range(total_rounds):
                budget.reset(warmup if number == 0 else per_round)
                _wait(start, reports)
                began = time.perf_counter()
                _wait(end, reports)
                elapsed = time.perf_counter() - began
                round_claims = 0
                for _ in worker_ids:
                    report = _report(reports)
                    round_claims += len(report.claimed)
                    duplicates += sum(1 for task_id in report.claimed if task_id in seen)
                    seen.update(report.claimed)
                    if number:
                        latencies.extend(report.latencies)
                        empty += report.empty
                all_claims += round_claims
                if number:
                    timed.append(elapsed)
                    claims += round_claims
                checks = _between_rounds(worker_ids, round_claims, mark)
                mark = checks["mark"]
                wrong += checks["wrong_assignee"]
                mismatches += checks["load_mismatches"]
                if number:
                    requeued += checks["requeued"]
        finally:
            start.abort()
            end.abort()
            for worker in workers:
                worker.join(timeout=30)
    return ClaimRun(
        claims=claims,
        seconds=sum(timed),
        latencies=latencies,
        all_claims=all_claims,
        empty=empty,
        duplicate_ids=duplicates,
        wrong_assignee=wrong,
        load_mismatches=mismatches,
        requeued=requeued,
    )


class _LockedValue:
    """`multiprocessing.Value`'s interface for threads."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


def _report(reports: Any) -> RoundReport:
    report = reports.get(timeout=300)
    if report.error:
        raise RuntimeError(f"worker {report.slot} failed: {report.error}")
    return report


def _wait(barrier: Any, reports: Any) -> None:
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        with contextlib.suppress(queue_module.Empty):
            while True:
                report = reports.get(timeout=1)
                if report.error:
                    raise RuntimeError(f"worker {report.slot} failed: {report.error}") from None
        raise


@dataclass
class _Side:
    """One of the two databases a scenario compares (10k and 1M tasks)."""

    label: str
    database: str
    figures: dict[str, Any]
    worker_ids: list[int] = field(default_factory=list)
    runs: dict[str, list[ClaimRun]] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)


def _use_database(name: str) -> None:
    """Point Django's `default` connection at another scratch database (between runs)."""
    from django.contrib.contenttypes.models import ContentType
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name
    ContentType.objects.clear_cache()
    for alias in caches:
        if isinstance(caches[alias], LocMemCache):
            caches[alias].clear()


def _claim_setup(ctx: BenchContext, total: int, label: str, database: str) -> _Side:
    """The demo clinic, 32 workers and `total` tasks in the current database, and the plans
    of the claim SELECT there."""
    from queues.models import Queue

    _demo_clinic()
    worker_ids = _make_workers(WORKERS)
    load = bulk_load_tasks(total)
    ctx.log(f"{total:,} tasks loaded in {load.seconds:.1f} s: {load.by_status}")
    figures: dict[str, Any] = {
        "load_s": round(load.seconds, 2),
        "queued_at_start": load.by_status.get("queued", 0),
        "open_at_start": load.open,
    }
    queue_ids = list(Queue.objects.filter(is_active=True).values_list("id", flat=True))
    figures.update(_claim_plans(queue_ids, WORKER_CAPACITY))
    return _Side(label, database, figures, worker_ids, {"service": [], "sql": [], "floor": []})


def _claim_figures(side: _Side) -> dict[str, Any]:
    figures = side.figures
    for flavor, runs in side.runs.items():
        prefix = {"service": "", "sql": "sql_", "floor": "floor_"}[flavor]
        claims = sum(run.claims for run in runs)
        seconds = sum(run.seconds for run in runs)
        latencies = [sample for run in runs for sample in run.latencies]
        figures.update(
            {
                f"{prefix}claims": claims,
                f"{prefix}claims_per_s": round(claims / seconds, 1) if seconds else 0.0,
                f"{prefix}p50_ms": round(median(latencies) * 1000, 2),
                f"{prefix}p99_ms": round(percentile(latencies, 99) * 1000, 2),
                f"{prefix}empty_presses": sum(run.empty for run in runs),
            }
        )
    every_run = [run for runs in side.runs.values() for run in runs]
    figures["claimed_events_mismatch"] = figures["claimed_events"] - sum(
        run.all_claims for run in every_run
    )
    figures["duplicate_task_ids"] = sum(run.duplicate_ids for run in every_run)
    figures["wrong_assignee"] = sum(run.wrong_assignee for run in every_run)
    figures["load_mismatches"] = sum(run.load_mismatches for run in every_run)
    return figures


PGBENCH_FLOOR_CLAIMS = 9_600
_SENTINEL_USER_ID = 987_654_321


def _pgbench_floor(side: _Side, clients: int = WORKERS) -> dict[str, Any]:
    """The claim statement alone, run by PostgreSQL's own C client: `clients` pgbench
    connections (prepared, `-j 2`), client n claiming as worker n, each pressing again as soon
    as it has its answer, `PGBENCH_FLOOR_CLAIMS` claims in all; latencies from pgbench's
    per-transaction log. No Python anywhere: what the machine does with the statement itself,
    a floor under any implementation of Next task."""
    import glob
    import tempfile

    import psycopg
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from clinicdesk.bench import run_pgbench
    from queues.services import claim_next_statement, workable_queue_ids

    ids = sorted(side.worker_ids)[:clients]
    if ids[-1] - ids[0] != len(ids) - 1:
        raise RuntimeError("the pgbench floor needs the workers' ids in one run")
    first = get_user_model().objects.get(pk=ids[0])
    sql, params = claim_next_statement(
        user=first, queue_ids=workable_queue_ids(first), now=timezone.now()
    )
    # The worker's id (the staff row, the assignee, the event's actor) becomes pgbench's
    # :uid; every other value is inlined as the service would bind it.
    params = {
        key: _SENTINEL_USER_ID if value == first.pk and key != "queue_id" else value
        for key, value in params.items()
    }
    with psycopg.ClientCursor(connection.connection) as cursor:
        text = cursor.mogrify(sql, params)
    text = " ".join(text.replace(str(_SENTINEL_USER_ID), ":uid").split())
    before = _double_claims()["claimed_events"]
    with tempfile.TemporaryDirectory(prefix="claim-floor-") as folder:
        script = os.path.join(folder, "claim.sql")
        with open(script, "w") as out:
            out.write(f"\\set uid {ids[0]} + :client_id\n{text};\n")
        output = run_pgbench(
            [
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                "2",
                "-t",
                str(PGBENCH_FLOOR_CLAIMS // clients),
                "-f",
                script,
                "-l",
                f"--log-prefix={os.path.join(folder, 'latency')}",
            ],
            dbname=side.database,
            timeout=600,
        )
        latencies = []
        for path in glob.glob(os.path.join(folder, "latency*")):
            with open(path) as log:
                latencies.extend(int(line.split()[2]) / 1_000_000 for line in log)
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
    after = _double_claims()
    return {
        "pgbench_floor_claims_per_s": round(float(tps.group(1)), 1) if tps else 0.0,
        "pgbench_floor_p50_ms": round(median(latencies) * 1000, 2),
        "pgbench_floor_p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "pgbench_floor_claims": after["claimed_events"] - before,
        "pgbench_floor_tasks_claimed_twice": after["tasks_with_two_claimed_events"],
    }


# The two sizes take turns, A B B A, so that a machine that gets busier or quieter during the
# run moves both alike and the ratio between them stays fair.
_TURNS = (0, 1, 1, 0)


def _claim_turns(ctx: BenchContext, sides: Sequence[_Side], mode: str) -> None:
    """Through `task_claim_next` (the figures the targets apply to), then as the same SQL
    statements without the ORM (what the database can do): each size in two runs of half the
    rounds, turn about."""
    for flavor in ("service", "sql", "floor"):
        for turn in _TURNS:
            side = sides[turn]
            _use_database(side.database)
            run = _run_claim_rounds(
                side.worker_ids,
                side.database,
                mode=mode,
                flavor=flavor,
                rounds=ROUNDS // 2,
                seen=side.seen,
            )
            side.runs[flavor].append(run)
            ctx.log(f"{side.label} {flavor}: {run.claims} claims at {run.rate:.0f}/s")
    for side in sides:
        _use_database(side.database)
        side.figures.update(_double_claims())
    connections.close_all()


def next_task_32_workers(ctx: BenchContext, mode: str | None = None) -> dict[str, Any]:
    """32 workers, one connection each, pressing Next task over the queued tasks
    with 10,000 and with 1,000,000 tasks in the table (95% closed)."""
    mode = mode or os.environ.get("CLINICDESK_BENCH_CLAIM_WORKERS", "threads")
    with ctx.scratch_database("next_task_10k") as first:
        small_side = _claim_setup(ctx, SIZES[0], "10k", first.name)
        with ctx.scratch_database("next_task_1m") as second:
            large_side = _claim_setup(ctx, SIZES[1], "1m", second.name)
            _claim_turns(ctx, (small_side, large_side), mode)
            _use_database(large_side.database)
            floor = _pgbench_floor(large_side)
            ctx.log(f"1m pgbench floor: {floor}")
            connections.close_all()
    small, large = _claim_figures(small_side), _claim_figures(large_side)
    double = sum(
        side["duplicate_task_ids"] + side["tasks_with_two_claimed_events"] + side["wrong_assignee"]
        for side in (small, large)
    )

    def ratio(key: str) -> float:
        return round(large[key] / small[key], 3) if small[key] else 0.0

    # Names end in their unit (`_per_s`, `_ms`), so that the harness knows which way is better.
    return {
        "claims_10k_per_s": small["claims_per_s"],
        "target_claims_10k_per_s": ">= 1000",
        "claims_1m_per_s": large["claims_per_s"],
        "target_claims_1m_per_s": ">= 1000",
        "claim_p50_10k_ms": small["p50_ms"],
        "claim_p99_10k_ms": small["p99_ms"],
        "target_claim_p99_10k_ms": "<= 25",
        "claim_p50_1m_ms": large["p50_ms"],
        "claim_p99_1m_ms": large["p99_ms"],
        "target_claim_p99_1m_ms": "<= 25",
        "rate_1m_over_10k": ratio("claims_per_s"),
        "target_rate_1m_over_10k": ">= 0.8",
        "double_claims": double,
        "target_double_claims": "== 0",
        "load_mismatches": small["load_mismatches"] + large["load_mismatches"],
        "target_load_mismatches": "== 0",
        "claimed_events_mismatch": small["claimed_events_mismatch"]
        + large["claimed_events_mismatch"],
        "target_claimed_events_mismatch": "== 0",
        # The same statements without the ORM: what the database does (no targets).
        "sql_claims_10k_per_s": small["sql_claims_per_s"],
        "sql_claims_1m_per_s": large["sql_claims_per_s"],
        "sql_claim_p99_10k_ms": small["sql_p99_ms"],
        "sql_claim_p99_1m_ms": large["sql_p99_ms"],
        "sql_rate_1m_over_10k": ratio("sql_claims_per_s"),
        # Below any Python: the claim statement from pgbench's C client, 32 connections, 1M.
        **{key.replace("pgbench_floor_", "pgbench_floor_1m_"): v for key, v in floor.items()},
        # The floor: one prepared statement a claim, the queues read once (no targets).
        "floor_claims_10k_per_s": small["floor_claims_per_s"],
        "floor_claims_1m_per_s": large["floor_claims_per_s"],
        "floor_claim_p99_10k_ms": small["floor_p99_ms"],
        "floor_claim_p99_1m_ms": large["floor_p99_ms"],
        # The claim SELECT for a person who works every queue.
        "claim_index_1m": large["claim_plan_index"],
        "claim_walks_task_claimable_1m": large["claim_plan_walks_task_claimable"],
        "target_claim_walks_task_claimable_1m": "== 1",
        "claim_generic_walks_task_claimable_1m": large["claim_plan_generic_walks_task_claimable"],
        "target_claim_generic_walks_task_claimable_1m": "== 1",
        "claim_plan_1m": large["claim_plan"],
        "claim_plan_generic_1m": large["claim_plan_generic"],
        # ... and for a person who works one queue (no target: a finding, see the docs).
        "claim_one_queue_worst_10k_ms": small["claim_one_queue_worst_ms"],
        "claim_one_queue_worst_1m_ms": large["claim_one_queue_worst_ms"],
        "claim_one_queue_worst_1m": large["claim_one_queue_worst"],
        "claim_one_queue_generic_worst_10k_ms": small["claim_one_queue_generic_worst_ms"],
        "claim_one_queue_generic_worst_1m_ms": large["claim_one_queue_generic_worst_ms"],
        "claim_one_queue_generic_worst_1m": large["claim_one_queue_generic_worst"],
        "workers": WORKERS,
        "mode": f"{mode} (fork)" if mode == "processes" else mode,
        "10k": {k: v for k, v in small.items() if not k.startswith("claim_")},
        "1m": {k: v for k, v in large.items() if not k.startswith("claim_")},
    }


# --- the Queue page ------------------------------------------------------------------------


@dataclass
class _PageSide:
    label: str
    database: str
    client: Any
    page_url: str
    rows_url: str
    figures: dict[str, Any]
    page: list[float] = field(default_factory=list)
    rows: list[float] = field(default_factory=list)


def _page_setup(ctx: BenchContext, total: int, label: str, database: str) -> _PageSide:
    """The demo clinic and `total` tasks in the current database, and a client logged in as a
    member of the department of the queue with the most open tasks."""
    from django.contrib.auth import get_user_model
    from django.db.models import Count, Q
    from django.test import Client
    from django.urls import reverse

    from queues.models import Queue, Task

    _demo_clinic()
    load = bulk_load_tasks(total)
    ctx.log(f"{total:,} tasks loaded in {load.seconds:.1f} s")
    busiest = (
        Queue.objects.filter(kind=Queue.Kind.WORK)
        .annotate(open=Count("tasks", filter=Q(tasks__status__in=Task.OPEN_STATUSES)))
        .order_by("-open", "id")
        .first()
    )
    # A member of the queue's department, as the page's users are.
    member = (
        get_user_model()
        .objects.filter(groups=busiest.department.group, staff__isnull=False)
        .order_by("id")
        .first()
    )
    if member is None:
        raise RuntimeError(f"nobody in the demo works {busiest}")
    client = Client()
    client.force_login(member)  # the session lives in this database
    page_url = reverse("queues:queue", args=[busiest.pk])
    response = client.get(page_url)
    if response.status_code != 200:
        raise RuntimeError(
            f"GET {page_url} as {member.username} answered {response.status_code}, not 200"
        )
    figures = {
        "queue": busiest.code,
        "open_in_queue": busiest.open,
        "rows_on_page": len(set(re.findall(r"/tasks/(\d+)/", response.content.decode()))),
    }
    rows_url = reverse("queues:queue_rows", args=[busiest.pk])
    return _PageSide(label, database, client, page_url, rows_url, figures)


def _page_turns(sides: Sequence[_PageSide], *, blocks: int = 6, per_block: int = 20) -> None:
    """Samples in blocks, the two sizes taking turns (A B B A …), each block on a fresh
    connection after a few untimed requests: `per_block` page views and half as many polls of
    the rows fragment."""
    clock = time.perf_counter
    poll = {"HX-Request": "true", "X-Idle-Poll": "1"}

    def timed(side: _PageSide, url: str, into: list[float], **extra: Any) -> None:
        began = clock()
        response = side.client.get(url, **extra)
        into.append(clock() - began)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}, not 200")

    for block in range(blocks):
        for turn in (0, 1) if block % 2 == 0 else (1, 0):
            side = sides[turn]
            _use_database(side.database)
            for _ in range(3):
                side.client.get(side.page_url)
                side.client.get(side.rows_url, headers=poll)
            for n in range(per_block):
                timed(side, side.page_url, side.page)
                if n % 2:
                    timed(side, side.rows_url, side.rows, headers=poll)


def _page_figures(side: _PageSide) -> dict[str, Any]:
    _use_database(side.database)
    return {
        **side.figures,
        "page_p50_ms": round(median(side.page) * 1000, 2),
        "page_p95_ms": round(percentile(side.page, 95) * 1000, 2),
        "rows_p95_ms": round(percentile(side.rows, 95) * 1000, 2),
        "samples": len(side.page),
        **_page_queries(side.client, side.page_url),
    }


def _page_queries(client: Any, url: str) -> dict[str, Any]:
    """The SQL of one page view: how many statements, their time, and the plan of the slowest
    (outside the timed samples: capturing adds its own cost)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    timed = [
        (float(query["time"]), query["sql"])
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith("SELECT")
    ]
    figures: dict[str, Any] = {
        "queries": len(captured.captured_queries),
        "query_ms": round(sum(float(q["time"]) for q in captured.captured_queries) * 1000, 2),
    }
    if timed:
        slowest_ms, slowest_sql = max(timed, key=lambda item: item[0])
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {slowest_sql}")
            plan = cursor.fetchone()[0][0]
        figures["slowest_query_ms"] = round(slowest_ms * 1000, 2)
        figures["slowest_query"] = re.sub(r"\s+", " ", slowest_sql)[:120]
        figures["slowest_query_plan"] = summarize_plan(plan, table="queues_task")
    return figures


def queue_page_50_rows(ctx: BenchContext) -> dict[str, Any]:
    """Server time of the Queue page (50 rows a page) for a department member, with 10,000
    and 1,000,000 tasks in the table."""
    from django.test.utils import override_settings

    hosts = ["testserver", "localhost", "127.0.0.1"]
    # As a server runs: no DEBUG query log.
    with (
        override_settings(DEBUG=False, ALLOWED_HOSTS=hosts),
        ctx.scratch_database("queue_page_10k") as first,
    ):
        small_side = _page_setup(ctx, SIZES[0], "10k", first.name)
        with ctx.scratch_database("queue_page_1m") as second:
            large_side = _page_setup(ctx, SIZES[1], "1m", second.name)
            _page_turns((small_side, large_side))
            small, large = _page_figures(small_side), _page_figures(large_side)
            connections.close_all()
    ratio = large["page_p95_ms"] / small["page_p95_ms"] if small["page_p95_ms"] else 0.0
    return {
        "page_p95_10k_ms": small["page_p95_ms"],
        "target_page_p95_10k_ms": "<= 30",
        "page_p95_1m_ms": large["page_p95_ms"],
        "target_page_p95_1m_ms": "<= 30",
        "p95_1m_over_10k": round(ratio, 3),
        "target_p95_1m_over_10k": "<= 1.3",
        "rows_fragment_p95_10k_ms": small["rows_p95_ms"],
        "rows_fragment_p95_1m_ms": large["rows_p95_ms"],
        "10k": small,
        "1m": large,
    }


BENCHMARKS = {
    "next_task_32_workers": next_task_32_workers,
    "queue_page_50_rows": queue_page_50_rows,
}


# --- FHIR Bundle of 100 resources ----------------------------------------------------------


def _fhir_bundle(round_no: int, size: int = 100) -> dict[str, Any]:
    """`size` EHR resources of the kinds the endpoint takes, each about another patient and
    matter (so dedup links none of them), with ids that are new in every round."""
    texts = (
        ("referral", "Referral for cardiology consult, please schedule within 2 weeks."),
        ("billing", "Claim denied for the March visit: please review the denial."),
        ("scheduling", "Patient asks to move Tuesday's appointment to next week."),
        ("records", "Please send the last two visit notes to the new PCP."),
    )
    entries = []
    for n in range(size):
        category, text = texts[n % len(texts)]
        rid = f"bench-{round_no}-{n}"
        subject = {
            "identifier": {"system": "urn:clinic:mrn", "value": f"BMRN{round_no:03d}{n:04d}"},
            "display": f"Bench Patient {round_no}-{n}",
        }
        concept = [{"coding": [{"system": "urn:clinic:category", "code": category}]}]
        if n % 3 == 0:
            resource = {
                "resourceType": "ServiceRequest",
                "id": rid,
                "status": "active",
                "intent": "order",
                "category": concept,
                "code": {"text": text},
                "subject": subject,
                "priority": "routine",
            }
        else:
            resource = {
                "resourceType": "Communication",
                "id": rid,
                "status": "completed",
                "category": concept,
                "subject": subject,
                "sender": {"display": "Bench EHR"},
                "priority": "urgent" if n % 7 == 0 else "routine",
                "payload": [{"contentString": f"{text} (#{n})"}],
            }
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource})
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def fhir_bundle_100(ctx: BenchContext) -> dict[str, Any]:
    """A signed FHIR Bundle of 100 resources posted to /api/v1/inbound/fhir/ on the demo
    clinic, end to end through Django's test client: the raw Bundle and every entry stored,
    each entry parsed, classified, deduplicated, routed and assigned, and the batch-response
    written. One untimed warm-up Bundle, then timed rounds, each with new resource ids."""
    import json as json_module

    from django.test import Client
    from django.test.utils import override_settings

    from queues.intake import credentials, store
    from queues.models import Task

    rounds = 7
    hosts = ["testserver", "localhost", "127.0.0.1"]
    seconds: list[float] = []
    with (
        override_settings(DEBUG=False, ALLOWED_HOSTS=hosts),
        ctx.scratch_database("fhir_bundle") as scratch,
    ):
        _use_database(scratch.name)
        _demo_clinic()
        _, issued = store.integration_client_create(name="bench-ehr", channels=["fhir"])
        client = Client()

        def post(bundle: dict[str, Any]) -> dict[str, Any]:
            body = json_module.dumps(bundle).encode()
            ts = int(time.time())
            response = client.post(
                "/api/v1/inbound/fhir/",
                data=body,
                content_type="application/fhir+json",
                HTTP_AUTHORIZATION=f"Token {issued.token}",
                HTTP_X_CLINICDESK_TIMESTAMP=str(ts),
                HTTP_X_CLINICDESK_SIGNATURE=credentials.sign(issued.signing_key, ts, body),
            )
            if response.status_code != 200:
                raise RuntimeError(f"the Bundle was answered {response.status_code}")
            return response.json()

        post(_fhir_bundle(0))
        created = 0
        for round_no in range(1, rounds + 1):
            bundle = _fhir_bundle(round_no)
            began = time.perf_counter()
            answer = post(bundle)
            seconds.append(time.perf_counter() - began)
            statuses = {e["response"]["status"] for e in answer["entry"]}
            if statuses != {"201 Created"}:
                raise RuntimeError(f"round {round_no}: entries answered {sorted(statuses)}")
            created += len(answer["entry"])
        routed = (
            Task.objects.filter(external_id__contains="/bench-", queue__isnull=False)
            .exclude(external_id__contains="/bench-0-")
            .exclude(status=Task.Status.NEW)
            .count()
        )
        connections.close_all()
    return {
        "bundle_100_median_s": round(median(seconds), 3),
        "target_bundle_100_median_s": "<= 1",
        "bundle_100_worst_s": round(max(seconds), 3),
        "entries_per_s": round(100 / median(seconds), 1),
        "rounds": rounds,
        "tasks_created": created,
        "tasks_routed": routed,
    }


BENCHMARKS["fhir_bundle_100"] = fhir_bundle_100


# --- The intake API under gunicorn ---------------------------------------------------------
#
# `POST /api/v1/intake/` served by gunicorn on the scratch database, 16 integration clients at
# once, each its own process with one keep-alive HTTP connection, posting requests of the
# generated demo morning for a fixed time. Reports requests/s and latency as the clients see
# it, and checks afterwards that every 2xx answer's task is committed (counted by external id).

INTAKE_CLIENTS = 16
INTAKE_WARMUP_S = 3.0
INTAKE_MEASURE_S = 12.0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _gunicorn(
    database_url: str,
    *,
    workers: int,
    threads: int,
    app: str = "clinicdesk.wsgi:application",
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """gunicorn serving the app (or another WSGI `app`, with `env`) on the scratch database,
    as in production (DEBUG off)."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from django.conf import settings

    port = _free_port()
    env = {
        **os.environ,
        **(env or {}),
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        "API_CLIENT_RATE": "1000000/min",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=gthread",
        f"--threads={threads}",
        "--keep-alive=60",
        "--log-level=warning",
    ]
    process = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _intake_client(
    slot: int,
    token: str,
    port: int,
    payloads: list[dict[str, Any]],
    measure_from: float,
    stop_at: float,
    reports: Any,
    prefix: str = "bench",
) -> None:
    """One integration client: post, read the answer, post again, until `stop_at`."""
    import http.client
    import json

    latencies: list[float] = []
    ok_ids: list[str] = []
    statuses: dict[int, int] = {}
    error = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        n = 0
        while True:
            start = time.monotonic()
            if start >= stop_at:
                break
            external_id = f"{prefix}-{slot}-{n}"
            body = json.dumps(
                {**payloads[(slot * 31 + n) % len(payloads)], "external_id": external_id}
            )
            conn.request("POST", "/api/v1/intake/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            end = time.monotonic()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if 200 <= response.status < 300:
                ok_ids.append(external_id)
            if start >= measure_from:
                latencies.append(end - start)
            n += 1
        conn.close()
    except Exception as exc:  # reported to the scenario, which fails
        error = f"{exc.__class__.__name__}: {exc}"
    reports.put((slot, latencies, ok_ids, statuses, error))


def _get_client(port: int, path: str, measure_from: float, stop_at: float, reports: Any) -> None:
    """One keep-alive client GETting `path` until `stop_at` (the HTTP floor)."""
    import http.client

    latencies: list[float] = []
    error = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (start := time.monotonic()) < stop_at:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}")
            if start >= measure_from:
                latencies.append(time.monotonic() - start)
        conn.close()
    except Exception as exc:  # reported to the scenario, which fails
        error = f"{exc.__class__.__name__}: {exc}"
    reports.put((latencies, error))


def _http_floor(port: int, seconds: float = 5.0) -> dict[str, Any]:
    """INTAKE_CLIENTS clients on `/healthz` (the whole middleware stack and one `SELECT 1`)
    under the same gunicorn: what any endpoint costs before its own work."""
    context = multiprocessing.get_context("fork")
    reports = context.Queue()
    measure_from = time.monotonic() + 1.0
    stop_at = measure_from + seconds
    clients = [
        context.Process(target=_get_client, args=(port, "/healthz", measure_from, stop_at, reports))
        for _ in range(INTAKE_CLIENTS)
    ]
    for client in clients:
        client.start()
    results = [reports.get(timeout=seconds + 120) for _ in clients]
    for client in clients:
        client.join(timeout=30)
    errors = [error for _, error in results if error]
    if errors:
        raise RuntimeError(f"healthz clients failed: {errors[:3]}")
    latencies = [sample for samples, _ in results for sample in samples]
    return {
        "http_floor_requests_per_s": round(len(latencies) / seconds, 1),
        "http_floor_p50_ms": round(median(latencies) * 1000, 2),
        "http_floor_p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def _post_from_clients(
    port: int, tokens: list[str], payloads: list[dict[str, Any]], prefix: str
) -> tuple[list[float], list[str], dict[int, int]]:
    """INTAKE_CLIENTS processes posting to the server on `port` for the warm-up and the
    measured time: (latencies measured, external ids answered 2xx, answers by status)."""
    from collections import Counter

    context = multiprocessing.get_context("fork")
    reports = context.Queue()
    measure_from = time.monotonic() + INTAKE_WARMUP_S
    stop_at = measure_from + INTAKE_MEASURE_S
    clients = [
        context.Process(
            target=_intake_client,
            args=(slot, tokens[slot], port, payloads, measure_from, stop_at, reports, prefix),
        )
        for slot in range(INTAKE_CLIENTS)
    ]
    for client in clients:
        client.start()
    results = [reports.get(timeout=INTAKE_WARMUP_S + INTAKE_MEASURE_S + 120) for _ in clients]
    for client in clients:
        client.join(timeout=30)
    errors = [error for *_, error in results if error]
    if errors:
        raise RuntimeError(f"intake clients failed: {errors[:3]}")
    statuses: Counter[int] = Counter()
    for _, _, _, counts, _ in results:
        statuses.update(counts)
    return (
        [sample for _, samples, *_ in results for sample in samples],
        [external_id for _, _, ids, *_ in results for external_id in ids],
        dict(statuses),
    )


def _intake_floor_env(database_name: str) -> dict[str, str]:
    """The environment of `queues.intake_floor_wsgi`: its statements, and a task the product
    wrote (with its raw payload) for it to copy."""
    import json

    from psycopg.conninfo import make_conninfo

    from clinicdesk.bench import conn_params
    from clinicdesk.benchmarks import floor_write_sql
    from queues.models import InboundMessage, Task
    from routing.selectors import CANDIDATES_SQL

    def columns(model, skip):
        return [f.column for f in model._meta.concrete_fields if f.column not in skip]

    inbound_columns = ", ".join(columns(InboundMessage, {"id", "payload", "external_id"}))
    statements = {
        "client": "SELECT id, user_id, channels FROM queues_integrationclient"
        " WHERE token_hash = %s AND is_active",
        "inbound": f"""
INSERT INTO queues_inboundmessage (payload, external_id, {inbound_columns})
SELECT %(payload)s, %(external_id)s, {inbound_columns}
  FROM queues_inboundmessage WHERE id = %(template)s
RETURNING id""",
        "candidates": CANDIDATES_SQL,
        "write": floor_write_sql(link_inbound=True),
    }
    inbound = (
        InboundMessage.objects.filter(status="parsed", task__status=Task.Status.QUEUED)
        .select_related("task")
        .order_by("id")
        .first()
    ) or InboundMessage.objects.filter(status="parsed").select_related("task").first()
    params = {k: str(v) for k, v in conn_params(database_name).items()}
    return {
        "FLOOR_DSN": make_conninfo(**params),
        "FLOOR_SQL": json.dumps(statements),
        "FLOOR_TEMPLATE": json.dumps(
            {"task": inbound.task_id, "inbound": inbound.pk, "queue": inbound.task.queue_id}
        ),
    }


def intake_api_16_clients(ctx: BenchContext) -> dict[str, Any]:
    """POST /api/v1/intake/ under gunicorn (gthread), 16 concurrent keep-alive clients.

    Then the same clients against `queues.intake_floor_wsgi` under the same gunicorn
    (`intake_floor_*`): only the statements any intake must run, no Django, nothing decided.
    """
    from queues.intake import store
    from queues.models import Task

    workers = int(os.environ.get("CLINICDESK_BENCH_INTAKE_WORKERS", "4"))
    threads = int(os.environ.get("CLINICDESK_BENCH_INTAKE_THREADS", "4"))
    with ctx.scratch_database("intake_api") as scratch:
        _demo_clinic()
        tokens = [
            store.integration_client_create(name=f"bench-{n:02}", channels=["api"])[1].token
            for n in range(INTAKE_CLIENTS)
        ]
        from clinicdesk.demo_traffic import api_intake_payloads

        payloads = api_intake_payloads(400, mrn_fallback="MRN-BENCH")
        connections.close_all()  # nothing open may cross the fork
        with _gunicorn(scratch.url, workers=workers, threads=threads) as port:
            floor = _http_floor(port)
            latencies, ok_ids, statuses = _post_from_clients(port, tokens, payloads, "bench")
        committed = Task.objects.filter(channel="api", external_id__in=ok_ids).count()
        env = _intake_floor_env(scratch.name)
        connections.close_all()
        with _gunicorn(
            scratch.url,
            workers=workers,
            threads=threads,
            app="queues.intake_floor_wsgi:application",
            env=env,
        ) as port:
            floor_latencies, floor_ids, floor_statuses = _post_from_clients(
                port, tokens, payloads, "floor"
            )
        floor_committed = Task.objects.filter(channel="api", external_id__in=floor_ids).count()
        connections.close_all()
    non_2xx = sum(count for code, count in statuses.items() if not 200 <= code < 300)
    ctx.log(f"statuses {statuses}; {len(ok_ids)} ok; {committed} committed")
    ctx.log(f"floor statuses {floor_statuses}; {floor_committed} committed")
    return {
        "requests_per_s": round(len(latencies) / INTAKE_MEASURE_S, 1),
        "target_requests_per_s": ">= 300",
        "p50_ms": round(median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "target_p99_ms": "<= 50",
        "requests": sum(statuses.values()),
        "non_2xx": non_2xx,
        "target_non_2xx": "== 0",
        "uncommitted_2xx": len(ok_ids) - committed,
        "target_uncommitted_2xx": "== 0",
        "clients": INTAKE_CLIENTS,
        "server": f"gunicorn gthread, {workers} workers x {threads} threads",
        # The same clients and server on GET /healthz: the cost of any request (no targets).
        **floor,
        # The same clients and server on the statements alone (no targets).
        "intake_floor_requests_per_s": round(len(floor_latencies) / INTAKE_MEASURE_S, 1),
        "intake_floor_p50_ms": round(median(floor_latencies) * 1000, 2),
        "intake_floor_p99_ms": round(percentile(floor_latencies, 99) * 1000, 2),
        "intake_floor_uncommitted_2xx": len(floor_ids) - floor_committed,
    }


BENCHMARKS["intake_api_16_clients"] = intake_api_16_clients
