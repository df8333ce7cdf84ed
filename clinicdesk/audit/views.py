"""The audit pages: read-only, for holders of `auditlog.view_logentry` (the Compliance and
Manager roles). Everyone else is refused (403), as on the Escalations page; and every request
that is not a read is refused too (403), so nothing here can change anything.

Patient data: the search and its export name tasks by number (the MRN is a filter, never a
column); only a task's complete history shows the patient's name, and opening it is itself
recorded as a read of the task.
"""

from __future__ import annotations

import csv
from datetime import UTC, timedelta
from functools import wraps

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from clinicdesk.audit import selectors
from clinicdesk.audit.forms import AuditSearchForm, DateRangeForm
from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import audit_event_record, record_task_access, record_tasks_access
from queues.models import Task, TaskEvent

PERMISSION = "auditlog.view_logentry"
ROUTED_LIMIT = 200


def auditor_only(view):
    """Signed in, holding the audit permission, and only reading (GET/HEAD)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied("Only compliance reviewers and managers read the audit.")
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied("The audit is read-only.")
        return view(request, *args, **kwargs)

    return wrapper


def _cursor(request):
    value = request.GET.get("after", "")
    return selectors.Cursor.decode(value) if value else None


def _next_url(request, cursor: str) -> str:
    if not cursor:
        return ""
    query = request.GET.copy()
    query["after"] = cursor
    return f"?{query.urlencode()}"


@auditor_only
def search(request):
    submitted = bool(request.GET)
    form = AuditSearchForm(request.GET if submitted else None, initial=_initial_range())
    page = None
    export_query = ""
    if submitted and form.is_valid():
        page = selectors.audit_search(form.filters(), cursor=_cursor(request))
        query = request.GET.copy()
        query.pop("after", None)
        export_query = query.urlencode()
    context = {
        "form": form,
        "page": page,
        "next_url": _next_url(request, page.next_cursor) if page else "",
        "export_query": export_query,
        "paged": "after" in request.GET,
    }
    return render(request, "audit/search.html", context)


def _initial_range() -> dict:
    today = timezone.localdate()
    return {"start": today - timedelta(days=6), "end": today}


class _Echo:
    def write(self, value: str) -> str:
        return value


EXPORT_HEADER = ["time (UTC)", "record", "action", "actor", "task", "object", "object id", "detail"]


@auditor_only
def export(request):
    form = AuditSearchForm(request.GET)
    if not form.is_valid():
        return render(request, "audit/search.html", {"form": form, "page": None}, status=400)
    filters = form.filters()
    # The export is recorded before a byte leaves: a dropped download still counts as read.
    audit_event_record(
        kind=AuditEvent.Kind.EXPORT,
        actor=request.user,
        request=request,
        detail={"filters": filters.describe()},
    )
    if filters.task_id or filters.mrn:
        tasks = Task.objects.filter(
            Q(pk=filters.task_id)
            if filters.task_id
            else Q(patient_mrn=filters.mrn, patient_mrn__nonblank=True)
        )
        record_tasks_access(request.user, tasks.values_list("pk", flat=True), via="export")
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(EXPORT_HEADER)
        for entry in selectors.audit_search_iter(filters):
            yield writer.writerow(
                [
                    entry.at.astimezone(UTC).isoformat(),
                    entry.source_display,
                    entry.kind_display,
                    entry.actor,
                    entry.task_id or "",
                    entry.object_type,
                    entry.object_pk,
                    entry.summary,
                ]
            )

    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response


@auditor_only
def task_history(request, task_id: int):
    task = get_object_or_404(Task.objects.select_related("task_type", "queue"), pk=task_id)
    # The history shows the patient's name: reading it is a read of the task.
    record_task_access(request.user, task, via="audit")
    history = selectors.task_history(task)
    context = {
        "task": task,
        "history": history,
        "views": sum(1 for entry in history.changes if entry.source == "access"),
    }
    return render(request, "audit/task.html", context)


@auditor_only
def person(request, user_id: int):
    person = get_object_or_404(get_user_model(), pk=user_id)
    form = DateRangeForm(request.GET or None, initial=_initial_range())
    page = None
    if not request.GET:
        start, end = selectors.default_range(days=7)
        filters = selectors.Filters(start=start, end=end, user_id=person.pk)
    elif form.is_valid():
        start, end = form.range()
        filters = selectors.Filters(start=start, end=end, user_id=person.pk)
    else:
        filters = None
    if filters is not None:
        page = selectors.audit_search(filters, cursor=_cursor(request))
    context = {
        "person": person,
        "client": getattr(person, "integration_client", None),
        "roles": person.groups.values_list("name", flat=True),
        "form": form,
        "page": page,
        "next_url": _next_url(request, page.next_cursor) if page else "",
    }
    return render(request, "audit/person.html", context)


@auditor_only
def rule_history(request, kind: str, rule_id: int):
    if kind not in selectors.RULE_MODELS:
        raise Http404("No such kind of rule.")
    model = apps.get_model("routing", selectors.RULE_MODELS[kind])
    rule = model.objects.filter(pk=rule_id).first()
    versions = selectors.object_history(model, rule_id)
    if rule is None and not versions:
        raise Http404("No such rule, and no recorded history of one.")
    routed = TaskEvent.objects.filter(kind=TaskEvent.Kind.ROUTED).order_by("-created_at", "-id")
    if kind == "routing":
        routed = routed.filter(rule_id=rule_id)
    else:
        routed = routed.filter(explanation__classification_rule_ids__contains=[rule_id])
    routed = list(routed.select_related("to_queue")[: ROUTED_LIMIT + 1])
    context = {
        "kind": kind,
        "rule_id": rule_id,
        "rule": rule,
        "versions": versions,
        "routed": routed[:ROUTED_LIMIT],
        "routed_more": len(routed) > ROUTED_LIMIT,
        "limit": ROUTED_LIMIT,
    }
    return render(request, "audit/rule.html", context)


@auditor_only
def object_history(request, model: str, pk: str):
    app_label, _, model_name = model.partition(".")
    try:
        model_class = apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        raise Http404("No such kind of object.") from None
    if model_class is Task:
        raise Http404("A task's history is on its own page.")
    obj = model_class._default_manager.filter(pk=pk).first() if pk.isdigit() else None
    versions = selectors.object_history(model_class, pk)
    if obj is None and not versions:
        raise Http404("No such object, and no recorded history of one.")
    context = {
        "model_name": model_class._meta.verbose_name,
        "object": obj,
        "pk": pk,
        "versions": versions,
    }
    return render(request, "audit/object.html", context)
