"""A real `manage.py qcluster` killed with SIGKILL in the middle of sweeping 500 due steps:
after a second cluster finishes the work, every step has fired exactly once.

The sweep of 500 due rows with its default batch is one transaction: a kill inside it rolls
back everything, and the Escalation count jumps from 0 to 500 with no moment in between to
kill at. So the first cluster runs `escalation.services.sweep` jobs with `batch=10` (50 jobs,
each its own transaction), and the test kills the cluster's whole process group as soon as
some, but not all, of the Escalation rows exist: one job is then mid-sweep or between sweeps.
The second cluster runs the real scheduled job, `escalation.jobs.sweep_job`, until nothing is
left. (The job the first cluster had reserved would be redelivered by the ORM broker after
Q_CLUSTER["retry"], 60 s; the test does not wait for it: the idempotence of the sweep makes it
harmless either way.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from escalation import services
from escalation.models import Escalation, Notification, TaskSla
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues.models import TaskEvent
from queues.tests.factories import TaskFactory, TaskTypeFactory

TASKS = 500
SMALL_BATCH = 10
ADDRESS = "duty-manager@clinic.example"


def _test_database_url() -> str:
    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    host = str(db.get("HOST") or "")
    port = str(db.get("PORT") or "")
    name = quote(db["NAME"], safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if not host or host.startswith("/"):
        query = {key: value for key, value in (("host", host), ("port", port)) if value}
        suffix = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{auth}/{name}{suffix}"
    return f"postgresql://{auth}{host}{':' + port if port else ''}/{name}"


def _start_cluster(log: Path, **overrides: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "Q_WORKERS": "1",
        "REDIS_URL": "",
        # Nothing leaves the machine: the notification job the sweep job queues sends nowhere.
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    return subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "qcluster"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # Workers of the group that outlive their parent for a moment.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _poll(condition, *, timeout: float, every: float = 0.05, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_sweep_fires_every_step_exactly_once(tmp_path):
    from django_q.tasks import async_task

    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=None)
    EscalationStepFactory(policy=policy, level=1, action="notify_address", address=ADDRESS)
    task_type = TaskTypeFactory()
    received = timezone.now() - timedelta(minutes=90)
    tasks = TaskFactory.create_batch(TASKS, task_type=task_type, received_at=received)
    # Every task has its TaskSla row, its one step past due: 500 steps due.
    services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks])
    assert TaskSla.objects.filter(next_step_at__lte=timezone.now()).count() == TASKS

    log = tmp_path / "qcluster.log"
    first = second = None
    try:
        for _ in range(TASKS // SMALL_BATCH):
            async_task("escalation.services.sweep", batch=SMALL_BATCH)
        first = _start_cluster(log)

        def part_done():
            count = Escalation.objects.count()
            assert count < TASKS, "the first cluster finished before it could be killed"
            return count if count >= TASKS // 5 else 0

        seen = _poll(part_done, timeout=40, what="some escalations from the first cluster")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = Escalation.objects.count()
        assert seen <= killed_at < TASKS
        print(f"SIGKILL with {killed_at}/{TASKS} escalations recorded")  # shown with -rP

        second = _start_cluster(log)
        async_task("escalation.jobs.sweep_job")

        def all_done():
            if Escalation.objects.count() == TASKS:
                return True
            # One more sweep job whenever the queue has run dry (the default batch is 500,
            # so one is normally enough; the job the killed cluster held is not waited for).
            from django_q.models import OrmQ

            if not OrmQ.objects.filter(lock__lte=timezone.now()).exists():
                async_task("escalation.jobs.sweep_job")
                time.sleep(0.5)
            return False

        _poll(all_done, timeout=60, every=0.2, what="the second cluster to finish the sweep")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                _stop(process)
            elif process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    assert Escalation.objects.count() == TASKS
    assert Escalation.objects.values("task_id", "step_id").distinct().count() == TASKS
    escalated = TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED)
    assert escalated.count() == TASKS
    assert escalated.values("task_id").distinct().count() == TASKS
    assert Notification.objects.count() == TASKS
    assert Notification.objects.values("escalation_id").distinct().count() == TASKS
    assert not Notification.objects.exclude(target=ADDRESS).exists()
    assert services.sweep() == 0
