"""Reads for the audit pages: one search over every record (timeline events, field changes,
reads, sign-ins and denials), newest first, a page at a time; and the histories of a task, a
person, a rule and any configuration object.

The search is one SQL statement: a UNION ALL of one branch per kind of record, each filtered
and limited on its own time index, merged by time. A page costs one query whatever the
filters, and the keyset (time, source, id) of the last row starts the next page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from auditlog.models import LogEntry
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import VIA
from queues.models import TaskEvent

PAGE_SIZE = 50
CHANGE_KINDS = {"create": "Created", "update": "Changed", "delete": "Deleted"}
SOURCE_KINDS = {
    "event": dict(TaskEvent.Kind.choices),
    "change": CHANGE_KINDS,
    "access": {"access": "Read"},
    "security": dict(AuditEvent.Kind.choices),
}
SOURCE_NAMES = {
    "event": "Timeline",
    "change": "Field change",
    "access": "Read",
    "security": "Sign-in and access",
}
RULE_MODELS = {"routing": "routingrule", "classification": "classificationrule"}


@dataclass(frozen=True)
class Filters:
    """A validated search (see `forms.AuditSearchForm`): `start` ≤ time < `end`, plus any of
    the narrowing filters."""

    start: datetime
    end: datetime
    task_id: int | None = None
    mrn: str = ""
    user_id: int | None = None
    client_label: str = ""
    client_user_id: int | None = None
    rule: tuple[str, int] | None = None  # ("routing" | "classification", id)
    kind: str = ""  # "<source>" or "<source>:<kind>"

    def describe(self) -> dict:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            **({"task": self.task_id} if self.task_id else {}),
            **({"mrn": self.mrn} if self.mrn else {}),
            **({"person": self.user_id} if self.user_id else {}),
            **({"client": self.client_label} if self.client_label else {}),
            **({"rule": f"{self.rule[0]}:{self.rule[1]}"} if self.rule else {}),
            **({"kind": self.kind} if self.kind else {}),
        }


@dataclass(frozen=True)
class Cursor:
    at: datetime
    source: str
    id: int

    def encode(self) -> str:
        raw = f"{self.at.isoformat()}|{self.source}|{self.id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            at, source, id_ = raw.split("|")
            moment = parse_datetime(at)
            if moment is None or source not in SOURCE_KINDS:
                return None
            return cls(moment, source, int(id_))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None


@dataclass
class Entry:
    at: datetime
    source: str
    id: int
    kind: str
    actor_id: int | None
    actor: str
    task_id: int | None
    object_type: str
    object_pk: str
    summary: str
    details: list[str] = field(default_factory=list)
    emergency: bool = False  # a read under an emergency access grant ("break the glass")

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.at, self.source, self.id)

    @property
    def source_display(self) -> str:
        return SOURCE_NAMES.get(self.source, self.source)

    @property
    def kind_display(self) -> str:
        return SOURCE_KINDS.get(self.source, {}).get(self.kind, self.kind)

    @property
    def subject(self) -> str:
        """What the entry is about, without patient data."""
        if self.task_id:
            return f"Task #{self.task_id}"
        if self.object_type:
            return f"{self.object_type.split('.')[-1]} #{self.object_pk}"
        return ""

    @property
    def history_url(self) -> str:
        if self.task_id:
            return reverse("audit:task", args=[self.task_id])
        app_model = self.object_type
        if app_model in (f"routing.{m}" for m in RULE_MODELS.values()):
            kind = next(k for k, m in RULE_MODELS.items() if app_model.endswith(m))
            return reverse("audit:rule", args=[kind, self.object_pk])
        if app_model == "auth.user" and self.object_pk.isdigit():
            return reverse("audit:person", args=[self.object_pk])
        if app_model:
            return reverse("audit:object", args=[app_model, self.object_pk])
        if self.actor_id:
            return reverse("audit:person", args=[self.actor_id])
        return ""


# --- The search ---------------------------------------------------------------------------


def _keyset(column: str, id_column: str, source: str, cursor: Cursor | None, params: list):
    """The branch's part of `(time, source, id) < cursor`, written so that the branch's
    (time, id) index can use it."""
    if cursor is None:
        return []
    if source == cursor.source:
        params += [cursor.at, cursor.id]
        return [f"({column}, {id_column}) < (%s, %s)"]
    params.append(cursor.at)
    return [f"{column} <= %s" if source < cursor.source else f"{column} < %s"]


def _wants(filters: Filters, source: str) -> str | None:
    """None when the kind filter excludes the source; else the kind it asks for ('' = all)."""
    if not filters.kind:
        return ""
    wanted_source, _, kind = filters.kind.partition(":")
    return kind if wanted_source == source else None


def _task_condition(filters: Filters, column: str, params: list) -> list[str]:
    conditions = []
    if filters.task_id is not None:
        conditions.append(f"{column} = %s")
        params.append(filters.task_id)
    if filters.mrn:
        conditions.append(
            f"{column} IN (SELECT id FROM queues_task WHERE patient_mrn = %s AND patient_mrn <> '')"
        )
        params.append(filters.mrn)
    return conditions


def _event_branch(filters: Filters, cursor: Cursor | None, limit: int | None):
    kind = _wants(filters, "event")
    if kind is None:
        return None
    params: list = [filters.start, filters.end]
    where = ["e.created_at >= %s", "e.created_at < %s"]
    if kind:
        where.append("e.kind = %s")
        params.append(kind)
    where += _task_condition(filters, "e.task_id", params)
    if filters.user_id is not None:
        where.append("e.actor_id = %s")
        params.append(filters.user_id)
    if filters.client_label:
        where.append("e.actor_label = %s")
        params.append(filters.client_label)
    if filters.rule is not None:
        rule_kind, rule_id = filters.rule
        if rule_kind == "routing":
            where.append("e.rule_id = %s")
            params.append(rule_id)
        else:
            where.append("e.explanation @> %s::jsonb")
            params.append(f'{{"classification_rule_ids": [{int(rule_id)}]}}')
    where += _keyset("e.created_at", "e.id", "event", cursor, params)
    sql = f"""
        SELECT e.created_at AS at, 'event' AS source, e.id::bigint AS id, e.kind::text AS kind,
               e.actor_id, e.actor_label::text AS actor_label, e.task_id::bigint AS task_id,
               '' AS object_type, ''::text AS object_pk, left(e.reason, 200) AS summary
        FROM queues_taskevent e
        WHERE {" AND ".join(where)}
    """
    return _limited(sql, "e.created_at", "e.id", limit), params


def _logentry_branch(filters: Filters, cursor: Cursor | None, limit: int | None, source: str):
    kind = _wants(filters, source)
    if kind is None:
        return None
    params: list = [filters.start, filters.end]
    where = ["g.timestamp >= %s", "g.timestamp < %s"]
    if source == "access":
        where.append("g.action = %s")
        params.append(LogEntry.Action.ACCESS)
    else:
        actions = {"create": 0, "update": 1, "delete": 2}
        if kind:
            where.append("g.action = %s")
            params.append(actions.get(kind, -1))
        else:
            where.append("g.action IN (0, 1, 2)")
    if filters.task_id is not None or filters.mrn:
        where += ["ct.app_label = 'queues'", "ct.model = 'task'"]
        where += _task_condition(filters, "g.object_id", params)
    if filters.user_id is not None:
        where.append("g.actor_id = %s")
        params.append(filters.user_id)
    if filters.client_label:
        where.append("(g.actor_id = %s OR g.additional_data ->> 'actor' = %s)")
        params += [filters.client_user_id, filters.client_label]
    if filters.rule is not None:
        rule_kind, rule_id = filters.rule
        where += ["ct.app_label = 'routing'", "ct.model = %s", "g.object_id = %s"]
        params += [RULE_MODELS[rule_kind], rule_id]
    where += _keyset("g.timestamp", "g.id", source, cursor, params)
    if source == "access":
        summary = "coalesce(g.additional_data ->> 'via', '')"
    else:
        summary = """CASE WHEN jsonb_typeof(g.changes) = 'object' THEN (
            SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(g.changes) k)
            ELSE '' END"""
    sql = f"""
        SELECT g.timestamp AS at, '{source}' AS source, g.id::bigint AS id,
               CASE g.action WHEN 0 THEN 'create' WHEN 1 THEN 'update' WHEN 2 THEN 'delete'
                    ELSE 'access' END AS kind,
               g.actor_id, g.additional_data ->> 'actor' AS actor_label,
               CASE WHEN ct.app_label = 'queues' AND ct.model = 'task' THEN g.object_id END
                   AS task_id,
               ct.app_label || '.' || ct.model AS object_type, g.object_pk::text AS object_pk,
               {summary} AS summary
        FROM auditlog_logentry g
        JOIN django_content_type ct ON ct.id = g.content_type_id
        WHERE {" AND ".join(where)}
    """
    return _limited(sql, "g.timestamp", "g.id", limit), params


def _security_branch(filters: Filters, cursor: Cursor | None, limit: int | None):
    kind = _wants(filters, "security")
    if kind is None or filters.task_id is not None or filters.mrn or filters.rule is not None:
        return None
    params: list = [filters.start, filters.end]
    where = ["a.at >= %s", "a.at < %s"]
    if kind:
        where.append("a.kind = %s")
        params.append(kind)
    if filters.user_id is not None:
        where.append("a.user_id = %s")
        params.append(filters.user_id)
    if filters.client_label:
        where.append("(a.user_id = %s OR a.actor_label = %s)")
        params += [filters.client_user_id, filters.client_label]
    where += _keyset("a.at", "a.id", "security", cursor, params)
    sql = f"""
        SELECT a.at, 'security' AS source, a.id::bigint AS id, a.kind::text AS kind,
               a.user_id AS actor_id, a.actor_label::text AS actor_label, NULL::bigint AS task_id,
               '' AS object_type, ''::text AS object_pk,
               trim(a.method || ' ' || a.path || coalesce(' → ' || a.status_code, ''))
                   AS summary
        FROM clinicdesk_auditevent a
        WHERE {" AND ".join(where)}
    """
    return _limited(sql, "a.at", "a.id", limit), params


def _limited(sql: str, at: str, id_: str, limit: int | None) -> str:
    if limit is None:
        return sql
    return f"({sql} ORDER BY {at} DESC, {id_} DESC LIMIT {int(limit)})"


def _search_sql(filters: Filters, cursor: Cursor | None, limit: int | None):
    branches = [
        _event_branch(filters, cursor, limit),
        _logentry_branch(filters, cursor, limit, "change"),
        _logentry_branch(filters, cursor, limit, "access"),
        _security_branch(filters, cursor, limit),
    ]
    branches = [b for b in branches if b is not None]
    if not branches:
        return None, []
    params: list = []
    for _, branch_params in branches:
        params += branch_params
    union = " UNION ALL ".join(sql for sql, _ in branches)
    sql = f"""
        SELECT r.at, r.source, r.id, r.kind, r.actor_id,
               coalesce(nullif(r.actor_label, ''), 'client:' || ic.name, u.username, '')
                   AS actor,
               r.task_id, r.object_type, r.object_pk, coalesce(r.summary, '') AS summary
        FROM ({union}) r
        LEFT JOIN auth_user u ON u.id = r.actor_id
        LEFT JOIN queues_integrationclient ic ON ic.user_id = r.actor_id
        ORDER BY r.at DESC, r.source DESC, r.id DESC
    """
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, params


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    next_cursor: str


def audit_search(filters: Filters, *, cursor: Cursor | None = None, size: int = PAGE_SIZE):
    """One page of entries, newest first, and the cursor of the next page ('' at the end)."""
    sql, params = _search_sql(filters, cursor, size + 1)
    if sql is None:
        return Page([], "")
    with connection.cursor() as db:
        db.execute(sql, params)
        entries = [Entry(*row) for row in db.fetchall()]
    more = len(entries) > size
    entries = entries[:size]
    return Page(entries, entries[-1].cursor.encode() if more and entries else "")


def audit_search_iter(filters: Filters, *, chunk_size: int = 2000) -> Iterator[Entry]:
    """Every entry of the search, newest first, read through a server-side cursor a chunk at
    a time: memory stays flat whatever the size (the export)."""
    sql, params = _search_sql(filters, None, None)
    if sql is None:
        return
    with connection.chunked_cursor() as db:
        db.execute(sql, params)
        while rows := db.fetchmany(chunk_size):
            for row in rows:
                yield Entry(*row)


# --- Histories ------------------------------------------------------------------------------


def format_changes(changes) -> list[str]:
    """auditlog's `changes` as sentences: "field: old → new", or what an m2m change did."""
    if not isinstance(changes, dict):
        return []
    lines = []
    for name, change in changes.items():
        label = name.replace("_", " ")
        if isinstance(change, dict) and change.get("type") == "m2m":
            verb = "added" if change.get("operation") == "add" else "removed"
            lines.append(f"{label}: {verb} {', '.join(map(str, change.get('objects', [])))}")
        elif isinstance(change, list | tuple) and len(change) == 2:
            lines.append(f"{label}: {change[0]} → {change[1]}")
        else:
            lines.append(f"{label}: {change}")
    return lines


