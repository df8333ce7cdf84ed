"""Filters shared by the task pages: badges for priority and status, a task's age, a patient's
initials for lists, and readable actor labels.

    {% load clinicdesk_tasks %}
    {{ task.priority|priority_badge }} {{ task.status|status_badge }}
    {{ task.created_at|age }} {{ task.resolve_due_at|due }} {{ task|patient_initials }}
    {{ event.actor_label|actor_name }} {{ task.assignee|person }}
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from queues import selectors
from queues.models import Priority, Task

register = template.Library()

PRIORITY_SHORT = {1: "Urgent", 2: "High", 3: "Routine", 4: "Low"}


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@register.filter
def priority_badge(value):
    """`P1 Urgent` as a coloured badge; the text carries the meaning, not only the colour."""
    number = _int(value)
    if number not in PRIORITY_SHORT:
        return ""
    return format_html(
        '<span class="badge badge--p{}" title="{}">P{} <span class="badge__text">{}</span></span>',
        number,
        Priority(number).label,
        number,
        PRIORITY_SHORT[number],
    )


@register.filter
def status_badge(value):
    """A task status (`on_hold`, or a Task) as a badge with its label."""
    status = value.status if isinstance(value, Task) else str(value or "")
    if status not in Task.Status.values:
        return ""
    return format_html('<span class="badge badge--{}">{}</span>', status, Task.Status(status).label)


def age_text(then: datetime | None, now: datetime | None = None) -> str:
    """How long ago, compactly: `just now`, `12 min`, `3 h 5 min`, `2 d 4 h`, `5 wk`."""
    if not isinstance(then, datetime):
        return ""
    seconds = max(((now or timezone.now()) - then) / timedelta(seconds=1), 0)
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    if days < 14:
        return f"{days} d {hours} h" if hours else f"{days} d"
    return f"{days // 7} wk"


@register.filter
def age(value):
    return age_text(value)


@register.filter
def ago(value) -> str:
    """`12 min ago`, or `just now`."""
    text = age_text(value)
    return text if text in ("", "just now") else f"{text} ago"


@register.filter
def due(value) -> str:
    """`in 3 h 5 min` for a due time ahead, `2 h overdue` for one passed."""
    if not isinstance(value, datetime):
        return ""
    now = timezone.now()
    if value >= now:
        ahead = age_text(now, value)
        return "due now" if ahead == "just now" else f"in {ahead}"
    late = age_text(value, now)
    return "due now" if late == "just now" else f"{late} overdue"


@register.filter
def patient_initials(value) -> str:
    """Initials for lists (`JMR`), from a task or a name; the full name stays on the task page."""
    name = value.patient_name if isinstance(value, Task) else str(value or "")
    return "".join(part[0].upper() for part in name.replace(",", " ").split() if part)[:3]


@register.filter
def actor_name(value) -> str:
    """`client:ehr` → `Integration: ehr`, `system:router` → `Routing engine`; a TaskEvent shows
    its person's full name."""
    if hasattr(value, "actor_label"):
        return selectors.actor_display(value.actor_label, value.actor)[0]
    return selectors.actor_display(str(value or ""))[0]


@register.filter
def person(user) -> str:
    """A user's full name, else their username."""
    return selectors.person_name(user)
