"""What must hold after a load run, read from the database and the run's files once every
process has stopped. Each check is a plain function returning a `Check`, printed as one line.

- every intake the API acknowledged (2xx) has its stored request and its task;
- no stored request was left without a task or an answer;
- nobody held a task another person held: the timeline of every task, replayed, never hands a
  task to a second person before the first let it go, and ends where the task row is;
- nobody is over capacity, and everyone's load is the weight of their active tasks;
- the server answered no request with a 5xx (or not at all).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from django.db.models import Sum

from accounts.models import StaffProfile
from queues.models import InboundMessage, Task, TaskEvent

K = TaskEvent.Kind
# Events that give the task (and its weight) to a person: the task must be free before.
TAKES = {K.ASSIGNED, K.CLAIMED}
# Events after which nobody carries the task's weight.
LETS_GO = {K.HELD, K.RESOLVED, K.RELEASED, K.REROUTED, K.REOPENED}
SHOWN = 5  # ids named in a failing line


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    @property
    def line(self) -> str:
        return f"{'✔' if self.ok else '✘'} {self.name}: {self.detail}"


def read_acks(path: Path) -> list[dict]:
    """The intake answers the integrations recorded, one JSON object a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_intake_acknowledged(acks: list[dict]) -> Check:
    """Every 2xx answer names a task, and the request it answered is stored with that task."""
    acked = [a for a in acks if 200 <= int(a.get("status") or 0) < 300]
    stored = set(
        InboundMessage.objects.filter(
            external_id__in={a["external_id"] for a in acked}, task__isnull=False
        ).values_list("channel", "external_id", "task_id")
    )
    missing = [
        a["external_id"]
        for a in acked
        if (a["channel"], a["external_id"], a.get("id")) not in stored
    ]
    refused = len(acks) - len(acked)
    detail = (
        f"{len(acked)} acknowledged, {len(acked) - len(missing)} stored with their task"
        f"{_named(missing)}; {refused} not acknowledged"
    )
    return Check("every acknowledged intake has its task", not missing and bool(acked), detail)


def check_nothing_lost() -> Check:
    """Every stored request became a task (new, duplicate or reply) or was answered as
    failed; none is left as merely received."""
    counts = Counter(InboundMessage.objects.values_list("status", flat=True))
    S = InboundMessage.Status
    waiting = counts[S.RECEIVED]
    failed = counts[S.FAILED]
    parts = ", ".join(f"{counts[s]} {s.label.lower()}" for s in S if counts[s])
    detail = f"{sum(counts.values())} stored requests: {parts or 'none'}"
    return Check("no request lost", waiting == 0 and failed == 0, detail)


def replay_holders() -> tuple[dict[int, int | None], list[str]]:
    """Each task's holder at the end of its timeline, and every step where a task went to a
    second person while the first still held it (or a hand-over named the wrong holder)."""
    holders: dict[int, int | None] = {}
    problems: list[str] = []
    events = TaskEvent.objects.order_by("task_id", "id").values_list(
        "task_id", "id", "kind", "from_user_id", "to_user_id"
    )
    for task_id, event_id, kind, from_user, to_user in events.iterator(chunk_size=5000):
        holder = holders.setdefault(task_id, None)
        if kind in TAKES or (kind == K.RESUMED and to_user is not None):
            if holder is not None:
                problems.append(
                    f"task {task_id} event {event_id}: to {to_user} while {holder} held it"
                )
            holders[task_id] = to_user
        elif kind == K.REASSIGNED:
            if from_user != holder:
                problems.append(
                    f"task {task_id} event {event_id}: "
                    f"reassigned from {from_user} while {holder} held it"
                )
            holders[task_id] = to_user
        elif kind in LETS_GO or kind == K.RESUMED:
            holders[task_id] = None
    return holders, problems


def check_single_holder() -> Check:
    holders, problems = replay_holders()
    rows = Task.objects.values_list("pk", "status", "assignee_id")
    mismatched = []
    for pk, status, assignee in rows.iterator(chunk_size=5000):
        expected = assignee if status in Task.LOADED_STATUSES else None
        if holders.get(pk) != expected:
            mismatched.append(pk)
    events = TaskEvent.objects.count()
    detail = (
        f"{len(holders)} task timelines replayed ({events} events): "
        f"{len(problems)} double assignments{_named(problems)}, "
        f"{len(mismatched)} tasks whose row disagrees with their timeline{_named(mismatched)}"
    )
    return Check("no task held by two people", not problems and not mismatched, detail)


def active_units() -> dict[int, int]:
    """Per person, the weight of the tasks they carry now (assigned or in progress)."""
    rows = (
        Task.objects.filter(status__in=Task.LOADED_STATUSES, assignee__isnull=False)
        .values("assignee_id")
        .annotate(units=Sum("weight"))
    )
    return {row["assignee_id"]: row["units"] for row in rows}


def check_capacity() -> Check:
    units = active_units()
    profiles = list(StaffProfile.objects.values_list("user_id", "capacity", "active_load"))
    over = [
        user
        for user, capacity, load in profiles
        if load > capacity or units.get(user, 0) > capacity
    ]
    at_capacity = sum(1 for _, capacity, load in profiles if load >= capacity)
    detail = (
        f"{len(profiles)} people, {len(over)} over capacity{_named(over)}; "
        f"{at_capacity} at capacity at the end, highest load "
        f"{max((load for _, _, load in profiles), default=0)}"
    )
    return Check("nobody over capacity", not over, detail)


def check_load_matches_tasks() -> Check:
    units = active_units()
    profiles = list(StaffProfile.objects.values_list("user_id", "active_load"))
    drift = [user for user, load in profiles if load != units.get(user, 0)]
    detail = (
        f"{len(profiles) - len(drift)} of {len(profiles)} people's load equals the weight of "
        f"their active tasks{_named(drift)}"
    )
    return Check("every load matches its tasks", not drift, detail)


def check_no_server_errors(status: dict[str, dict[str, int]]) -> Check:
    """No 5xx and no request left unanswered (status 0), from Locust's counts per request."""
    errors = Counter()
    total = 0
    for name, codes in status.items():
        for code, count in codes.items():
            total += count
            if code == "0" or code.startswith("5"):
                errors[f"{name} {code}"] += count
    detail = f"{total} requests, {sum(errors.values())} answered 5xx or not at all"
    if errors:
        detail += " (" + ", ".join(f"{k}: {v}" for k, v in errors.most_common()) + ")"
    return Check("no server errors", not errors and total > 0, detail)


def run_checks(out: Path) -> list[Check]:
    extra_path = out / "extra.json"
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
    return [
        check_intake_acknowledged(read_acks(out / "acks.jsonl")),
        check_nothing_lost(),
        check_single_holder(),
        check_capacity(),
        check_load_matches_tasks(),
        check_no_server_errors(extra.get("status", {})),
    ]


def _named(ids: list) -> str:
    if not ids:
        return ""
    more = f", … {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return " (" + "; ".join(str(i) for i in ids[:SHOWN]) + more + ")"
