"""A small clinic for the dashboard tests: two departments, people in each, and helpers that
write tasks and timeline events at chosen times (the columns that `auto_now_add` fills are
set explicitly, as the bulk writers of routing do)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from clinicdesk.dashboard.selectors import Scope
from clinicdesk.roles import COMPLIANCE, MANAGER, SUPERVISOR
from queues.models import Queue, Task, TaskEvent
from queues.services import rows_insert
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

ZONE = ZoneInfo("America/New_York")
# A Tuesday noon in the clinic: the period is the 30 days before it.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE)
START = NOW - timedelta(days=30)


class Clinic:
    def __init__(self):
        self.billing = DepartmentFactory(name="Billing")
        self.records = DepartmentFactory(name="Medical records")
        self.claims = QueueFactory(department=self.billing, name="Claims")
        self.statements = QueueFactory(
            department=self.billing, name="Statements", assignment_policy="pull_only"
        )
        self.release = QueueFactory(department=self.records, name="Records release")
        self.claim_type = TaskTypeFactory(default_queue=self.claims, name="Claim denial")
        self.statement_type = TaskTypeFactory(
            default_queue=self.statements, name="Statement question"
        )
        self.release_type = TaskTypeFactory(default_queue=self.release, name="Records request")
        self.supervisor = StaffProfileFactory(
            user__username="sam",
            user__first_name="Sam",
            user__last_name="Supervisor",
            user__roles=[SUPERVISOR],
            departments=[self.billing],
            capacity=5,
        ).user
        self.manager = UserFactory(username="mia", roles=[MANAGER])
        self.auditor = UserFactory(username="carl", roles=[COMPLIANCE])
        self.agent = StaffProfileFactory(
            user__username="alice",
            user__first_name="Alice",
            user__last_name="Agent",
            departments=[self.billing],
            capacity=4,
        ).user

    def scope(self, *queues: Queue, start=START, now=NOW) -> Scope:
        queues = queues or (self.claims, self.statements)
        return Scope(
            queue_ids=tuple(q.pk for q in queues),
            department_ids=tuple(sorted({q.department_id for q in queues})),
            start=start,
            end=now,
            now=now,
            time_zone="America/New_York",
        )

    def task(self, queue: Queue | None = None, *, created: datetime, **fields) -> Task:
        queue = queue or self.claims
        task_type = {
            self.claims.pk: self.claim_type,
            self.statements.pk: self.statement_type,
            self.release.pk: self.release_type,
        }.get(queue.pk) or TaskTypeFactory(default_queue=queue)
        fields.setdefault("status", Task.Status.QUEUED)
        times = {key: fields.pop(key) for key in ("updated_at",) if key in fields}
        task = TaskFactory(queue=queue, task_type=task_type, **fields)
        Task.objects.filter(pk=task.pk).update(
            created_at=created, updated_at=times.get("updated_at", created)
        )
        task.refresh_from_db()
        return task


def event(task: Task, kind: str, at: datetime, **fields) -> None:
    """A timeline event at `at`, written as the services' bulk path writes them."""
    fields.setdefault("actor_label", "system:test")
    rows_insert(TaskEvent, [TaskEvent(task=task, kind=kind, created_at=at, **fields)])


@pytest.fixture
def clinic(db):
    return Clinic()
