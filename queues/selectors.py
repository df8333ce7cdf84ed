"""Reads for the task pages: one task as a user may see it, what they may do with it, and its
timeline told in words.

A task is fetched with what the page needs to decide permissions (may this person work the
task's queue, is a read-only or supervising role theirs) folded into the same query as EXISTS
subqueries; the timeline is one query for the events and at most one for the names of the task
types and skills that the routing explanations mention, however long it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.http import Http404
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dateparse import parse_datetime

from accounts.models import Skill
from queues.models import Attachment, EmergencyAccess, Queue, Task, TaskEvent, TaskType

# The role groups are defined by the project shell (clinicdesk.roles), which sits above this
# app; the names are data that both sides agree on.
ROLE_COMPLIANCE = "Compliance"
ROLE_SUPERVISOR = "Supervisor"


# --- one task ------------------------------------------------------------------------------


def _task_queryset(user, tasks: QuerySet[Task] | None = None) -> QuerySet[Task]:
    workable = Queue.objects.workable_by(user).filter(pk=OuterRef("queue_id"))
    roles = Group.objects.filter(user=user)
    return (
        (Task.objects.visible_to(user) if tasks is None else tasks)
        # "sla" is escalation's TaskSla, named only: it feeds the SLA badge without a query.
        .select_related(
            "task_type",
            "queue",
            "queue__department",
            "assignee",
            "required_skill",
            "sla__policy__calendar",
        )
        .annotate(
            # The page lists files only when there are some: no query for the many without.
            has_attachments=Exists(Attachment.objects.filter(task_id=OuterRef("pk"))),
            user_can_work_queue=Exists(workable),
            user_is_compliance=Exists(roles.filter(name=ROLE_COMPLIANCE)),
            user_is_supervisor=Exists(roles.filter(name=ROLE_SUPERVISOR)),
        )
    )


def get_task_for_user(user, task_id: int, *, emergency: bool = False) -> Task:
    """The task if the user may see it; 404 otherwise, so that nobody learns it exists.

    With `emergency`, a task outside the user's sight is also returned while they hold an
    active emergency access grant to it, annotated with `emergency_grant_id` and
    `emergency_until` (read-only: see `task_access`). Only the task page, its timeline and its
    files ask for that; lists, exports and the API never do."""
    try:
        return _task_queryset(user).get(pk=task_id)
    except Task.DoesNotExist:
        task = _emergency_task(user, task_id) if emergency else None
        if task is None:
            raise Http404("No task with that number is visible to you.") from None
        return task


def _emergency_task(user, task_id: int) -> Task | None:
    """The task under the user's active emergency access grant, in one query; None without."""
    if not user.is_authenticated or not user.is_active:
        return None
    grants = (
        EmergencyAccess.objects.active()
        .filter(user=user, task_id=OuterRef("pk"))
        .order_by("-expires_at")
    )
    return (
        _task_queryset(user, Task.objects.filter(pk=task_id))
        .annotate(
            emergency_grant_id=Subquery(grants.values("pk")[:1]),
            emergency_until=Subquery(grants.values("expires_at")[:1]),
        )
        .filter(emergency_grant_id__isnull=False)
        .first()
    )


def get_task_for_user_rw(user, task_id: int) -> Task:
    """The task if the user may act on it; PermissionDenied if they may only read it (also
    under an emergency access grant, which never lets anyone act)."""
    task = get_task_for_user(user, task_id, emergency=True)
    access = task_access(user, task)
    if not access.can_act:
        raise PermissionDenied(access.read_only_reason)
    return task


@dataclass(frozen=True)
class TaskAccess:
    user_id: int
    can_act: bool
    can_work_queue: bool
    is_supervisor: bool
    read_only_reason: str = ""


