"""The dashboard benchmark: the page for a 30-day period over 1,000,000 tasks, as a manager
sees it, server time through Django's test `Client` with DEBUG off.

`make bench` discovers `<app>/benchmarks.py` only, and `clinicdesk/benchmarks.py` belongs to
the project shell: it registers this scenario with one import (see `BENCHMARKS` below).

The tasks come from `queues.benchmarks.bulk_load_tasks` (180 days of traffic, 95% closed);
this module then gives the last 35 days what the dashboard reads and the bulk loader leaves
out: the timeline (created, routed with the classification rules, assigned or claimed,
held and resumed, rerouted by a person, resolved, reopened), the routing rule of each task,
reroute and reopen counts, an SLA policy and the escalations that called a supervisor. All
of it is generated inside PostgreSQL in a few statements.

The page reads its periods through the two indexes declared for it (`task_dashboard_period`,
a covering index on the tasks' creation time, and `taskevent_by_kind`); the scratch database
has them from the migrations. Statistics are refreshed after the load, as autovacuum would.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.db import connection

from clinicdesk.bench import BenchContext, median, percentile

TOTAL_TASKS = 1_000_000
EVENT_DAYS = 35
REQUESTS = 15

# One pseudo-random number in [0, 1) per (task, salt), the same on every run.
_U = "((hashint8(t.id * 16 + {salt}) & 2147483647)::float8 / 2147483648.0)"

_TASK_FACTS_SQL = f"""
UPDATE queues_task t
   SET routed_by_rule_id = r.rule_id,
       rule_set_version = %(version)s,
       reroute_count = CASE WHEN {_U.format(salt=1)} < 0.07 THEN 1 ELSE 0 END,
       reopen_count = CASE WHEN t.status = 'resolved' AND {_U.format(salt=2)} < 0.04
                           THEN 1 ELSE 0 END,
       subject = CASE WHEN {_U.format(salt=1)} < 0.07 THEN 'Records request ' || t.id
                      ELSE t.subject END
  FROM (SELECT DISTINCT ON (tt.tasktype_id) tt.tasktype_id AS type_id, rr.id AS rule_id
          FROM routing_routingrule rr
          JOIN routing_routingrule_task_types tt ON tt.routingrule_id = rr.id
         WHERE rr.rule_set_id = %(rule_set)s
         ORDER BY tt.tasktype_id, rr."order", rr.id) AS r
 WHERE t.created_at >= %(since)s AND r.type_id = t.task_type_id
"""

# The events of one task's life, in order; an explanation about the size of a real routing
# decision's (the rules evaluated, the queue chosen and why).
_EVENTS_SQL = """
INSERT INTO queues_taskevent (task_id, created_at, kind, actor_id, actor_label, from_queue_id,
                              to_queue_id, from_user_id, to_user_id, rule_id, rule_set_version,
                              reason, explanation)
SELECT t.id, e.at, e.kind, e.actor_id, e.actor_label, e.from_queue, e.to_queue, e.from_user,
       e.to_user, e.rule_id, %(version)s, e.reason, e.explanation
  FROM queues_task t
 CROSS JOIN LATERAL (VALUES
   (t.created_at, 'created', NULL::int, 'client:bench', NULL::bigint, NULL::bigint,
    NULL::int, NULL::int, NULL::int, '', '{}'::jsonb, true),
   (t.created_at, 'routed', NULL, 'system:router', NULL, t.queue_id, NULL, NULL,
    t.routed_by_rule_id, 'Classified and routed.',
    jsonb_build_object(
      'classification_rule_ids', jsonb_build_array(
          (%(class_rules)s::int[])[1 + mod(t.task_type_id, %(class_rule_count)s)::int]),
      'rules_evaluated', (SELECT jsonb_agg(jsonb_build_object(
          'id', n, 'name', 'Rule ' || n, 'matched', n = 3, 'why', 'phrase not found'))
          FROM generate_series(1, 6) AS n),
      'headline', 'Classified by rule; routed to the queue of its type'), true),
   (t.first_assigned_at, 'assigned', NULL, 'system:router', NULL, t.queue_id, NULL,
    t.assignee_id, NULL, '', '{"candidates": []}'::jsonb, t.first_assigned_at IS NOT NULL),
   (t.created_at + interval '1 hour', 'rerouted', %(person)s, 'bench-supervisor', t.queue_id,
    %(records_queue)s, NULL, NULL, t.routed_by_rule_id, 'Belongs elsewhere', '{}'::jsonb,
    t.reroute_count > 0),
   (t.created_at + interval '1 hour', 'held', t.assignee_id, 'bench-agent', NULL, NULL, NULL,
    NULL, NULL, (%(reasons)s::text[])[1 + mod(t.id, 5)::int], '{}'::jsonb,
    t.status = 'on_hold' OR (t.status = 'resolved' AND mod(t.id, 10) = 0)),
   (t.created_at + interval '2 hours', 'resumed', t.assignee_id, 'bench-agent', NULL, NULL,
    NULL, t.assignee_id, NULL, '', '{}'::jsonb,
    t.status = 'resolved' AND mod(t.id, 10) = 0),
   (t.resolved_at, 'resolved', t.assignee_id, 'bench-agent', NULL, NULL, NULL, NULL, NULL, '',
    '{"outcome": "done"}'::jsonb, t.resolved_at IS NOT NULL)
 ) AS e(at, kind, actor_id, actor_label, from_queue, to_queue, from_user, to_user, rule_id,
        reason, explanation, wanted)
 WHERE t.created_at >= %(since)s AND e.wanted
 ORDER BY t.id, e.at