def _logentry_rows(queryset) -> list[Entry]:
    rows = queryset.select_related("actor").order_by("-timestamp", "-id")
    entries = []
    for g in rows:
        label = (g.additional_data or {}).get("actor") or (
            g.actor.get_username() if g.actor_id else ""
        )
        source = "access" if g.action == LogEntry.Action.ACCESS else "change"
        kind = "access" if source == "access" else ("create", "update", "delete")[g.action]
        via = (g.additional_data or {}).get("via", "")
        summary = VIA.get(via, via) if source == "access" else ""
        entries.append(
            Entry(
                g.timestamp,
                source,
                g.pk,
                kind,
                g.actor_id,
                label,
                None,
                "",
                g.object_pk,
                summary,
                format_changes(g.changes) if source == "change" else [],
                emergency=source == "access" and via == "emergency",
            )
        )
    return entries


def object_history(model, pk) -> list[Entry]:
    """Every recorded version of one object (field diffs with who and when), newest first."""
    from django.contrib.contenttypes.models import ContentType

    content_type = ContentType.objects.get_for_model(model)
    return _logentry_rows(LogEntry.objects.filter(content_type=content_type, object_pk=str(pk)))


@dataclass
class TaskHistory:
    timeline: list  # queues.selectors.TimelineEntry, oldest first
    changes: list[Entry]  # field changes and reads, newest first
    notifications: list
    entries: list[tuple[datetime, str, object]]  # everything, oldest first: (time, kind, item)


