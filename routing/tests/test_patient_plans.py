"""Lookups by patient stay index lookups when PostgreSQL reuses a prepared statement's generic
plan (psycopg prepares a statement after five runs on a connection; see the settings).

A generic plan cannot know that the bound MRN is not the empty string, so without
`patient_mrn <> ''` spelled out it cannot use `task_by_patient` (whose predicate that is) and
reads every open task instead: on each intake, a cost that grew with the queues. A plan test,
not a timing test: thousands of open tasks, fresh statistics, sequential scans priced out.
"""

import pytest
from django.db import connection

from accounts.tests.factories import StaffProfileFactory
from queues.models import Task
from queues.tests.factories import QueueFactory, TaskFactory, closed_tasks
from routing import selectors

pytestmark = pytest.mark.django_db


def generic_plan(sql_text: str, values: dict[str, tuple[str, str]]) -> str:
    """EXPLAIN of `sql_text` (with %(name)s placeholders) as PostgreSQL runs it from the cache
    of a prepared statement: `values` maps each name to (type, SQL literal)."""
    names = list(values)
    for number, name in enumerate(names, start=1):
        sql_text = sql_text.replace(f"%({name})s", f"${number}")
    types = ", ".join(values[name][0] for name in names)
    literals = ", ".join(values[name][1] for name in names)
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE patient_probe ({types}) AS {sql_text}")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"EXPLAIN EXECUTE patient_probe ({literals})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE patient_probe")
    return plan


@pytest.fixture
def busy_queue():
    """A queue with 3,000 open tasks, each for another patient, most of them with one of its
    staff, and fresh statistics."""
    queue = QueueFactory()
    worker = StaffProfileFactory(departments=[queue.department], capacity=5000).user
    closed_tasks(
        queue, 2000, status=Task.Status.ASSIGNED, assignee_id=worker.pk, patient_prefix="BULK-"
    )
    closed_tasks(queue, 1000, status=Task.Status.QUEUED, patient_prefix="BULK-")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queues_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queue


def test_the_staff_read_of_routing_finds_the_patients_open_work_by_index(busy_queue):
    plan = generic_plan(
        selectors.CANDIDATES_SQL,
        {"patient": ("text", "'BULK-7'"), "queue_id": ("bigint", str(busy_queue.pk))},
    )

    assert "task_by_patient" in plan, plan
    assert "task_open_by" not in plan, plan


def test_a_held_task_for_the_patient_is_found_by_index(busy_queue):
    from routing.workflows import HELD_WORK_SQL

    plan = generic_plan(
        HELD_WORK_SQL.replace("%s", "%(mrn)s", 1).replace("%s", "%(status)s", 1),
        {"mrn": ("text", "'BULK-7'"), "status": ("text", "'on_hold'")},
    )

    assert "task_by_patient" in plan, plan
    assert "task_open_by" not in plan, plan


def test_nonblank_reads_as_a_literal_and_keeps_its_meaning():
    with_mrn = TaskFactory(patient_mrn="MRN-1")
    TaskFactory(patient_mrn="")

    query = Task.objects.filter(patient_mrn__nonblank=True)

    assert list(query) == [with_mrn]
    assert "\"patient_mrn\" <> ''" in str(query.query)
    with pytest.raises(ValueError, match="True only"):
        list(Task.objects.filter(patient_mrn__nonblank=False))
