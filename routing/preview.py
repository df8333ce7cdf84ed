"""Try a rule set on one message without creating a task: what the engine would decide, and
why. Used by the admin's "Try the rules" page and by `manage.py try_rules`.

Nothing here writes: the reads run in a read-only transaction that is then rolled back, so
PostgreSQL itself refuses any write that a future change might slip in.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from routing import engine, selectors


def preview_key(channel: str, subject: str, body: str) -> str:
    """A stable stand-in for the task id that rollout buckets hash: the same message lands
    in the same bucket every time it is tried."""
    digest = hashlib.sha256(f"{channel}\n{subject}\n{body}".encode()).hexdigest()[:16]
    return f"preview:{digest}"


def preview(
    *,
    rule_set_id: int | None,
    channel: str,
    subject: str,
    body: str,
    request_type: str = "",
    site_id: int | None = None,
    patient_mrn: str = "",
    now: datetime | None = None,
    source_system: str = "",
) -> engine.Decision:
    """The decision the rule set (the active one when `rule_set_id` is None) would make for
    this message now, against the staff as they are. Raises `selectors.NoActiveRuleSet`."""
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
        snapshot = selectors.routing_snapshot(rule_set_id)
        local_now, site_open = snapshot.local_now(site_id, now)
        facts = engine.TaskFacts(
            key=preview_key(channel, subject, body),
            channel=channel,
            subject=subject,
            body=body,
            local_now=local_now,
            request_type=request_type,
            source_system=source_system,
            site_id=site_id,
            patient_key=patient_mrn,
            site_business_open=site_open,
        )
        pool = engine.CandidatePool(selectors.candidates(patient_key=patient_mrn))
        decision = engine.decide(snapshot.compiled, facts, pool, now)
        # Undo the read-only mode too: inside an outer transaction this is a savepoint.
        transaction.set_rollback(True)
    return decision


def decision_summary(decision: engine.Decision) -> dict[str, Any]:
    """The decision as one JSON-able object: what `try_rules --json` prints a line of, and
    what the admin page shows."""
    explanation = decision.explanation_dict()
    applied_names = {
        (m["kind"], m["id"]): m["name"] for m in explanation["matched"] if m["status"] == "applied"
    }
    rules = [
        {
            "kind": "classification",
            "id": rule_id,
            "name": applied_names.get(("classification", rule_id), ""),
        }
        for rule_id in decision.classification_rule_ids
    ]
    if decision.routing_rule_id is not None:
        rule_id = decision.routing_rule_id
        rules.append(
            {"kind": "routing", "id": rule_id, "name": applied_names.get(("routing", rule_id), "")}
        )
    chosen = explanation["assignment"]["chosen"]
    return {
        "task_type": decision.task_type,
        "priority": decision.priority,
        "queue": explanation["route"]["queue"],
        "queue_id": decision.queue_id,
        "tags": list(decision.tags),
        "rule_set_version": decision.rule_set_version,
        "rules": rules,
        "needs_review": decision.needs_review,
        "assignee": chosen["name"] if chosen else None,
        "explanation": explanation,
    }


def rule_set_problems(decision: engine.Decision) -> tuple[str, ...]:
    """Rules the engine disabled when it compiled the rule set (they never apply)."""
    return tuple(decision.explanation.ruleset.problems)