def task_access(user, task: Task) -> TaskAccess:
    """What the user may do with a task fetched by `get_task_for_user` (its annotations)."""
    can_work = bool(getattr(task, "user_can_work_queue", False))
    until = getattr(task, "emergency_until", None)
    if until is not None:
        reason = (
            f"Emergency access is read-only, until {format_moment(until)}: only the "
            "task's team can work it."
        )
        return TaskAccess(user.pk, False, False, False, reason)
    if getattr(task, "user_is_compliance", False):
        reason = "Compliance reviewers can read tasks but not change them."
        return TaskAccess(user.pk, False, False, False, reason)
    is_supervisor = bool(getattr(task, "user_is_supervisor", False))
    if can_work or task.assignee_id == user.pk:
        return TaskAccess(user.pk, True, can_work, is_supervisor and can_work)
    reason = "You can read this task, but only its queue's team can work it."
    return TaskAccess(user.pk, False, False, False, reason)


# The order in which the page offers them: the likely next step first.
ACTION_ORDER = (
    "claim",
    "start",
    "resume",
    "resolve",
    "hold",
    "classify",
    "release",
    "reroute",
    "reassign",
    "reopen",
    "split",
    "comment",
)
SUPERVISOR_ACTIONS = frozenset({"reassign"})


def task_actions(task: Task, access: TaskAccess) -> list[str]:
    """The actions the page offers this user for the task in its present state."""
    if not access.can_act:
        return []
    status, S = task.status, Task.Status
    loaded = status in Task.LOADED_STATUSES
    # Someone else's work is theirs to change, unless a supervisor steps in.
    manage = task.assignee_id in (None, access.user_id) or access.is_supervisor
    offered = {
        "claim": status == S.QUEUED and access.can_work_queue and not task.blocked_by_id,
        "start": status == S.ASSIGNED and task.assignee_id == access.user_id,
        "resume": status == S.ON_HOLD and manage,
        "resolve": (loaded or status == S.ON_HOLD) and manage,
        "hold": loaded and manage,
        "classify": status in (S.NEW, S.QUEUED)
        and task.queue is not None
        and task.queue.kind == Queue.Kind.REVIEW,
        "release": loaded and manage,
        "reroute": task.is_open and manage,
        "reassign": access.is_supervisor and status in (S.QUEUED, *Task.LOADED_STATUSES),
        "reopen": status == S.RESOLVED,
        # A wrong merge is undone by whoever works the queue, like a reroute (routing.dedup).
        "split": status == S.DUPLICATE and access.can_work_queue,
        "comment": True,
    }
    return [action for action in ACTION_ORDER if offered[action]]


@dataclass(frozen=True)
class ChainStep:
    """One task of a workflow chain: the task that set it off (depth 0) or a follow-up."""

    task: Task
    depth: int
    visible: bool
    is_current: bool
    blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class TaskLinks:
    related: list[Task]  # linked tasks the user may see (parent, follow-ups, duplicates, ...)
    chain: list[ChainStep]  # the workflow tree the task belongs to; empty when none


def task_links(user, task: Task) -> TaskLinks:
    """The tasks linked to this one (parent, follow-ups, duplicates, blockers) and the workflow
    chain it belongs to (its parent's follow-ups, or its own): one query.

    `related` holds only what the user may see; a link to a task they may not see shows its
    number only. The chain also names the other teams' steps, by number, type, queue and
    state, never their subject or patient: the state of the whole chain is what the page is
    for."""
    links = Q(parent=task) | Q(duplicate_of=task) | Q(blocked_by=task)
    linked_ids = [pk for pk in (task.parent_id, task.duplicate_of_id, task.blocked_by_id) if pk]
    if linked_ids:
        links |= Q(pk__in=linked_ids)
    if task.parent_id:
        links |= Q(parent_id=task.parent_id)  # the siblings: the rest of the chain
    visible = Task.objects.visible_to(user).filter(pk=OuterRef("pk"))
    rows = list(
        Task.objects.filter(links)
        .exclude(pk=task.pk)
        .select_related("task_type", "queue", "assignee")
        .only(
            "id",
            "subject",
            "status",
            "priority",
            "parent_id",
            "duplicate_of_id",
            "blocked_by_id",
            "task_type__name",
            "queue__name",
            "assignee__username",
            "assignee__first_name",
            "assignee__last_name",
        )
        .annotate(user_may_see=Exists(visible))
        .order_by("id")
    )
    direct = {task.parent_id, task.duplicate_of_id, task.blocked_by_id} - {None}
    related = [
        other
        for other in rows
        if other.user_may_see
        and (
            other.pk in direct
            or task.pk in (other.parent_id, other.duplicate_of_id, other.blocked_by_id)
        )
    ]
    return TaskLinks(related=related, chain=_chain(task, rows))


