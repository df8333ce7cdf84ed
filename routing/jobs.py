"""Routing's scheduled jobs (django-q2): plain functions that call the orchestrating services.

Schedules are declared in code by `manage.py setup_schedules`.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from routing import services

logger = logging.getLogger(__name__)

FOLLOW_UP_ACTOR = "system:follow_up"
BATCH = 200

DUE_FOLLOW_UPS_SQL = """
SELECT id FROM queues_task
 WHERE status = 'on_hold' AND follow_up_at <= %(now)s
 ORDER BY follow_up_at, id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED
"""


@transaction.atomic
def resume_due_follow_ups(*, limit: int = BATCH) -> int:
    """Bring back the on-hold tasks whose follow-up time has passed: to their holder when they
    have room, otherwise to their queue, where they are offered again. Returns how many.

    One set-based query picks a bounded batch and keeps those rows locked to the end of the
    transaction, skipping rows another run (or a person) holds: two clusters at once, or a run
    that overlaps the next minute's, never resume a task twice, and a re-run finds the task no
    longer on hold. The rest of a large backlog is left for the next minute's run.
    """
    with connection.cursor() as cursor:
        cursor.execute(DUE_FOLLOW_UPS_SQL, {"now": timezone.now(), "limit": limit})
        task_ids = [row[0] for row in cursor.fetchall()]
    resumed = 0
    for task_id in task_ids:
        try:
            # Nested, task_resume runs in a savepoint: one that cannot resume undoes no other.
            services.task_resume(task_id=task_id, actor=FOLLOW_UP_ACTOR)
        except ValidationError as error:
            logger.warning("Follow-up of task %s not resumed: %s", task_id, error.messages)
        else:
            resumed += 1
    return resumed


def publish_due_rule_sets(*, now=None) -> int:
    """Activate the approved rule-set drafts whose effective time has come (every minute).
    Idempotent: a published draft is no longer a draft, and every run locks the rule sets, so
    two clusters at once publish each set once. Returns how many went live."""
    published = services.rule_set_publish_due(now=now)
    for rule_set in published:
        logger.info("Rule set v%s published as scheduled.", rule_set.version)
    return len(published)
