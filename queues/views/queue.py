"""The queue pages: every queue a person may see with its counts, and one queue's tasks,
filtered and sorted in the URL, fifty at a time by a keyset cursor over the sort key, and
refreshed by htmx every few seconds from the same fragment the page renders. Supervisors of
a queue reassign its tasks in bulk.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Min, Q, QuerySet
from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from queues.filters import SORT_CHOICES, SORTS, BulkReassignForm, QueueFilterForm
from queues.models import Queue, Task, queue_access_annotations
from queues.selectors import ROLE_COMPLIANCE, ROLE_SUPERVISOR

# The pages are entry points like the API: a change that frees or takes capacity goes through
# routing's orchestrating function, which also offers the freed capacity to queued work.
from routing import services as routing_services
from routing.selectors import NoActiveRuleSet

PAGE_SIZE = 50
REFRESH_SECONDS = 10
CURSOR_KEYS = ("after", "before")
# What "earlier" and "later" pages hold, in each sort's words.
PAGE_LABELS = {
    "priority": ("Previous page", "Next page"),
    "age": ("Older", "Newer"),
    "updated": ("Newer", "Older"),
}
OPEN = Q(tasks__status__in=Task.OPEN_STATUSES)
UNASSIGNED = Q(tasks__status=Task.Status.QUEUED, tasks__assignee__isnull=True)


@login_required
def queue_list(request):
    queues = (
        Queue.objects.visible_to(request.user)
        .filter(is_active=True)
        .select_related("department")
        .annotate(
            open_count=Count("tasks", filter=OPEN),
            urgent_count=Count("tasks", filter=OPEN & Q(tasks__priority=1)),
            unassigned_count=Count("tasks", filter=UNASSIGNED),
            waiting_count=Count("tasks", filter=UNASSIGNED & Q(tasks__waiting_for_capacity=True)),
            oldest_unassigned=Min("tasks__created_at", filter=UNASSIGNED),
        )
        .order_by("department__name", "name")
    )
    return render(request, "queues/queue_list.html", {"queues": queues})


@login_required
def queue_detail(request, queue_id: int):
    queue = _get_queue_for_user(request.user, queue_id)
    context = {"queue": queue, **_listing(request, queue)}
    if queue.supervised:
        context["reassign_form"] = BulkReassignForm(
            queue=queue,
            visible_tasks=Task.objects.visible_to(request.user),
            initial={"query": context["page_query"]},
        )
    return render(request, "queues/queue.html", context)


@login_required
def queue_rows(request, queue_id: int):
    """The rows fragment that the page polls (with X-Idle-Poll, so idle logoff still works)."""
    queue = _get_queue_for_user(request.user, queue_id)
    context = {"queue": queue, **_listing(request, queue)}
    return render(request, "queues/queue.html#rows", context)


@login_required
@require_POST
def queue_reassign(request, queue_id: int):
    queue = _get_queue_for_user(request.user, queue_id)
    if not queue.supervised:
        raise PermissionDenied("Only a supervisor of this queue reassigns its tasks.")
    form = BulkReassignForm(
        request.POST, queue=queue, visible_tasks=Task.objects.visible_to(request.user)
    )
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect(_queue_url(queue, request.POST.get("query", "")))
    person, reason = form.cleaned_data["assignee"], form.cleaned_data["reason"]
    done, refused = _reassign_each(form.cleaned_data["tasks"], request.user, person, reason)
    name = person.get_full_name() or person.get_username()
    if done:
        messages.success(request, f"Reassigned {_tasks(done)} to {name}.")
    for why, ids in refused.items():
        messages.warning(request, f"Not reassigned: {_task_ids(ids)}. {why}")
    return redirect(_queue_url(queue, form.cleaned_data["query"]))


# --- helpers -------------------------------------------------------------------------------


def _get_queue_for_user(user, queue_id: int) -> Queue:
    """The queue when the user may see it (404 otherwise), with what they may do there: work it
    (their department's queue) and supervise it (the Supervisor role as well). Compliance
    reviewers only read. One query, with the permission rules of `Queue.objects.visible_to`
    and `workable_by` as hand-written EXISTS (`queue_access_annotations`)."""
    if not user.is_authenticated or not user.is_active:
        raise Http404("No such queue.")
    queue = get_object_or_404(
        Queue.objects.select_related("department").annotate(
            **queue_access_annotations(user, roles=(ROLE_SUPERVISOR, ROLE_COMPLIANCE))
        ),
        pk=queue_id,
    )
    if not queue.user_may_see:
        raise Http404("No such queue.")
    queue.works = queue.user_may_work and not queue.user_is_compliance
    queue.supervised = queue.works and queue.user_is_supervisor
    return queue


COUNT_CAP = 1000


def _listing(request, queue: Queue) -> dict:
    """One page of the queue's tasks as the query string asks: filters, sort and cursor."""
    now = timezone.now()
    form = QueueFilterForm(request.GET)
    sort = form.sort_key
    # `queue` came from `_get_queue_for_user`, which answered 404 unless the user may see it,
    # so every task in it is visible: repeating `Task.objects.visible_to` here would only
    # make PostgreSQL plan the permission subqueries twice more per view (~3 ms a page).
    tasks = form.filter_queryset(Task.objects.filter(queue=queue), now=now)
    after, before = (_decode(sort, request.GET.get(key, "")) for key in CURSOR_KEYS)
    rows, has_earlier, has_later = _page(tasks, sort, after=after, before=before)
    filters = _query(request.GET, with_cursor=False)
    earlier, later = PAGE_LABELS[sort]
    return {
        "form": form,
        "sort": sort,
        "sort_label": dict(SORT_CHOICES)[sort],
        "sort_urls": {key: _sort_url(request.GET, key) for key in SORTS},
        "tasks": rows,
        # Counting stops past COUNT_CAP: an exact total of a huge backlog costs a scan of it
        # on every refresh, and "1000+" tells a person as much.
        "total": min(total := tasks[: COUNT_CAP + 1].count(), COUNT_CAP),
        "total_capped": total > COUNT_CAP,
        "now": now,
        "refresh_seconds": REFRESH_SECONDS,
        "filters_query": filters,
        "page_query": _query(request.GET, with_cursor=True),
        "earlier": _link(filters, "before", sort, rows[0]) if has_earlier else None,
        "later": _link(filters, "after", sort, rows[-1]) if has_later else None,
        "earlier_label": earlier,
        "later_label": later,
    }


def _page(
    tasks: QuerySet[Task], sort: str, *, after: tuple | None, before: tuple | None
) -> tuple[list[Task], bool, bool]:
    """A page of PAGE_SIZE rows after (or before) a cursor, and whether rows lie either side.

    The rows are fetched by the sort key (WHERE key > cursor ORDER BY key LIMIT n+1), so a page
    costs the same however deep it is, and rows that arrive or leave meanwhile shift nothing.
    """
    # "sla" (escalation's TaskSla, by name: queues does not import escalation), with its policy
    # and calendar, for the badge: it counts clinic hours when the policy does.
    tasks = tasks.select_related("task_type", "assignee", "sla__policy__calendar").defer(
        "body", "metadata"
    )
    if before is not None:
        earlier = tasks.filter(_beyond(sort, before, backwards=True))
        rows = list(earlier.order_by(*_order(sort, backwards=True))[: PAGE_SIZE + 1])
        if len(rows) > PAGE_SIZE:
            return rows[:PAGE_SIZE][::-1], True, True
        # Back at the start: show a full first page rather than the few rows left before.
        after = None
    later = tasks.filter(_beyond(sort, after)) if after is not None else tasks
    rows = list(later.order_by(*_order(sort))[: PAGE_SIZE + 1])
    if after is not None and not rows:
        # Everything after the cursor has gone (resolved, moved on): start again at the top.
        return _page(tasks, sort, after=None, before=None)
    return rows[:PAGE_SIZE], after is not None, len(rows) > PAGE_SIZE


def _order(sort: str, backwards: bool = False) -> list[str]:
    return [("-" if desc != backwards else "") + field for field, desc in SORTS[sort]]


def _beyond(sort: str, values: tuple, backwards: bool = False) -> Q:
    """Rows strictly after `values` in the sort's order (strictly before, backwards)."""
    condition, equal = Q(), {}
    for (field, desc), value in zip(SORTS[sort], values, strict=True):
        lookup = "lt" if desc != backwards else "gt"
        condition |= Q(**equal, **{f"{field}__{lookup}": value})
        equal[field] = value
    return condition


def _encode(sort: str, task: Task) -> str:
    values = [getattr(task, field) for field, _ in SORTS[sort]]
    raw = "|".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(sort: str, token: str) -> tuple | None:
    """The sort key values of a cursor; None (the first page) for a cursor that does not fit,
    such as one left in the URL after the sort changed."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = raw.split("|")
        fields = [field for field, _ in SORTS[sort]]
        if len(parts) != len(fields):
            return None
        return tuple(
            datetime.fromisoformat(part) if field.endswith("_at") else int(part)
            for field, part in zip(fields, parts, strict=True)
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _query(params: QueryDict, *, with_cursor: bool) -> str:
    """The part of a query string that describes the list, cleaned of anything else."""
    keys = (*QueueFilterForm.KEYS, *(CURSOR_KEYS if with_cursor else ()))
    return urlencode([(key, params[key]) for key in keys if params.get(key)])


def _sort_url(params: QueryDict, sort: str) -> str:
    """The same filters in another order, from its first page."""
    pairs = [(k, params[k]) for k in QueueFilterForm.KEYS if params.get(k) and k != "sort"]
    return "?" + urlencode([*pairs, ("sort", sort)])


def _link(filters: str, direction: str, sort: str, task: Task) -> str:
    return "?" + "&".join(part for part in (filters, f"{direction}={_encode(sort, task)}") if part)


def _queue_url(queue: Queue, query: str) -> str:
    kept = _query(QueryDict(query), with_cursor=True)
    url = reverse("queues:queue", args=[queue.pk])
    return f"{url}?{kept}" if kept else url


def _reassign_each(
    task_ids: list[int], actor, person, reason: str
) -> tuple[list[int], dict[str, list[int]]]:
    """One transaction per task, so one refusal (at capacity, already moved on) does not undo
    the others. Returns the reassigned ids and the refused ones grouped by reason."""
    done, refused = [], defaultdict(list)
    for task_id in task_ids:
        try:
            routing_services.task_reassign(
                task_id=task_id, actor=actor, to_user=person, reason=reason
            )
        except ValidationError as error:
            refused[" ".join(error.messages)].append(task_id)
        except NoActiveRuleSet as error:
            refused[str(error)].append(task_id)
        else:
            done.append(task_id)
    return done, dict(refused)


def _tasks(ids: list[int]) -> str:
    return f"{len(ids)} task{'s' if len(ids) != 1 else ''} ({_task_ids(ids)})"


def _task_ids(ids: list[int]) -> str:
    return ", ".join(f"#{task_id}" for task_id in ids)