def _chain(task: Task, rows: list[Task]) -> list[ChainStep]:
    root_id = task.parent_id or task.pk
    by_id = {other.pk: other for other in rows}
    by_id[task.pk] = task
    steps = sorted(
        (other for other in by_id.values() if other.parent_id == root_id), key=lambda t: t.pk
    )
    if not steps or root_id not in by_id:
        return []
    blocks: dict[int, list[int]] = {}
    for other in steps:
        if other.blocked_by_id:
            blocks.setdefault(other.blocked_by_id, []).append(other.pk)

    def step(other: Task, depth: int) -> ChainStep:
        return ChainStep(
            task=other,
            depth=depth,
            visible=other is task or bool(getattr(other, "user_may_see", False)),
            is_current=other is task,
            blocks=tuple(blocks.get(other.pk, ())),
        )

    return [step(by_id[root_id], 0), *(step(other, 1) for other in steps)]


def related_tasks(user, task: Task) -> list[Task]:
    """The tasks linked to this one that the user may see (see `task_links`)."""
    return task_links(user, task).related


def reroute_targets(task: Task) -> QuerySet[Queue]:
    return (
        Queue.objects.filter(is_active=True, kind__in=[Queue.Kind.WORK, Queue.Kind.REVIEW])
        .exclude(pk=task.queue_id)
        .select_related("department")
        .order_by("department__name", "name")
    )


def queue_workers(task: Task) -> QuerySet:
    """Active staff who may work the task's queue (through a department group or a direct
    grant), except its present assignee: the people a supervisor may reassign it to."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    on_queue = {
        "content_type__app_label": "queues",
        "content_type__model": "queue",
        "permission__codename": "work_queue",
        "object_pk": str(task.queue_id),
    }
    groups = GroupObjectPermission.objects.filter(**on_queue).values("group_id")
    users = UserObjectPermission.objects.filter(**on_queue).values("user_id")
    return (
        get_user_model()
        .objects.filter(Q(groups__in=groups) | Q(pk__in=users), is_active=True, staff__isnull=False)
        .exclude(pk=task.assignee_id or 0)
        .select_related("staff")
        .distinct()
        .order_by("first_name", "last_name", "username")
    )


# --- people and labels ---------------------------------------------------------------------


def person_name(user) -> str:
    if user is None:
        return ""
    return user.get_full_name() or user.get_username()


SYSTEM_ACTORS = {
    "router": "Routing engine",
    "escalation": "Escalation job",
    "workflow": "Workflow",
    "demo": "Demo data",
}


def actor_display(label: str, user=None) -> tuple[str, str]:
    """(name to show, kind: person | integration | system) for an event's actor."""
    if user is not None:
        return person_name(user), "person"
    prefix, _, name = (label or "").partition(":")
    if prefix == "system" and name:
        return SYSTEM_ACTORS.get(name, f"System job: {name.replace('_', ' ')}"), "system"
    if prefix == "client" and name:
        return f"Integration: {name}", "integration"
    return label or "Unknown", "person"


def _local(value: Any) -> datetime | None:
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return timezone.localtime(value)


def format_moment(value: Any) -> str:
    moment = _local(value)
    if moment is None:
        return ""
    today = timezone.localdate()
    near = {0: "today", 1: "tomorrow", -1: "yesterday"}
    day = near.get((moment.date() - today).days) or f"{moment:%a %b} {moment.day}"
    if moment.date().year != today.year:
        day += f", {moment.year}"
    return f"{day} at {date_format(moment, 'g:i A')}"


def age_in_years(born: date | None, today: date | None = None) -> int | None:
    if born is None:
        return None
    today = today or timezone.localdate()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


# --- the timeline --------------------------------------------------------------------------


