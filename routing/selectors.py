"""Reads for routing: the active rule set as engine specs, and the staff as candidates.

The compiled rule set is cached per process and keyed by a fingerprint read from the database
in one small query (the active set's revision, and the last change of task types, queues, sites
and skills), so an edit in the admin reaches every web process and worker on its next
decision, with no shared in-process state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from accounts.models import Site, Skill, in_window
from queues.models import Queue, TaskType
from routing import engine
from routing.models import (
    ClassificationRule,
    DedupPolicy,
    RoutingRule,
    RuleSet,
    WorkflowStep,
    WorkflowTemplate,
)


class NoActiveRuleSet(LookupError):
    pass


@dataclass(frozen=True)
class SiteHours:
    time_zone: str
    opens_at: object
    closes_at: object
    open_weekdays: tuple[int, ...]

    def local(self, now: datetime) -> datetime:
        return now.astimezone(engine._zone(self.time_zone))

    def is_open(self, local_now: datetime) -> bool:
        if self.open_weekdays and local_now.weekday() not in self.open_weekdays:
            return False
        return in_window(local_now.time(), self.opens_at, self.closes_at)


@dataclass(frozen=True)
class RoutingSnapshot:
    rule_set_id: int
    version: int
    fingerprint: tuple
    spec: engine.RuleSetSpec
    compiled: engine.CompiledRuleSet
    task_types: dict[str, tuple[int, int]]  # code -> (id, capacity weight)
    skills: dict[str, int]  # code -> id
    skill_codes: dict[int, str]
    sites: dict[int, SiteHours]
    default_time_zone: str
    # Intake's configuration, read once per change like the rules: the active dedup policy of
    # each task type (by code), and the active workflow templates by (type id, trigger), with
    # their steps.
    dedup_policies: dict[str, DedupPolicy] = field(default_factory=dict)
    workflow_templates: dict[tuple[int, str], list[WorkflowTemplate]] = field(default_factory=dict)

    def queue(self, queue_id: int) -> engine.QueueSpec:
        return self.spec.queues[queue_id]

    def local_now(self, site_id: int | None, now: datetime) -> tuple[datetime, bool]:
        """The site's local time and whether it is open. A task with no site is read in the
        clinic's default zone and counts as arriving while open."""
        hours = self.sites.get(site_id) if site_id else None
        if hours is None:
            return now.astimezone(engine._zone(self.default_time_zone)), True
        local = hours.local(now)
        return local, hours.is_open(local)


FINGERPRINT_SQL = """
SELECT rs.id, rs.version, rs.revision,
       (SELECT max(updated_at) FROM queues_tasktype),
       (SELECT max(updated_at) FROM queues_queue),
       (SELECT max(updated_at) FROM accounts_site),
       (SELECT count(*) || ':' || coalesce(max(id), 0) FROM accounts_skill),
       (SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM routing_deduppolicy),
       (SELECT count(*) || ':' || coalesce(max(updated_at)::text, '')
          FROM routing_workflowtemplate),
       (SELECT count(*) || ':' || coalesce(max(id), 0) FROM routing_workflowstep)
  FROM routing_ruleset rs
 WHERE rs.id = COALESCE(%s, (SELECT id FROM routing_ruleset WHERE status = 'active'))
"""

_cache: dict[int | None, RoutingSnapshot] = {}
_lock = threading.Lock()


def routing_snapshot(rule_set_id: int | None = None) -> RoutingSnapshot:
    """The active rule set (or the given one, for a draft) ready for the engine."""
    with connection.cursor() as cursor:
        cursor.execute(FINGERPRINT_SQL, [rule_set_id])
        row = cursor.fetchone()
    return snapshot_for(row, rule_set_id)


def snapshot_for(row: tuple | None, rule_set_id: int | None = None) -> RoutingSnapshot:
    """The snapshot for a row of FINGERPRINT_SQL (read by the caller, perhaps together with
    other statements in one round trip): the cached one while the fingerprint holds."""
    if row is None:
        if rule_set_id is None:
            raise NoActiveRuleSet(
                "No rule set is active. A manager activates one in the admin (Routing rules)."
            )
        raise NoActiveRuleSet(f"Rule set {rule_set_id} does not exist.")
    fingerprint = tuple(row)
    cached = _cache.get(rule_set_id)
    if cached is not None and cached.fingerprint == fingerprint:
        return cached
    snapshot = build_snapshot(row[0], fingerprint=fingerprint)
    with _lock:
        _cache[rule_set_id] = snapshot
    return snapshot


