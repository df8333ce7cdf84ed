"""The fault scenarios of `manage.py chaos`, each a list of measured rows.

(a) `database_restart`: gunicorn and a job cluster under a steady load of intake posts (an
    integration client that resends a 503 with the same external id, as integrations are told
    to) and staff page views; PostgreSQL is stopped for a few seconds and started again.
(b) `cluster_kill`: tasks whose escalation steps are due now; the job cluster is killed with
    SIGKILL in the middle of firing the steps and delivering the webhook notifications, then
    started again; every step fires once, every notification reaches the receiver once (by its
    Idempotency-Key).
(c) the same with the Redis broker and three clusters at once, one of them killed.

They run on a database of their own (see the command), never the development one.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.db import connections
from django.utils import timezone

from clinicdesk.chaos import processes
from clinicdesk.chaos.receiver import WebhookReceiver
from clinicdesk.chaos.redis_server import enqueue as redis_enqueue

RECOVERY_TARGET_S = 30
TRACE_MARKERS = ("Traceback", 'File "/', "OperationalError", "psycopg")


@dataclass
class Row:
    scenario: str
    measure: str
    result: str
    target: str
    ok: bool | None  # None: a figure without a target


@dataclass
class Answer:
    kind: str  # "intake" or "page"
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all
    retry_after: str | None
    trace: bool


@dataclass
class Load:
    """Threads that post intake and view pages until `stop` is set, recording each answer."""

    port: int
    token: str
    username: str
    password: str
    payloads: list[dict]
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # external id → task id
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, kind: str, method: str, path: str, body: bytes = b"", headers=None):
        started = time.monotonic()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            status, retry_after = response.status, response.getheader("Retry-After")
            cookies = response.headers.get_all("Set-Cookie") or []
            connection.close()
        except OSError:
            status, retry_after, text, cookies = 0, None, "", []
        trace = any(marker in text for marker in TRACE_MARKERS)
        with self._lock:
            self.answers.append(Answer(kind, started, time.monotonic(), status, retry_after, trace))
        return status, text, cookies

    def intake(self, slot: int, clients: int) -> None:
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        for n, payload in enumerate(self.payloads[slot::clients]):
            external_id = f"chaos-{slot}-{n}"
            body = json.dumps({**payload, "external_id": external_id}).encode()
            while not self.stop.is_set():
                status, text, _ = self._call("intake", "POST", "/api/v1/intake/", body, headers)
                if 200 <= status < 300:
                    with self._lock:
                        self.acknowledged[external_id] = json.loads(text)["id"]
                    break
                # 503 (and anything else): resend the same request. Sooner than Retry-After
                # asks, so that the run measures when service comes back.
                time.sleep(1.0)
            if self.stop.wait(0.2):
                return

    def pages(self) -> None:
        cookie = self._sign_in()
        while cookie and not self.stop.wait(0.3):
            self._call("page", "GET", "/work/", headers={"Cookie": cookie})

    def _sign_in(self) -> str | None:
        _, text, cookies = self._call("page", "GET", "/accounts/login/")
        jar = dict(c.split(";", 1)[0].split("=", 1) for c in cookies)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text)
        if not token:
            self.errors.append("the sign-in page has no CSRF token")
            return None
        form = urllib.parse.urlencode(
            {
                "username": self.username,
                "password": self.password,
                "csrfmiddlewaretoken": token.group(1),
            }
        ).encode()
        status, _, cookies = self._call(
            "page",
            "POST",
            "/accounts/login/",
            form,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
            },
        )
        jar.update(c.split(";", 1)[0].split("=", 1) for c in cookies)
        if status != 302 or "sessionid" not in jar:
            self.errors.append(f"signing in as {self.username} answered {status}")
            return None
        return "; ".join(f"{k}={v}" for k, v in jar.items())


def _wait(condition: Callable[[], bool], *, timeout: float, every: float = 0.5) -> float | None:
    """Seconds until `condition()` held, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(every)
    return None


def _job_round_trip(timeout: float) -> float | None:
    """Seconds for the cluster to run a job queued now (on the ORM broker)."""
    from django_q.models import Success
    from django_q.tasks import async_task

    task_id = async_task("escalation.jobs.sweep_job", task_name="chaos-after-restart")
    return _wait(lambda: Success.objects.filter(id=task_id).exists(), timeout=timeout)


@dataclass
class Stage:
    """What the scenarios share: the database server, the child environment, a log dir."""

    pgdata: Path
    env: dict[str, str]
    logs: Path
    port: int
    receiver_port: int
    say: Callable[[str], None]

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def cluster(self, name: str, **env: str):
        return processes.start(
            processes.manage("qcluster"), env={**self.env, **env}, log=self.log(name)
        )