@dataclass
class TimelineEntry:
    """One event, told in words. `headline` is one sentence; `details` are the further
    sentences of an explanation; `note` is what a person wrote (a reason or a comment)."""

    event: TaskEvent
    actor: str
    actor_kind: str
    headline: str
    details: list[str] = field(default_factory=list)
    note: str = ""
    tone: str = "neutral"

    @property
    def created_at(self) -> datetime:
        return self.event.created_at

    @property
    def kind(self) -> str:
        return self.event.kind


@dataclass(frozen=True)
class Names:
    """Display names of the task types and skills that explanations name by code."""

    task_types: dict[str, str] = field(default_factory=dict)
    skills: dict[str, str] = field(default_factory=dict)

    def task_type(self, code: Any) -> str:
        if not code:
            return "no type"
        return self.task_types.get(code) or _humanize(code)

    def skill(self, code: Any) -> str:
        return self.skills.get(code) or _humanize(code)


def _humanize(code: Any) -> str:
    text = str(code).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _codes(events: list[TaskEvent]) -> tuple[set[str], set[str]]:
    types: set[str] = set()
    skills: set[str] = set()
    for event in events:
        x = event.explanation if isinstance(event.explanation, dict) else {}
        correction = _dict(x.get("correction"))
        types.update(
            c
            for c in (x.get("task_type"), correction.get("from_type"), correction.get("to_type"))
            if isinstance(c, str) and c
        )
        for part in (x, _dict(x.get("route"))):
            if isinstance(part.get("required_skill"), str) and part["required_skill"]:
                skills.add(part["required_skill"])
    return types, skills


def _names(events: list[TaskEvent]) -> Names:
    types, skills = _codes(events)
    if not types and not skills:
        return Names()
    kind = Value("type", output_field=CharField())
    rows = (
        TaskType.objects.filter(code__in=types)
        .annotate(kind=kind)
        .values_list("kind", "code", "name")
        .union(
            Skill.objects.filter(code__in=skills)
            .annotate(kind=Value("skill", output_field=CharField()))
            .values_list("kind", "code", "name"),
            all=True,
        )
    )
    names = Names()
    for row_kind, code, name in rows:
        (names.task_types if row_kind == "type" else names.skills)[code] = name
    return names


def task_timeline(task: Task) -> list[TimelineEntry]:
    """Every event of the task, oldest first, each told in words."""
    events = list(
        TaskEvent.objects.filter(task_id=task.pk)
        .select_related("actor", "from_queue", "to_queue", "from_user", "to_user")
        .order_by("created_at", "id")
    )
    names = _names(events)
    return [describe_event(event, names) for event in events]


ROUTING_KINDS = (TaskEvent.Kind.ROUTED, TaskEvent.Kind.RECLASSIFIED, TaskEvent.Kind.REROUTED)
ASSIGNMENT_KINDS = (TaskEvent.Kind.ASSIGNED, TaskEvent.Kind.WAITING_FOR_CAPACITY)


def routing_summary(timeline: list[TimelineEntry]) -> str:
    """Why the task is where it is, in one sentence: the last routing decision and the
    assignment that followed it."""
    for index in range(len(timeline) - 1, -1, -1):
        if timeline[index].kind in ROUTING_KINDS:
            text = timeline[index].headline
            after = timeline[index + 1 :]
            offer = next((e for e in after if e.kind in ASSIGNMENT_KINDS), None)
            if offer is not None:
                text += f"; {offer.headline[:1].lower()}{offer.headline[1:]}"
            return text
    return ""


# --- the presenter: an event and its explanation JSON, in sentences ---------------------------
# Explanations are stored JSON written by the routing engine of the day: every key is read
# defensively, so an old or partial explanation still reads well.


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _quoted(values: Any) -> str:
    items = values if isinstance(values, list) else [values]
    return ", ".join(f"'{v}'" for v in items if v not in (None, ""))


def _matched_text(what: Any) -> str:
    what = _dict(what)
    parts = []
    if what.get("phrases"):
        parts.append(f"matched {_quoted(what['phrases'])}")
    if what.get("regex"):
        parts.append(f"pattern found {_quoted(what['regex'])}")
    for key, label in (
        ("channel", "channel"),
        ("request_type", "request type"),
        ("source_system", "source"),
    ):
        if what.get(key):
            parts.append(f"{label} {_quoted(what[key])}")
    return ", ".join(parts)


