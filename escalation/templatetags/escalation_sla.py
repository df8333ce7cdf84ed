"""The SLA badge of a task: On time, At risk or Breached, with the time left in words.

    {% load escalation_sla %}
    {{ task|sla_badge:now }}   {# or {{ task|sla_badge }} for the current time #}

The target watched is the first-claim one until the task is first claimed, then the
resolution one. "At risk" means the sweep marked the task so (`TaskSla.at_risk`, from a
"mark at risk" step) or less than a quarter of the target is left; the quarter is measured in
wall-clock time from receipt to the due time, which is close enough for a badge even when the
policy counts business hours. A closed task, or one without a due time, has no badge.

The TaskSla row is read only when the view fetched it (`select_related("sla")`): a template
filter never runs a query of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from queues.models import Task
from queues.templatetags.clinicdesk_tasks import age_text, long_when

register = template.Library()

AT_RISK_SHARE = 0.25


@dataclass(frozen=True)
class SlaState:
    state: str  # "on-time", "at-risk" or "breached": also the badge's CSS modifier
    label: str
    target: str
    due_at: datetime
    words: str


LABELS = {"on-time": "On time", "at-risk": "At risk", "breached": "Breached"}


def _cached_sla(task: Task):
    """The task's TaskSla when the query fetched it, else None (never a query)."""
    return Task.sla.related.get_cached_value(task, default=None)


def _duration(start: datetime, end: datetime) -> str:
    text = age_text(start, end)
    return "less than 1 min" if text == "just now" else text


def sla_state(task: Task, now: datetime | None = None) -> SlaState | None:
    if not isinstance(task, Task) or not task.is_open:
        return None
    if task.first_claimed_at is None and task.claim_due_at is not None:
        target, due_at = "First claim", task.claim_due_at
    elif task.resolve_due_at is not None:
        target, due_at = "Resolution", task.resolve_due_at
    else:
        return None
    now = now or timezone.now()
    if now >= due_at:
        state, words = "breached", f"overdue by {_duration(due_at, now)}"
    else:
        start = task.received_at or task.created_at or now
        whole = max(due_at - start, timedelta(0))
        left = due_at - now
        sla = _cached_sla(task)
        flagged = bool(sla is not None and sla.at_risk)
        state = "at-risk" if flagged or left < whole * AT_RISK_SHARE else "on-time"
        words = f"{_duration(now, due_at)} left"
    return SlaState(state=state, label=LABELS[state], target=target, due_at=due_at, words=words)


@register.filter
def sla_badge(task, now=None):
    """`At risk · 25 min left` as a badge; the words carry the meaning, not only the colour."""
    sla = sla_state(task, now if isinstance(now, datetime) else None)
    if sla is None:
        return ""
    return format_html(
        '<span class="badge badge--sla badge--{}" title="{} due {}">'
        '<span class="visually-hidden">SLA {}: </span>{} · {}</span>',
        sla.state,
        sla.target,
        long_when(sla.due_at),
        sla.target.lower(),
        sla.label,
        sla.words,
    )