def database_restart(
    stage: Stage, *, token: str, username: str, password: str, down_s: float
) -> list[Row]:
    from clinicdesk.chaos.database import start_server, stop_server
    from clinicdesk.demo_traffic import api_intake_payloads
    from queues.models import Task

    name = "PostgreSQL restart"
    web = processes.start(
        [
            *processes.python("-m", "gunicorn", "clinicdesk.wsgi:application"),
            f"--bind=127.0.0.1:{stage.port}",
            "--workers=2",
            "--worker-class=gthread",
            "--threads=4",
            "--log-level=warning",
        ],
        env=stage.env,
        log=stage.log("gunicorn"),
    )
    cluster = stage.cluster("qcluster-a")
    payloads = api_intake_payloads(2000, mrn_fallback="MRN-CHAOS")
    load = Load(stage.port, token, username, password, payloads)
    threads = [threading.Thread(target=load.intake, args=(slot, 3)) for slot in range(3)]
    threads += [threading.Thread(target=load.pages) for _ in range(2)]
    try:
        processes.wait_for_http(stage.port, "/healthz", process=web, timeout=60)
        for thread in threads:
            thread.start()
        time.sleep(10)
        stage.say(f"  stopping PostgreSQL for {down_s:.0f} s under load…")
        down_at = time.monotonic()
        stop_server(stage.pgdata)
        time.sleep(down_s)
        start_server(stage.pgdata)
        up_at = time.monotonic()
        connections.close_all()  # this process's own connection died with the server
        stage.say("  PostgreSQL is back; load goes on for 40 s")
        job_s = _job_round_trip(timeout=90)
        time.sleep(max(0.0, 40 - (time.monotonic() - up_at)))
    finally:
        load.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=60)
        processes.stop_all([web, cluster])

    during = [a for a in load.answers if down_at <= a.started < up_at]
    statuses = Counter(a.status for a in during)
    answered = ", ".join(f"{n} answered {s or 'nothing'}" for s, n in sorted(statuses.items()))
    bad_during = [a for a in during if a.status not in (503,) and not 200 <= a.status < 400]
    no_retry_after = [a for a in during if a.status == 503 and a.retry_after != "30"]
    errors_all = [a for a in load.answers if a.status == 0 or (a.status >= 500 and a.status != 503)]
    traces = [a for a in load.answers if a.trace]
    rows = [
        Row(
            name,
            "answers while down",
            answered or "none",
            "only 503 (or 2xx/3xx)",
            bool(during) and not bad_during,
        ),
        Row(name, "503 without Retry-After: 30", str(len(no_retry_after)), "0", not no_retry_after),
        Row(name, "500s or no answer, whole run", str(len(errors_all)), "0", not errors_all),
        Row(name, "traces in answer bodies", str(len(traces)), "0", not traces),
    ]
    for kind in ("intake", "page"):
        first = min(
            (a.ended for a in load.answers if a.kind == kind and a.started >= up_at and
             200 <= a.status < 300),
            default=None,
        )  # fmt: skip
        seconds = None if first is None else first - up_at
        rows.append(
            Row(
                name,
                f"first {kind} 2xx after the database is back",
                "never" if seconds is None else f"{seconds:.1f} s",
                f"≤ {RECOVERY_TARGET_S} s",
                seconds is not None and seconds <= RECOVERY_TARGET_S,
            )
        )
    rows.append(
        Row(
            name,
            "a job queued after the restart ran",
            "never" if job_s is None else f"after {job_s:.1f} s",
            f"≤ {RECOVERY_TARGET_S} s",
            job_s is not None and job_s <= RECOVERY_TARGET_S,
        )
    )
    acknowledged = load.acknowledged
    found = set(
        Task.objects.filter(channel="api", external_id__in=list(acknowledged)).values_list(
            "external_id", "pk"
        )
    )
    lost = sorted(set(acknowledged.items()) - found)
    rows.append(
        Row(
            name,
            "acknowledged intakes without their task",
            f"{len(lost)} of {len(acknowledged)}",
            "0",
            bool(acknowledged) and not lost,
        )
    )
    if load.errors:
        rows.append(Row(name, "load errors", "; ".join(load.errors), "none", False))
    return rows


