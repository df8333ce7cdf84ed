"""Filters shared by the task pages: badges for priority and status, a task's age, a patient's
initials for lists, and readable actor labels.

    {% load clinicdesk_tasks %}
    {{ task.priority|priority_badge }} {{ task.status|status_badge }}
    {{ task.created_at|age }} {{ task.resolve_due_at|due }} {{ task|patient_initials }}
    {{ event.actor_label|actor_name }} {{ task.assignee|person }}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from django import template
from django.forms.utils import flatatt
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.dates import MONTHS_3, WEEKDAYS_ABBR
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext

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


# --- list rows -----------------------------------------------------------------------------
# The queue page draws 50 rows every 10 seconds per open tab. Written as template markup, a row
# cost about 0.3 ms of variable lookups and filters (15 ms a page, half its server time);
# these tags build the same markup in Python. The markup lives here only.


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def short_when(value: datetime) -> str:
    """`Nov 23, 7:56 AM`: the `date:"M j, g:i A"` filter, without the template machinery."""
    local = _local(value)
    hour = local.hour % 12 or 12
    half = gettext("AM") if local.hour < 12 else gettext("PM")
    return f"{MONTHS_3[local.month].title()} {local.day}, {hour}:{local.minute:02d} {half}"


def long_when(value: datetime) -> str:
    """`Mon Nov 23, 7:56 AM`: the `date:"D M j, g:i A"` filter, as `short_when`."""
    return f"{WEEKDAYS_ABBR[_local(value).weekday()]} {short_when(value)}"


def iso_when(value: datetime) -> str:
    """The `date:"c"` filter: ISO 8601 in the clinic's time zone, for `<time datetime>`."""
    return _local(value).isoformat()


@register.simple_tag
def patient_cell(task) -> str:
    """A list's patient cell: initials and MRN only; the full name stays on the task page."""
    if not (task.patient_mrn or task.patient_name):
        return mark_safe('<span class="muted">—</span>')
    return format_html(
        '<span class="patient"><abbr class="patient__initials" title="Patient initials">{}</abbr>'
        ' <span class="patient__mrn"><span class="visually-hidden">MRN </span>{}</span></span>',
        task.patient_initials or "—",
        task.patient_mrn or "no MRN",
    )


@register.simple_tag
def age_cell(task, now: datetime | None = None) -> str:
    """How long ago the task arrived, with the exact time on hover."""
    created = task.created_at
    return format_html(
        '<time datetime="{}" title="Received {}">{}</time>',
        iso_when(created),
        short_when(created),
        age_text(created, now),
    )


@register.simple_tag
def queue_row(task, *, now: datetime, supervised: bool, sort: str, sla: str = "") -> str:
    """One row of the queue page's table (`sla` is the task's SLA badge, drawn by escalation's
    `sla_badge` filter, which this app does not import)."""
    pk = task.pk
    pick = (
        format_html(
            '<td class="col-pick"><input type="checkbox" name="tasks" value="{}" id="pick-{}"'
            ' hx-preserve="true" data-pick aria-label="Select task #{}"></td>',
            pk,
            pk,
            pk,
        )
        if supervised
        else ""
    )
    kind = format_html(" · {}", task.task_type.name) if task.task_type_id else ""
    waiting = task.waiting_for_capacity
    assignee = (
        format_html("{}", selectors.person_name(task.assignee))
        if task.assignee_id
        else mark_safe('<span class="muted">Unassigned</span>')
    )
    updated = ""
    if sort == "updated":
        text = age_text(task.updated_at, now)
        updated = format_html(
            '<td class="col-updated"><time datetime="{}" title="{}">{}</time></td>',
            iso_when(task.updated_at),
            short_when(task.updated_at),
            text if text == "just now" else f"{text} ago",
        )
    return format_html(
        '<tr data-row data-task-id="{}"{}>{}'
        '<td class="col-priority">{}</td>'
        '<th scope="row"><a class="cell-title row-link" href="{}" data-row-link>{}</a>'
        '<span class="cell-sub">#{}{}</span></th>'
        '<td class="col-patient">{}</td>'
        '<td class="col-status">{}{}</td>'
        '<td class="col-assignee">{}</td>'
        '<td class="col-age">{}</td>'
        '<td class="col-sla">{}</td>{}</tr>',
        pk,
        mark_safe(' class="is-waiting"') if waiting else "",
        pick,
        priority_badge(task.priority),
        _task_url(get_script_prefix()).format(pk),
        task.subject,
        pk,
        kind,
        patient_cell(task),
        status_badge(task.status),
        WAITING_BADGE if waiting else "",
        assignee,
        age_cell(task, now),
        sla,
        updated,
    )


@lru_cache(maxsize=8)
def _task_url(prefix: str) -> str:
    """The task page's URL with `{}` for the id: one `reverse` per script prefix, not 50 a
    page (the prefix is an argument so that a deployment under a sub-path is keyed apart)."""
    return reverse("queues:task", args=[999999999]).replace("999999999", "{}")


WAITING_BADGE = mark_safe(
    ' <span class="badge badge--waiting" title="Nobody eligible has room; it is offered again'
    ' as soon as someone does">Waiting for capacity</span>'
)


@register.simple_tag
def select_field(field) -> str:
    """A form field's `<select>`, as `{{ field }}` draws it (same attributes, the same option
    selected), built in Python: Django draws every option through a template of its own,
    about 0.6 ms a filter on the list pages. Anything but a flat single choice is left to
    Django."""
    widget = field.field.widget
    # Iterated, not list(): a model field's choices would first COUNT(*) for a length hint.
    choices = [choice for choice in widget.choices]
    nested = any(isinstance(label, (list, tuple)) for _, label in choices)
    if widget.allow_multiple_selected or nested:
        return str(field)
    attrs = field.build_widget_attrs({}, widget)
    if field.auto_id and "id" not in widget.attrs:
        attrs.setdefault("id", field.auto_id)
    attrs = widget.build_attrs(widget.attrs, attrs)
    chosen = set(widget.format_value(field.value()))
    options, found = [], False
    for value, label in choices:
        value = "" if value is None else str(value)
        selected = not found and value in chosen
        found = found or selected
        options.append((value, " selected" if selected else "", label))
    return format_html(
        '<select name="{}"{}>{}</select>',
        field.html_name,
        flatatt(attrs),
        format_html_join("", '<option value="{}"{}>{}</option>', options),
    )
