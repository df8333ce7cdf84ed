"""Next task stays an index walk of `task_claimable` however many closed tasks the table holds.

A fast plan test, not a timing test: a few thousand closed tasks and some queued ones, the
statistics refreshed, sequential scans priced out (as they are on a table of a million rows),
then the plan of the claim SELECT that `task_claim_next` runs, as a one-off statement and as
the generic plan PostgreSQL caches for the prepared statement (psycopg prepares it after five
runs). queues/benchmarks.py measures the same at 1,000,000 rows.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory
from queues import services
from queues.benchmarks import claim_select_sql, explain_claim, summarize_plan
from queues.models import Task
from queues.tests.factories import QueueFactory, closed_tasks

pytestmark = pytest.mark.django_db

CLOSED = 3000


@pytest.fixture
def department():
    return DepartmentFactory()


@pytest.fixture
def queue(department):
    return QueueFactory(department=department)


@pytest.fixture
def worker(department):
    return StaffProfileFactory(departments=[department], capacity=100).user


def _queued(queue, priority: int, due, **fields) -> Task:
    return Task.objects.create(
        channel="portal",
        queue=queue,
        priority=priority,
        claim_due_at=due,
        status=Task.Status.QUEUED,
        subject=f"P{priority} due {due}",
        **fields,
    )


def _plan_text(queue_ids, *, generic: bool) -> str:
    plan = explain_claim(queue_ids, 100, analyze=False, generic=generic)
    return summarize_plan(plan)


@pytest.fixture
def big_table_statistics(queue):
    """Closed tasks, a few queued ones, fresh statistics and sequential scans priced out."""
    closed_tasks(queue, CLOSED)
    now = timezone.now()
    for n in range(40):
        _queued(queue, 1 + n % 4, now + timedelta(minutes=n))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queues_task")
        cursor.execute("SET LOCAL enable_seqscan = off")


def test_claim_select_is_the_service_statement():
    select = claim_select_sql()
    assert select.startswith("SELECT id FROM queues_task")
    assert "ORDER BY priority, claim_due_at, id" in select
    assert "FOR UPDATE SKIP LOCKED" in select
    assert select.rstrip().endswith("LIMIT 1")


@pytest.mark.parametrize("generic", [False, True], ids=["one-off", "prepared-generic"])
def test_claim_select_walks_the_claimable_index(queue, big_table_statistics, generic):
    text = _plan_text([queue.pk], generic=generic)
    # The one-time check that any of the queues has claimable work (through a per-queue index:
    # `task_claimable_by_queue` or `task_open_by_queue`, as the statistics make it cheaper),
    # then LockRows over task_claimable: the rows come in claim order from the partial index,
    # so the first unlocked one ends the scan.
    first, _, rest = text.partition(" > LockRows")
    assert first in (
        "Limit > Index Scan using task_claimable_by_queue",
        "Limit > Index Scan using task_open_by_queue",
    ), text
    assert rest, text
    assert text.endswith("> Result > Index Scan using task_claimable"), text
    assert "Sort" not in text, text
    assert "queues_task_pkey" not in text, text
    assert "Seq Scan" not in text, text


def test_claim_plan_runs_on_few_buffers(queue, big_table_statistics):
    plan = explain_claim([queue.pk], 100)
    nodes = [plan["Plan"]]
    while nodes[-1].get("Plans"):
        nodes.append(nodes[-1]["Plans"][-1])  # the claim scan, after the one-time check
    scan = nodes[-1]
    assert scan["Index Name"] == "task_claimable"
    assert scan["Actual Rows"] == 1
    # A handful of pages, however many closed tasks there are.
    assert scan["Shared Hit Blocks"] + scan.get("Shared Read Blocks", 0) < 20, scan


def test_claim_order_is_priority_then_claim_due_then_id(queue, worker):
    closed_tasks(queue, 500)
    now = timezone.now()
    soon, later = now + timedelta(minutes=5), now + timedelta(hours=2)
    tasks = [
        _queued(queue, 3, soon),
        _queued(queue, 2, later),
        _queued(queue, 1, later),
        _queued(queue, 2, soon),
        _queued(queue, 1, later),  # same priority and due time: the lower id first
        _queued(queue, 4, now - timedelta(days=1)),  # overdue, but the lowest priority
        _queued(queue, 1, None),  # no due time: after every due one of its priority
        _queued(queue, 1, now),
    ]
    far_future = now + timedelta(days=365)
    expected = sorted(tasks, key=lambda t: (t.priority, t.claim_due_at or far_future, t.pk))

    claimed = []
    while (task := services.task_claim_next(user=worker)) is not None:
        claimed.append(task.pk)

    assert claimed == [t.pk for t in expected]
    assert [Task.objects.get(pk=pk).priority for pk in claimed] == [1, 1, 1, 1, 2, 2, 3, 4]
    assert not Task.objects.filter(status=Task.Status.QUEUED).exists()
    assert Task.objects.filter(status=Task.Status.RESOLVED).count() == 500


def test_someone_who_works_one_queue_walks_only_that_queue(queue, worker):

    from queues.services import CLAIM_ONE_QUEUE_PICK_SQL

    other = QueueFactory()
    closed_tasks(queue, CLOSED)
    for n in range(50):
        _queued(other, 1, timezone.now() + timedelta(minutes=n))  # more urgent, elsewhere
    mine = _queued(queue, 3, timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queues_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {CLAIM_ONE_QUEUE_PICK_SQL}", {"queue_id": queue.pk, "room": 5})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "task_claimable_by_queue" in plan
    assert "Sort" not in plan
    assert services.task_claim_next(user=worker).pk == mine.pk