"""

_ESCALATIONS_SQL = f"""
INSERT INTO escalation_escalation (task_id, step_id, level, due_at, fired_at)
SELECT t.id, %(step)s, 1, t.claim_due_at, t.claim_due_at
  FROM queues_task t
 WHERE t.created_at >= %(since)s AND {_U.format(salt=5)} < 0.05
"""


def _analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE queues_task")
        cursor.execute("VACUUM ANALYZE queues_taskevent")


def load_dashboard_data(*, total: int = TOTAL_TASKS, event_days: int = EVENT_DAYS) -> dict:
    """The demo clinic, `total` tasks, and the last `event_days` of the dashboard's facts."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from clinicdesk.demo import build_demo_clinic
    from escalation.models import EscalationStep, SlaPolicy
    from queues.benchmarks import bulk_load_tasks
    from queues.forms import HOLD_REASONS
    from queues.models import Queue
    from routing.models import ClassificationRule, RuleSet

    build_demo_clinic()
    began = time.perf_counter()
    load = bulk_load_tasks(total)
    rule_set = RuleSet.objects.get(status=RuleSet.Status.ACTIVE)
    class_rules = list(
        ClassificationRule.objects.filter(rule_set=rule_set)
        .order_by("id")
        .values_list("id", flat=True)
    )
    person = get_user_model().objects.get(username="supervisor1")
    records_queue = Queue.objects.get(code="records")
    policy = SlaPolicy.objects.create(
        name="Bench: claim in 2 hours, resolve in a day",
        order=1,
        first_claim_minutes=120,
        resolution_minutes=24 * 60,
    )
    step = EscalationStep.objects.create(
        policy=policy, level=1, target="first_claim", percent=100, action="notify_supervisor"
    )
    since = timezone.now() - timedelta(days=event_days)
    params: dict[str, Any] = {
        "since": since,
        "version": rule_set.version,
        "rule_set": rule_set.pk,
        "class_rules": class_rules,
        "class_rule_count": len(class_rules),
        "person": person.pk,
        "records_queue": records_queue.pk,
        "reasons": list(HOLD_REASONS),
        "policy": policy.pk,
        "step": step.pk,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TASK_FACTS_SQL, params)
        cursor.execute(_EVENTS_SQL, params)
        events = cursor.rowcount
        cursor.execute(_ESCALATIONS_SQL, params)
        for table in ("queues_task", "queues_taskevent", "escalation_escalation"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return {
        "tasks": load.rows,
        "events": events,
        "load_s": round(time.perf_counter() - began, 1),
    }


def _median_ms(client, url: str) -> tuple[float, float]:
    """Median and p90 server time of `url` over REQUESTS requests, after two warm-up ones."""
    samples = []
    for n in range(REQUESTS + 2):
        began = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        if n >= 2:
            samples.append(elapsed)
    return round(median(samples) * 1000, 1), round(percentile(samples, 90) * 1000, 1)


def dashboard_30_days_1m(ctx: BenchContext) -> dict[str, Any]:
    """Server time of `/dashboard/` (and of rule health) for a manager, 30-day period, over
    1,000,000 tasks."""
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client
    from django.test.utils import override_settings
    from django.urls import reverse

    hosts = ["testserver", "localhost", "127.0.0.1"]
    page = reverse("dashboard:index") + "?period=30"
    rules = reverse("dashboard:rules") + "?period=30"
    figures: dict[str, Any] = {}
    with (
        override_settings(DEBUG=False, ALLOWED_HOSTS=hosts),
        ctx.scratch_database("dashboard_1m"),
    ):
        facts = load_dashboard_data()
        ctx.log(f"loaded {facts}")
        client = Client()
        client.force_login(get_user_model().objects.get(username="manager1"))
        _analyze()
        figures["page_median_ms"], figures["page_p90_ms"] = _median_ms(client, page)
        figures["rules_median_ms"], figures["rules_p90_ms"] = _median_ms(client, rules)
        connections.close_all()
    return {
        **figures,
        "target_page_median_ms": "<= 500",
        "tasks": facts["tasks"],
        "events": facts["events"],
    }


BENCHMARKS = {"dashboard_30_days_1m": dashboard_30_days_1m}
