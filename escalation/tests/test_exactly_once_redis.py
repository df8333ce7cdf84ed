"""Scale-out: three real `manage.py qcluster` processes on the Redis broker, racing for the
same due steps and the same outbox. Every step fires once, and the webhook receiver gets each
notification once (it would drop a repeat by its Idempotency-Key, but there is none).

Needs Debian's `redis-server` (`.ci/run` installs it); skipped with a message without it.
"""

from __future__ import annotations

import contextlib
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

# The fault-run tools (a Redis server on loopback, a counting webhook receiver) live with the
# `chaos` command in clinicdesk, above this app: a test-only import.
from clinicdesk.chaos.receiver import WebhookReceiver
from clinicdesk.chaos.redis_server import RedisUnavailable, enqueue, redis_server
from escalation import services
from escalation.models import Escalation, Notification
from escalation.notifications import delivery_key
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from escalation.tests.test_qcluster_kill import _poll, _start_cluster, _stop
from queues.models import TaskEvent
from queues.tests.factories import TaskFactory, TaskTypeFactory

TASKS = 60
CLUSTERS = 3
REDIS_PORT = 6391
RECEIVER_PORT = 8124
SECRET = "scale-out-secret"

redis_client = pytest.importorskip("redis", reason="the redis client is in requirements.txt")


@pytest.fixture
def redis_url():
    try:
        with redis_server(REDIS_PORT) as url:
            yield url
    except RedisUnavailable as error:
        pytest.skip(f"Redis scale-out test skipped: {error}")


@pytest.mark.django_db(transaction=True)
def test_three_clusters_on_redis_fire_each_step_and_deliver_each_notification_once(
    redis_url, tmp_path
):
    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=None)
    EscalationStepFactory(policy=policy, level=1, percent=50, action="mark_at_risk")
    receiver = WebhookReceiver(port=RECEIVER_PORT, secret=SECRET)
    EscalationStepFactory(
        policy=policy,
        level=2,
        percent=100,
        action="notify_webhook",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    )
    received = timezone.now() - timedelta(minutes=90)
    tasks = TaskFactory.create_batch(TASKS, task_type=TaskTypeFactory(), received_at=received)
    services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks])
    steps = 2 * TASKS

    log = tmp_path / "qcluster.log"
    clusters = []
    with receiver, contextlib.ExitStack() as stack:
        for _ in range(CLUSTERS):
            cluster = _start_cluster(log, REDIS_URL=redis_url)
            # The work is done by then: no need to wait for a graceful shutdown.
            stack.callback(_stop, cluster, signal.SIGKILL)
            clusters.append(cluster)
        # Small batches, so that the three clusters take the due rows between them.
        for _ in range(TASKS // 10):
            enqueue(redis_url, "escalation.services.sweep", batch=10)
            enqueue(redis_url, "escalation.jobs.send_notifications_job")

        def all_sent():
            assert all(c.poll() is None for c in clusters), log.read_text()[-3000:]
            done = (
                Escalation.objects.count() == steps
                and not Notification.objects.exclude(status="sent").exists()
            )
            if not done:
                # Redis keeps no receipts: the jobs are repeated until the work is done, as
                # the every-minute schedule does in production.
                for _ in range(CLUSTERS):
                    enqueue(redis_url, "escalation.jobs.sweep_job")
                    enqueue(redis_url, "escalation.jobs.send_notifications_job")
            return done

        _poll(all_sent, timeout=40, every=0.5, what="three clusters to fire and send everything")

    assert Escalation.objects.count() == steps
    assert Escalation.objects.values("task_id", "step_id").distinct().count() == steps
    escalated = TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED)
    assert escalated.count() == steps
    notifications = Notification.objects.all()
    assert notifications.count() == TASKS
    assert set(receiver.processed) == {delivery_key(n.pk) for n in notifications}
    assert sorted(receiver.deliveries.values()) == [1] * TASKS
    assert receiver.refused == 0
    assert services.sweep() == 0
