"""The SLA badge of a task: On time, At risk or Breached, with the time left in words.

    {% load escalation_sla %}
    {{ task|sla_badge:now }}   {# or {{ task|sla_badge }} for the current time #}

The target watched is the first-claim one until the task is first claimed, then the
resolution one. "At risk" means the sweep marked the task so (`TaskSla.at_risk`, from a
"mark at risk" step) or less than a quarter of the target is left, on the policy's clock (see
below). A closed task, or one without a due time, has no badge.

The TaskSla row is read only when the view fetched it (`select_related("sla")`): a template
filter never runs a query of its own. When the view also fetched the policy's calendar
(`select_related("sla__policy__calendar")`) and the policy counts clinic hours, the time left
(or overdue) and the at-risk quarter are counted in clinic hours too ("2 h left" at 7 p.m.
for a task due at 10 the next morning, and the tooltip says it counts clinic hours), as the
deadline itself was; otherwise
wall-clock time. The calendar is built (holidays, and its closures: one query) once an hour
per process and calendar edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from escalation import business_time
from escalation.models import BusinessCalendar, SlaPolicy, TaskSla
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
    clock: str = ""  # "clinic hours" when the words count the policy's calendar


LABELS = {"on-time": "On time", "at-risk": "At risk", "breached": "Breached"}


def _cached_sla(task: Task):
    """The task's TaskSla when the query fetched it, else None (never a query)."""
    return Task.sla.related.get_cached_value(task, default=None)


def _cached_calendar(sla) -> BusinessCalendar | None:
    """The business calendar of the task's policy when the query fetched them
    (`select_related("sla__policy__calendar")`), else None (never a query)."""
    if sla is None:
        return None
    policy = TaskSla._meta.get_field("policy").get_cached_value(sla, default=None)
    if policy is None:
        return None
    return SlaPolicy._meta.get_field("calendar").get_cached_value(policy, default=None)


# Built calendars (with their public holidays and closures), per calendar row and edit, and per
# hour so that a closure added outside the admin is seen within the hour.
_BUILT: dict[tuple[int, datetime | None, int, tuple[int, ...]], business_time.Calendar] = {}


def _business_calendar(calendar: BusinessCalendar, years: tuple[int, ...], now: datetime):
    key = (calendar.pk, calendar.updated_at, int(now.timestamp() // 3600), years)
    built = _BUILT.get(key)
    if built is None:
        if len(_BUILT) > 64:
            _BUILT.clear()
        built = _BUILT[key] = calendar.as_calendar(years)
    return built


def _business_minutes(calendar, start: datetime, end: datetime, now: datetime) -> float:
    years = tuple(range(min(start, end).year, max(start, end).year + 1))
    return business_time.business_minutes_between(
        _business_calendar(calendar, years, now), start, end
    )


def _minutes_text(minutes: float) -> str:
    whole = int(minutes)
    if whole < 1:
        return "less than 1 min"
    hours, rest = divmod(whole, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


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
    sla = _cached_sla(task)
    calendar = _cached_calendar(sla)
    if calendar is not None:
        # The policy counts clinic hours: so do the words and the at-risk share.
        return _business_state(task, sla, calendar, target, due_at, now)
    if now >= due_at:
        state, words = "breached", f"overdue by {_duration(due_at, now)}"
    else:
        start = task.received_at or task.created_at or now
        whole = max(due_at - start, timedelta(0))
        left = due_at - now
        flagged = bool(sla is not None and sla.at_risk)
        state = "at-risk" if flagged or left < whole * AT_RISK_SHARE else "on-time"
        words = f"{_duration(now, due_at)} left"
    return SlaState(state=state, label=LABELS[state], target=target, due_at=due_at, words=words)


def _business_state(task, sla, calendar, target: str, due_at: datetime, now: datetime):
    if now >= due_at:
        late = _business_minutes(calendar, due_at, now, now)
        state, words = "breached", f"overdue by {_minutes_text(late)}"
    else:
        # The whole target is the policy's minutes of clinic time (the deadline was planned
        # from them), so only the time left is counted here.
        policy = sla.policy
        whole = (
            policy.first_claim_minutes if target == "First claim" else policy.resolution_minutes
        ) or 0
        left = _business_minutes(calendar, now, due_at, now)
        state = "at-risk" if sla.at_risk or left < whole * AT_RISK_SHARE else "on-time"
        words = f"{_minutes_text(left)} left"
    return SlaState(
        state=state,
        label=LABELS[state],
        target=target,
        due_at=due_at,
        words=words,
        clock="clinic hours",
    )


@register.filter
def sla_badge(task, now=None):
    """`At risk · 25 min left` as a badge; the words carry the meaning, not only the colour."""
    sla = sla_state(task, now if isinstance(now, datetime) else None)
    if sla is None:
        return ""
    # The words stay short for the lists' Due column; whether they count clinic hours is in
    # the tooltip and read out to screen readers.
    clock = f", counted in {sla.clock}" if sla.clock else ""
    return format_html(
        '<span class="badge badge--sla badge--{}" title="{} due {}{}">'
        '<span class="visually-hidden">SLA {}{}: </span>{} · {}</span>',
        sla.state,
        sla.target,
        long_when(sla.due_at),
        clock,
        sla.target.lower(),
        clock,
        sla.label,
        sla.words,
    )