def task_history(task) -> TaskHistory:
    """Everything recorded about one task, in one timeline: transitions and routing
    explanations (told in words by the task page's own selector), escalations, field changes,
    reads, and the notifications sent (channel and status, never their content)."""
    from escalation.models import Notification
    from queues import selectors as queues_selectors

    timeline = queues_selectors.task_timeline(task)
    changes = _logentry_rows(
        LogEntry.objects.filter(
            content_type__app_label="queues", content_type__model="task", object_id=task.pk
        )
    )
    notifications = list(
        Notification.objects.filter(escalation__task_id=task.pk)
        .select_related("escalation")
        .only("channel", "status", "created_at", "sent_at", "attempts", "escalation__level")
        .order_by("created_at", "id")
    )
    entries = [(e.created_at, "event", e) for e in timeline]
    entries += [(c.at, c.source, c) for c in changes]
    entries += [(n.sent_at or n.created_at, "notification", n) for n in notifications]
    entries.sort(key=lambda item: item[0])
    return TaskHistory(timeline, changes, notifications, entries)


def default_range(days: int = 30) -> tuple[datetime, datetime]:
    end = timezone.localdate() + timedelta(days=1)
    start = end - timedelta(days=days)
    zone = timezone.get_current_timezone()
    return (
        datetime(start.year, start.month, start.day, tzinfo=zone),
        datetime(end.year, end.month, end.day, tzinfo=zone),
    )
