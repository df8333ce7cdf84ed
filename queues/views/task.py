"""The Task page: a task's fields, patient, timeline and the actions this person may take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from queues import selectors
from queues import services as queues_services

# An upward import to the audit trail (clinicdesk sits on top): every opening of a task page
# is recorded as a read of the task.
from queues.access import record_task_access
from queues.emergency import record_emergency_read
from queues.forms import ACTION_FORMS, TaskActionForm
from queues.models import Task
from queues.services import StaleTaskError, TaskStateError

# Routing sits above queues: its orchestrating functions also offer freed capacity to queued
# work and re-run the rules, which the page must not skip. The rare upward import, on purpose.
from routing import dedup as routing_dedup
from routing import services as routing_services
from routing.selectors import NoActiveRuleSet


@dataclass(frozen=True)
class Action:
    service: Callable[..., object]
    actor_arg: str  # the service's name for who acts: `actor` or `user`
    done: str


ACTIONS: dict[str, Action] = {
    "claim": Action(queues_services.task_claim, "user", "Task #{id} is yours now."),
    "start": Action(queues_services.task_start, "user", "Task #{id} is in progress."),
    "hold": Action(
        routing_services.task_hold, "actor", "Task #{id} is on hold; it left your load."
    ),
    "resume": Action(routing_services.task_resume, "actor", "Task #{id} resumed."),
    "resolve": Action(routing_services.task_resolve, "actor", "Task #{id} resolved."),
    "reopen": Action(routing_services.task_reopen, "actor", "Task #{id} reopened."),
    "release": Action(routing_services.task_release, "actor", "Task #{id} went back to its queue."),
    "reroute": Action(routing_services.task_reroute, "actor", "Task #{id} rerouted to {queue}."),
    "reassign": Action(routing_services.task_reassign, "actor", "Task #{id} reassigned."),
    "classify": Action(
        routing_services.task_reclassify, "actor", "Task #{id} classified and routed to {queue}."
    ),
    "comment": Action(queues_services.task_comment, "actor", "Comment added to task #{id}."),
    "split": Action(
        routing_dedup.task_split, "actor", "Task #{id} is a request of its own now, in {queue}."
    ),
}


# Keys that task.js binds: shown on the page only when their action is offered.
SHORTCUTS = (("R", "resolve"), ("H", "hold"))


def _page_context(request, task: Task, bound: TaskActionForm | None = None) -> dict:
    access = selectors.task_access(request.user, task)
    actions = selectors.task_actions(task, access)
    forms = {name: ACTION_FORMS[name](task=task, user=request.user) for name in actions}
    if bound is not None:
        forms[bound.action] = bound
    timeline = selectors.task_timeline(task)
    links = selectors.task_links(request.user, task)
    return {
        "task": task,
        "access": access,
        "action_forms": [forms[name] for name in actions],
        "shortcuts": [(key, name) for key, name in SHORTCUTS if name in actions],
        "open_action": bound.action if bound is not None else "",
        "timeline": timeline,
        "routing_summary": selectors.routing_summary(timeline),
        "related": links.related,
        "chain": links.chain,
        "patient_age": selectors.age_in_years(task.patient_birth_date),
    }


@login_required
@require_GET
def task_detail(request, task_id: int):
    # Also under an emergency access grant (read-only; the read is flagged as such).
    task = selectors.get_task_for_user(request.user, task_id, emergency=True)
    if not record_emergency_read(request.user, task, read="page"):
        record_task_access(request.user, task, via="page")
    return render(request, "queues/task.html", _page_context(request, task))


@login_required
@require_GET
def task_timeline(request, task_id: int):
    # The open page refreshing itself (every 30 s) is not a new read: not recorded.
    task = selectors.get_task_for_user(request.user, task_id, emergency=True)
    context = {"task": task, "timeline": selectors.task_timeline(task)}
    return render(request, "queues/task.html#timeline", context)


def _refusal(task: Task, form: TaskActionForm) -> str:
    posted = form.data.get("expected_version")
    if posted and posted != str(task.version):
        return (
            f"Task #{task.pk} was changed by someone else while you had it open, so your "
            f"{form.label} was not saved. The page now shows its new state."
        )
    status = task.get_status_display().lower()
    return f"{form.label} is not possible now: task #{task.pk} is {status}."


def _after_action(request, task: Task):
    """Back to the task, or to My work when the action took it out of the person's sight
    (rerouted or classified into another team's queue)."""
    if Task.objects.visible_to(request.user).filter(pk=task.pk).exists():
        return redirect("queues:task", task_id=task.pk)
    return redirect("queues:my_work")


# Refusals that a stale page or a double click can meet: a message and the page, never a 500.
REFUSED = (StaleTaskError, TaskStateError, queues_services.CapacityError, NoActiveRuleSet)


def _error_text(error: Exception) -> str:
    return " ".join(getattr(error, "messages", None) or [str(error)])


@login_required
@require_POST
def task_action(request, task_id: int, action: str):
    if action not in ACTIONS:
        raise Http404("No such action.")
    task = selectors.get_task_for_user_rw(request.user, task_id)
    access = selectors.task_access(request.user, task)
    if action in selectors.SUPERVISOR_ACTIONS and not access.is_supervisor:
        raise PermissionDenied("Only a supervisor of this queue can do that.")
    form = ACTION_FORMS[action](request.POST, task=task, user=request.user)
    if action not in selectors.task_actions(task, access):
        messages.error(request, _refusal(task, form))
        return redirect("queues:task", task_id=task.pk)
    if form.is_valid():
        spec = ACTIONS[action]
        try:
            result = spec.service(
                task_id=task.pk, **{spec.actor_arg: request.user}, **form.cleaned_data
            )
        except REFUSED as error:
            messages.error(request, _error_text(error))
            return redirect("queues:task", task_id=task.pk)
        except ValidationError as error:
            form.add_service_error(error)
        else:
            queue = getattr(result, "queue", None)
            messages.success(request, spec.done.format(id=task.pk, queue=queue))
            return _after_action(request, task)
    messages.error(request, f"{form.label} was not saved: see the highlighted fields.")
    return render(request, "queues/task.html", _page_context(request, task, form), status=400)