def _rule_phrase(rule: dict[str, Any]) -> str:
    matched = _matched_text(rule.get("matched"))
    name = rule.get("name") or f"#{rule.get('id', '?')}"
    return f"rule '{name}'" + (f" — {matched}" if matched else "")


def _queue_name(queue: Queue | None, fallback: Any = None) -> str:
    if queue is not None:
        return queue.name
    return str(fallback) if fallback else "a queue"


def _routed(event: TaskEvent, x: dict[str, Any], names: Names) -> tuple[str, list[str], str]:
    route = _dict(x.get("route"))
    queue = route.get("queue") or _queue_name(event.to_queue)
    matched = [_dict(m) for m in _list(x.get("matched"))]
    classifying = [
        m for m in matched if m.get("kind") == "classification" and m.get("status") == "applied"
    ]
    details: list[str] = []
    red_flag = _dict(x.get("red_flag"))
    review = _dict(x.get("needs_review"))
    if red_flag:
        headline = (
            f"Red flag '{red_flag.get('phrase', '?')}': sent to {queue} as "
            f"{names.task_type(x.get('task_type'))}, P1"
        )
        tone = "urgent"
    elif review or route.get("by") == "needs_review":
        reason = str(review.get("message") or "the rules could not decide its type").rstrip(".")
        headline = f"Sent to {queue} for a person to classify — {reason[:1].lower()}{reason[1:]}"
        tone = "warn"
    elif route.get("by") == "rule":
        headline = f"Routed to {queue} by rule '{route.get('rule_name') or route.get('rule_id')}'"
        tone = "route"
    elif len(classifying) == 1:
        headline = f"Routed to {queue} by {_rule_phrase(classifying[0])}"
        classifying = []
        details.append(
            f"{queue} is the default queue for {names.task_type(x.get('task_type'))} tasks."
        )
        tone = "route"
    else:
        headline = f"Routed to {queue} ({route.get('text') or 'default queue of its type'})"
        tone = "route"
    if classifying:
        details.append(
            f"Classified as {names.task_type(x.get('task_type'))} by "
            + "; ".join(_rule_phrase(m) for m in classifying)
            + "."
        )
    elif x.get("task_type") and not red_flag and route.get("by") == "rule":
        details.append(f"Classified as {names.task_type(x.get('task_type'))}.")
    for m in matched:
        status = m.get("status")
        if status in ("outside_rollout", "shadow_outside_rollout"):
            details.append(
                f"{_rule_phrase(m)[:1].upper()}{_rule_phrase(m)[1:]} matched, but this task "
                "falls outside its rollout."
            )
    details.extend(_priority_sentences(_dict(x.get("priority")), matched))
    if route.get("required_skill"):
        details.append(
            f"Needs skill {names.skill(route['required_skill'])} at level "
            f"{route.get('min_skill_level') or 1} or higher."
        )
    if _list(x.get("tags")):
        details.append(f"Tags: {', '.join(str(t) for t in x['tags'])}.")
    for shadow in (_dict(s) for s in _list(x.get("shadow"))):
        details.append(_shadow_sentence(shadow, names))
    if x.get("rules_evaluated") is not None:
        version = x.get("rule_set_version") or event.rule_set_version
        sentence = f"{x['rules_evaluated']} rules evaluated"
        if version:
            sentence += f" (rule set v{version})"
        if x.get("rules_off"):
            sentence += f"; {x['rules_off']} switched off because they fail validation"
        details.append(sentence + ".")
    return headline, details, tone


