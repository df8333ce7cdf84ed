"""What a person reads off the work pages, read from their HTML: the CSRF token of a form,
the tasks on My work, the actions a task page offers and its version, the queues one may open.

Plain functions over text, with no Locust and no Django in them, so that the locustfile (which
runs under gevent) and the tests share them.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_VERSION = re.compile(r'name="expected_version" value="(\d+)"')
_ROW = re.compile(r'data-task-id="(\d+)"')
_QUEUE_LINK = re.compile(r'href="/queues/(\d+)/"')
_TASK_PATH = re.compile(r"^/tasks/(\d+)/$")
_HELD_SECTION = 'id="held-heading"'
_ERROR_ALERT = "alert--error"


def csrf_token(html: str) -> str | None:
    match = _CSRF.search(html)
    return match.group(1) if match else None


def my_work_tasks(html: str) -> tuple[list[int], list[int]]:
    """(assigned and in-progress task ids, on-hold task ids), in the page's order."""
    active, _, held = html.partition(_HELD_SECTION)
    return _ids(_ROW.findall(active)), _ids(_ROW.findall(held))


def task_version(html: str) -> int | None:
    """The task's version that the page's forms send back (stale pages are refused)."""
    match = _VERSION.search(html)
    return int(match.group(1)) if match else None


def task_offers(html: str, task_id: int, action: str) -> bool:
    """Whether the task page offers this action (its form posts to the action's URL)."""
    return f'action="/tasks/{task_id}/{action}/"' in html


def queue_ids(html: str) -> list[int]:
    """The queues linked from the Queues page."""
    return _ids(_QUEUE_LINK.findall(html))


def task_id_of(location: str) -> int | None:
    """The task a redirect leads to (`/tasks/<id>/`), or None for any other page."""
    match = _TASK_PATH.match(urlsplit(location).path)
    return int(match.group(1)) if match else None


def page_name(location: str) -> str:
    """The name a followed redirect is counted under in the report."""
    path = urlsplit(location).path
    if _TASK_PATH.match(path):
        return "GET task page"
    if path == "/work/":
        return "GET my work"
    return f"GET {path}"


def shows_error(html: str) -> bool:
    """Whether the page shows an error message (an action refused, a form not saved)."""
    return _ERROR_ALERT in html


def follow_up_value(now: datetime, zone: str = "America/New_York") -> str:
    """Tomorrow at 9:00 in the clinic's zone, as the hold form's datetime-local field takes it."""
    local_day: date = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
    return datetime.combine(local_day, time(9, 0)).strftime("%Y-%m-%dT%H:%M")


def _ids(found: list[str]) -> list[int]:
    return list(dict.fromkeys(int(x) for x in found))