def build_snapshot(rule_set_id: int, *, fingerprint: tuple = ()) -> RoutingSnapshot:
    from django.conf import settings

    rule_set = RuleSet.objects.select_related("red_flag_task_type").get(pk=rule_set_id)
    task_types = {
        t.code: t for t in TaskType.objects.filter(is_active=True).select_related("default_queue")
    }
    queues = {
        q.id: engine.QueueSpec(
            id=q.id,
            name=q.name,
            department_id=q.department_id,
            kind=q.kind,
            policy=q.assignment_policy,
        )
        for q in Queue.objects.filter(is_active=True)
    }
    classification = tuple(
        engine.ClassificationRuleSpec(
            id=r.id,
            name=r.name,
            order=r.order,
            mode=r.mode,
            rollout_percent=r.rollout_percent,
            channels=tuple(r.channels),
            phrases=tuple(r.phrase_list),
            phrase_match=r.phrase_match,
            regex=r.regex,
            request_types=tuple(r.request_types),
            source_systems=tuple(r.source_systems),
            set_task_type=r.set_task_type.code if r.set_task_type else "",
            set_priority=r.set_priority,
            min_priority=r.min_priority,
            add_tags=tuple(r.add_tags),
            stop=r.stop,
        )
        for r in ClassificationRule.objects.filter(rule_set_id=rule_set_id)
        .exclude(mode="off")
        .select_related("set_task_type")
        .order_by("order", "id")
    )
    routing = tuple(
        engine.RoutingRuleSpec(
            id=r.id,
            name=r.name,
            target_queue_id=r.target_queue_id,
            order=r.order,
            mode=r.mode,
            rollout_percent=r.rollout_percent,
            task_types=tuple(t.code for t in r.task_types.all()),
            priority_min=r.priority_min,
            priority_max=r.priority_max,
            tags_any=tuple(r.tags_any),
            channels=tuple(r.channels),
            site_ids=tuple(s.id for s in r.sites.all()),
            business_hours=r.business_hours,
            weekdays=tuple(r.weekdays),
            time_from=r.time_from,
            time_to=r.time_to,
            required_skill=r.required_skill.code if r.required_skill else "",
            min_skill_level=r.min_skill_level,
            priority_override=r.priority_override,
        )
        for r in RoutingRule.objects.filter(rule_set_id=rule_set_id)
        .exclude(mode="off")
        .select_related("required_skill")
        .prefetch_related("task_types", "sites")
        .order_by("order", "id")
    )
    spec = engine.RuleSetSpec(
        version=rule_set.version,
        task_types={
            code: engine.TaskTypeSpec(
                code=code,
                name=t.name,
                default_queue_id=t.default_queue_id,
                default_priority=t.default_priority,
                capacity_weight=t.capacity_weight,
            )
            for code, t in task_types.items()
        },
        queues=queues,
        review_queue_id=rule_set.review_queue_id,
        red_flag_queue_id=rule_set.red_flag_queue_id,
        classification_rules=classification,
        routing_rules=routing,
        red_flag_phrases=tuple(rule_set.red_flag_phrase_list),
        red_flag_task_type=rule_set.red_flag_task_type.code,
    )
    skills = dict(Skill.objects.values_list("code", "id"))
    return RoutingSnapshot(
        rule_set_id=rule_set.id,
        version=rule_set.version,
        fingerprint=fingerprint,
        spec=spec,
        compiled=engine.compile_ruleset(spec),
        task_types={code: (t.id, t.capacity_weight) for code, t in task_types.items()},
        skills=skills,
        skill_codes={v: k for k, v in skills.items()},
        sites={
            s.id: SiteHours(s.time_zone, s.opens_at, s.closes_at, tuple(s.open_weekdays))
            for s in Site.objects.all()
        },
        default_time_zone=settings.TIME_ZONE,
        dedup_policies=_dedup_policies(),
        workflow_templates=_workflow_templates(),
    )


def _dedup_policies() -> dict[str, DedupPolicy]:
    return {
        policy.task_type.code: policy
        for policy in DedupPolicy.objects.filter(is_active=True).select_related("task_type")
    }