def _priority_sentences(priority: dict[str, Any], matched: list[dict[str, Any]]) -> list[str]:
    final = priority.get("final")
    if final is None:
        return []
    rule_names = {m.get("id"): m.get("name") for m in matched if m.get("kind") == "classification"}
    if priority.get("why"):
        return [f"Priority P{final}: {priority['why']}."]
    why = []
    if priority.get("type_default"):
        why.append(f"type default P{priority['type_default']}")
    if priority.get("urgency_hint"):
        why.append(f"sender marked P{priority['urgency_hint']}")
    for key, verb in (("set_by", "set to"), ("raised_by", "raised to")):
        for step in (_dict(s) for s in _list(priority.get(key))):
            name = rule_names.get(step.get("id")) or f"#{step.get('id')}"
            why.append(f"{verb} P{step.get('priority')} by rule '{name}'")
    if priority.get("routing_override"):
        why.append(f"routing rule sets P{priority['routing_override']}")
    return [f"Priority P{final}" + (f" ({'; '.join(why)})." if why else ".")]


def _shadow_sentence(shadow: dict[str, Any], names: Names) -> str:
    would = _dict(shadow.get("would"))
    parts = []
    if would.get("set_task_type"):
        parts.append(f"set type {names.task_type(would['set_task_type'])}")
    if would.get("set_priority"):
        parts.append(f"set P{would['set_priority']}")
    if would.get("min_priority"):
        parts.append(f"raise to P{would['min_priority']}")
    if would.get("add_tags"):
        parts.append(f"add tags {', '.join(map(str, _list(would['add_tags'])))}")
    if would.get("queue"):
        parts.append(f"route to {would['queue']}")
    if would.get("priority_override"):
        parts.append(f"set P{would['priority_override']}")
    action = ", ".join(parts) or "match"
    return f"Shadow rule '{shadow.get('name', '?')}' (not live) would {action}."


PASSED_OVER = {
    "away": "away",
    "offline": "offline",
    "excluded": "skipped (their capacity was taken in the meantime)",
    "not_in_queue": "does not work this queue",
}


def _candidate_sentence(c: dict[str, Any], a: dict[str, Any], names: Names) -> str:
    name = c.get("name") or "Someone"
    reason = c.get("reason")
    if reason in PASSED_OVER:
        return f"{name} {PASSED_OVER[reason]}"
    if reason == "at_capacity":
        return f"{name} at capacity ({c.get('load', '?')} of {c.get('capacity', '?')} in use)"
    if reason == "lacks_skill":
        skill = names.skill(a.get("required_skill")) if a.get("required_skill") else "the skill"
        level = c.get("level") or 0
        has = f"level {level} of {a.get('min_skill_level')}" if level else "not held"
        return f"{name} lacks skill {skill} ({has})"
    if reason == "off_shift":
        detail = str(c.get("detail") or "")
        return f"{name} off shift" + (f" ({detail.removeprefix('shift ')})" if detail else "")
    return f"{name} not eligible" + (f" ({c['detail']})" if c.get("detail") else "")


def _assignment(event: TaskEvent, a: dict[str, Any], names: Names) -> tuple[str, list[str], str]:
    queue = _queue_name(event.to_queue)
    candidates = [_dict(c) for c in _list(a.get("candidates"))]
    passed = [c for c in candidates if not c.get("eligible") and c.get("reason") != "not_in_queue"]
    passed_text = "; ".join(_candidate_sentence(c, a, names) for c in passed)
    chosen = _dict(a.get("chosen"))
    details: list[str] = []
    if chosen:
        me = next((c for c in candidates if c.get("staff_id") == chosen.get("staff_id")), {})
        name = chosen.get("name") or person_name(event.to_user) or "someone"
        use = f" ({me['load']} of {me['capacity']} in use)" if "load" in me else ""
        headline = f"Offered to {name}{use}" + (f" — {passed_text}" if passed_text else "")
        tone = "assign"
        if a.get("why"):
            why = str(a["why"])
            details.append(f"Chosen by the queue's policy — {why}.")
    elif a.get("policy") == "pull_only" or (not candidates and a.get("why", "").startswith("pull")):
        headline = f"Waits in {queue} for someone to press Next task (pull-only queue)"
        tone = "neutral"
    else:
        tone = "warn"
        if not candidates:
            headline = f"Nobody works {queue} yet: the task waits for someone to join"
        else:
            headline = "Nobody could take it now — " + (passed_text or "no one eligible")
            details.append("It waits and is offered again as soon as someone has room.")
    if a.get("weight") and a["weight"] != 1:
        details.append(f"Takes {a['weight']} units of capacity.")
    return headline, details, tone