def _seed_due_steps(count: int, *, label: str, receiver: WebhookReceiver) -> tuple[list[int], int]:
    """`count` open tasks, received 90 minutes ago, under a policy of their own with two steps
    due now: mark at risk (at half the first-claim target) and post to the receiver (at it)."""
    from escalation import services
    from escalation.models import EscalationStep, SlaPolicy
    from queues.models import Queue, Task, TaskType

    queue = Queue.objects.filter(kind=Queue.Kind.WORK, is_active=True).order_by("pk").first()
    task_type, _ = TaskType.objects.get_or_create(
        code=f"chaos-{label}",
        defaults={
            "name": f"Chaos {label}",
            "department": queue.department,
            "default_queue": queue,
            "default_priority": 3,
        },
    )
    policy = SlaPolicy.objects.create(
        name=f"Chaos {label}", order=0, first_claim_minutes=60, resolution_minutes=None
    )
    policy.task_types.set([task_type])
    Action = EscalationStep.Action
    common = {"policy": policy, "target": EscalationStep.Target.FIRST_CLAIM}
    EscalationStep.objects.create(level=1, percent=50, action=Action.MARK_AT_RISK, **common)
    EscalationStep.objects.create(
        level=2,
        percent=100,
        action=Action.NOTIFY_WEBHOOK,
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
        **common,
    )
    received = timezone.now() - timedelta(minutes=90)
    tasks = Task.objects.bulk_create(
        Task(
            channel="api",
            task_type=task_type,
            queue=queue,
            priority=3,
            status=Task.Status.QUEUED,
            subject=f"Overdue request {n}",
            received_at=received,
        )
        for n in range(count)
    )
    ids = [task.pk for task in tasks]
    services.recompute_due_for_tasks(task_ids=ids)
    return ids, policy.pk


def cluster_kill(stage: Stage, *, tasks: int, clusters: int, redis_url: str | None) -> list[Row]:
    from escalation.models import Escalation, Notification
    from escalation.notifications import LEASE, delivery_key
    from queues.models import TaskEvent

    name = f"{clusters} clusters, Redis" if redis_url else "qcluster SIGKILL"
    label = "redis" if redis_url else "kill"
    steps = 2 * tasks
    broker_env = {"REDIS_URL": redis_url or "", "Q_WORKERS": "2"}

    def queue_job(func: str, **kwargs) -> None:
        if redis_url:
            redis_enqueue(redis_url, func, **kwargs)
        else:
            from django_q.tasks import async_task

            async_task(func, **kwargs)

    receiver = WebhookReceiver(port=stage.receiver_port, secret=secrets.token_hex(16), delay=0.05)
    with receiver:
        task_ids, policy_id = _seed_due_steps(tasks, label=label, receiver=receiver)
        escalations = Escalation.objects.filter(step__policy_id=policy_id)
        notifications = Notification.objects.filter(escalation__step__policy_id=policy_id)
        for _ in range(tasks // 10):
            queue_job("escalation.services.sweep", batch=10)
            queue_job("escalation.jobs.send_notifications_job")
        running = [stage.cluster(f"qcluster-{label}-{n}", **broker_env) for n in range(clusters)]
        try:

            def mid_work() -> bool:
                return escalations.count() >= steps // 3 and len(receiver.deliveries) >= tasks // 10

            if _wait(mid_work, timeout=120, every=0.05) is None:
                return [Row(name, "reached the middle of the work", "no", "yes", False)]
            processes.kill(running[0])
            at_kill = (escalations.count(), len(receiver.deliveries))
            stage.say(
                f"  SIGKILL with {at_kill[0]}/{steps} steps fired, {at_kill[1]}/{tasks} "
                "notifications delivered"
            )
            running[0] = stage.cluster(f"qcluster-{label}-restarted", **broker_env)

            def done() -> bool:
                finished = escalations.count() == steps and (
                    notifications.count() == tasks
                    and not notifications.exclude(status=Notification.Status.SENT).exists()
                )
                if not finished:
                    # As the every-minute schedule would: sweep and send again.
                    queue_job("escalation.jobs.sweep_job")
                    queue_job("escalation.jobs.send_notifications_job")
                return finished

            limit = LEASE.total_seconds() + 120
            recovered = _wait(done, timeout=limit, every=2.0)
            connections.close_all()
        finally:
            processes.stop_all(running)

    keys = {delivery_key(pk) for pk in notifications.values_list("pk", flat=True)}
    fired = escalations.count()
    distinct = escalations.values("task_id", "step_id").distinct().count()
    events = TaskEvent.objects.filter(kind=TaskEvent.Kind.ESCALATED, task_id__in=task_ids)
    repeats = receiver.redelivered
    return [
        Row(name, "steps fired when killed", f"{at_kill[0]} of {steps}", "some, not all",
            0 < at_kill[0] < steps),
        Row(name, "all work done after the restart",
            "no" if recovered is None else f"after {recovered:.0f} s",
            f"≤ {limit:.0f} s (send lease {LEASE.total_seconds():.0f} s)", recovered is not None),
        Row(name, "escalation steps fired", f"{fired} ({distinct} distinct) of {steps}",
            f"{steps}, each once", fired == distinct == steps),
        Row(name, "escalated timeline events", str(events.count()), str(steps),
            events.count() == steps),
        Row(name, "notifications processed by the receiver",
            f"{len(receiver.processed)} of {tasks}", f"{tasks}, each once",
            set(receiver.processed) == keys and len(keys) == tasks),
        Row(name, "repeat deliveries, dropped by Idempotency-Key", str(repeats),
            "counted (at-least-once send)", None),
        Row(name, "posts refused (bad signature or key)", str(receiver.refused), "0",
            receiver.refused == 0),
    ]  # fmt: skip