def _workflow_templates() -> dict[tuple[int, str], list[WorkflowTemplate]]:
    from django.db.models import Prefetch

    steps = WorkflowStep.objects.select_related("task_type").order_by("order", "id")
    templates: dict[tuple[int, str], list[WorkflowTemplate]] = {}
    for template in (
        WorkflowTemplate.objects.filter(is_active=True)
        .prefetch_related(Prefetch("steps", queryset=steps))
        .order_by("name", "id")
    ):
        templates.setdefault((template.trigger_type_id, template.trigger), []).append(template)
    return templates


CANDIDATES_SQL = """
SELECT sp.user_id, u.username, u.first_name, u.last_name, sp.availability,
       sp.shift_start, sp.shift_end, sp.shift_weekdays, sp.time_zone,
       sp.active_load, sp.capacity, sp.last_assigned_at,
       COALESCE((SELECT json_object_agg(s.code, ss.level)
                   FROM accounts_staffskill ss JOIN accounts_skill s ON s.id = ss.skill_id
                  WHERE ss.staff_id = sp.id), '{}'::json) AS skills,
       ARRAY(SELECT DISTINCT gop.object_pk::bigint
               FROM auth_user_groups ug
               JOIN guardian_groupobjectpermission gop ON gop.group_id = ug.group_id
               JOIN auth_permission p ON p.id = gop.permission_id
               JOIN django_content_type ct ON ct.id = p.content_type_id
              WHERE ug.user_id = u.id AND p.codename = 'work_queue'
                AND ct.app_label = 'queues' AND ct.model = 'queue'
             UNION
             SELECT uop.object_pk::bigint
               FROM guardian_userobjectpermission uop
               JOIN auth_permission p ON p.id = uop.permission_id
               JOIN django_content_type ct ON ct.id = p.content_type_id
              WHERE uop.user_id = u.id AND p.codename = 'work_queue'
                AND ct.app_label = 'queues' AND ct.model = 'queue') AS queue_ids,
       (%(patient)s <> '' AND EXISTS (
            SELECT 1 FROM queues_task t
             WHERE t.assignee_id = u.id AND t.patient_mrn = %(patient)s
               -- Implied by the line above, but a prepared statement's generic plan cannot
               -- see it: spelled out, `task_by_patient` answers instead of a scan of every
               -- open task.
               AND t.patient_mrn <> ''
               AND t.status IN ('assigned', 'in_progress', 'on_hold'))) AS continuity
  FROM accounts_staffprofile sp
  JOIN auth_user u ON u.id = sp.user_id
 WHERE u.is_active AND (%(queue_id)s::bigint IS NULL OR EXISTS (
        SELECT 1 FROM auth_user_groups ug
          JOIN guardian_groupobjectpermission gop ON gop.group_id = ug.group_id
          JOIN auth_permission p ON p.id = gop.permission_id
         WHERE ug.user_id = u.id AND p.codename = 'work_queue'
           AND gop.object_pk = %(queue_id)s::text))
 ORDER BY sp.user_id
"""


def candidates(*, patient_key: str = "", queue_id: int | None = None) -> list[engine.CandidateSpec]:
    """Everyone who works a queue (all staff when `queue_id` is None), as the engine sees them:
    one query. Staff ids in the engine are user ids, the ids tasks are assigned to."""
    with connection.cursor() as cursor:
        cursor.execute(CANDIDATES_SQL, {"patient": patient_key or "", "queue_id": queue_id})
        rows = cursor.fetchall()
    result = []
    for (
        user_id,
        username,
        first,
        last,
        availability,
        shift_start,
        shift_end,
        shift_weekdays,
        time_zone,
        active_load,
        capacity,
        last_assigned_at,
        skills,
        queue_ids,
        continuity,
    ) in rows:
        result.append(
            engine.CandidateSpec(
                staff_id=user_id,
                name=f"{first} {last}".strip() or username,
                queue_ids=frozenset(queue_ids),
                availability=availability,
                shift_start=shift_start,
                shift_end=shift_end,
                shift_weekdays=tuple(shift_weekdays),
                time_zone=time_zone,
                active_load=active_load,
                capacity=capacity,
                skills=skills or {},
                last_assigned_at=last_assigned_at,
                open_patient_keys=frozenset([patient_key]) if continuity else frozenset(),
            )
        )
    return result