def _reclassified(event: TaskEvent, x: dict[str, Any], names: Names) -> tuple[str, list[str]]:
    correction = _dict(x.get("correction"))
    route = _dict(x.get("route"))
    to_type = names.task_type(correction.get("to_type"))
    queue = route.get("queue") or _queue_name(event.to_queue)
    headline = f"Classified as {to_type} and routed to {queue}"
    details = []
    if route.get("rule"):
        details.append(f"Routed by rule '{route['rule']}'.")
    elif route.get("by"):
        details.append(f"Routed to the {route['by']}.")
    if correction.get("from_type"):
        details.append(f"It was classified as {names.task_type(correction['from_type'])} before.")
    rule_ids = [str(r) for r in _list(correction.get("corrected_rule_ids"))]
    if rule_ids:
        details.append(
            "Counts as a correction of classification rule "
            + ", ".join(f"#{r}" for r in rule_ids)
            + "."
        )
    if x.get("priority"):
        details.append(f"Priority P{x['priority']}.")
    return headline, details


def describe_event(event: TaskEvent, names: Names | None = None) -> TimelineEntry:
    names = names or Names()
    x = event.explanation if isinstance(event.explanation, dict) else {}
    actor, actor_kind = actor_display(event.actor_label, event.actor)
    K = TaskEvent.Kind
    kind = event.kind
    note = event.reason or ""
    details: list[str] = []
    tone = "neutral"
    to_queue = _queue_name(event.to_queue)
    from_queue = _queue_name(event.from_queue)
    to_user = person_name(event.to_user)
    from_user = person_name(event.from_user)

    if kind == K.ROUTED:
        headline, details, tone = _routed(event, x, names)
        note = ""  # the reason repeats the headline in the router's own words
    elif kind in (K.ASSIGNED, K.WAITING_FOR_CAPACITY):
        headline, details, tone = _assignment(event, x, names)
    elif kind == K.RECLASSIFIED:
        headline, details = _reclassified(event, x, names)
        tone = "route"
        if note.startswith("Classified by a person as"):
            note = ""
    elif kind == K.CREATED:
        headline = "Received" if actor_kind != "person" else f"Created by {actor}"
        tone = "neutral"
    elif kind == K.CLAIMED:
        headline = f"Claimed by {to_user or actor}" + (
            " with Next task" if note == "Next task" else ""
        )
        note = "" if note == "Next task" else note
        tone = "assign"
    elif kind == K.STARTED:
        headline = f"{actor} started work"
        tone = "assign"
    elif kind == K.HELD:
        follow_up = format_moment(x.get("follow_up_at"))
        headline = "Put on hold" + (f" until {follow_up}" if follow_up else "")
        tone = "hold"
    elif kind == K.RESUMED:
        headline = f"Resumed: back with {to_user}" if to_user else "Resumed: back to the queue"
        tone = "assign"
    elif kind == K.RESOLVED:
        outcome = x.get("outcome")
        headline = "Resolved" + (f" — {outcome}" if outcome else "")
        tone = "resolve"
    elif kind == K.REOPENED:
        headline = "Reopened"
        tone = "warn"
    elif kind == K.REROUTED:
        headline = f"Rerouted from {from_queue} to {to_queue}"
        tone = "route"
    elif kind == K.REASSIGNED:
        headline = f"Reassigned to {to_user}" + (f" from {from_user}" if from_user else "")
        tone = "assign"
    elif kind == K.RELEASED:
        headline = "Released to the queue" + (f" (it was with {from_user})" if from_user else "")
    elif kind == K.COMMENTED:
        headline = x.get("headline") or f"{actor} commented"
        tone = "comment"
    elif kind == K.ESCALATED:
        headline = "Escalated" + (f" to {to_queue}" if event.to_queue else "")
        tone = "urgent"
    else:
        # Duplicates, follow-ups and unblocking say what happened in their own words.
        headline = x.get("headline") or event.get_kind_display()
    return TimelineEntry(
        event=event,
        actor=actor,
        actor_kind=actor_kind,
        headline=headline,
        details=details,
        note=note,
        tone=tone,
    )
