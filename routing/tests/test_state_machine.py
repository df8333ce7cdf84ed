"""Any sequence of what people, intake and the escalation sweep do to tasks keeps the books
straight: hypothesis drives the real services (the ones the pages, the API and the jobs call)
through create, claim, Next task, start, hold, resume, resolve, reopen, release, reroute (also
to another department's queue), classify, reassign, the escalation sweep, the follow-up job,
availability and capacity changes and leaving a department, and after every step SQL checks that

- an open task has one assignee exactly when it is assigned or in progress, or on hold with
  its holder (a held task handed back by someone who left has none);
- its assignee may work its queue (guardian's `work_queue` through a department group): on
  leaving a department a person hands back what they held in its queues at once (work in hand
  to the queue, held tasks stay on hold for the team);
- everyone's `active_load` is the weight of their assigned and in-progress tasks, and never
  above their capacity, unless a manager lowered the capacity below it (then it only falls);
- work is pushed only to people who are available;
- every change of a task wrote exactly one timeline event with an actor: the task's version
  rises by one per event (the sweep's priority raise, which its ESCALATED event records, by
  one more), and each fired escalation step wrote one ESCALATED event.

One small clinic is built once per test; each example runs inside a savepoint that is rolled
back, so every example starts from the same clean world.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from accounts import services as accounts_services
from accounts.models import StaffProfile
from accounts.tests.factories import (
    DepartmentFactory,
    SiteFactory,
    SkillFactory,
    StaffProfileFactory,
    StaffSkillFactory,
    UserFactory,
)
from escalation import services as escalation_services
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues import services as queues_services
from queues.intake.draft import TaskDraft
from queues.models import Queue, Task
from queues.tests.factories import QueueFactory, TaskTypeFactory
from queues.views.task import ACTIONS, REFUSED
from routing import jobs as routing_jobs
from routing import services as routing_services
from routing.intake import intake_submit
from routing.models import WorkflowStep, WorkflowTemplate
from routing.tests.factories import (
    ClassificationRuleFactory,
    RoutingRuleFactory,
    RuleSetFactory,
)

pytestmark = pytest.mark.django_db

# What the pages answer with a message instead of a 500: the services' own refusals.
EXPECTED_REFUSALS = (*REFUSED, ValidationError, PermissionDenied)
SUBJECTS = [
    "Claim denied for the March visit",
    "Appeal of a denied claim",
    "Medical records request",
    "Referral packet for cardiology",
    "Chest pain since this morning",
    "A question about something",
]
STAFF = ["ana", "ben", "cara", "dev", "eve"]
LOADED = tuple(Task.LOADED_STATUSES)


@dataclass
class World:
    queues: dict[str, Queue]
    departments: dict
    staff: dict[str, StaffProfile]
    users: dict[str, User]


def build_world() -> World:
    """Billing (billing, appeals that need a skill, escalations, needs review) and Records
    (records, pull only; front desk); a workflow on resolved referrals; five people with
    capacities 1-3, one of them away; an SLA policy that raises, moves and reassigns."""
    site = SiteFactory(code="main", name="Main Street Clinic")
    billing = DepartmentFactory(site=site, name="Billing", code="billing")
    records = DepartmentFactory(site=site, name="Records", code="records")
    queues = {
        "billing": QueueFactory(department=billing, name="Billing", code="billing"),
        "appeals": QueueFactory(department=billing, name="Appeals", code="appeals"),
        "escalations": QueueFactory(
            department=billing,
            name="Escalations",
            code="escalations",
            kind=Queue.Kind.ESCALATION,
            assignment_policy=Queue.Policy.PUSH_ROUND_ROBIN,
        ),
        "review": QueueFactory(
            department=billing,
            name="Needs review",
            code="review",
            kind=Queue.Kind.REVIEW,
            assignment_policy=Queue.Policy.PULL_ONLY,
        ),
        "records": QueueFactory(
            department=records,
            name="Records",
            code="records",
            assignment_policy=Queue.Policy.PULL_ONLY,
        ),
        "front": QueueFactory(
            department=records,
            name="Front desk",
            code="front-desk",
            assignment_policy=Queue.Policy.PUSH_ROUND_ROBIN,
        ),
    }
    triage = TaskTypeFactory(code="clinical_triage", default_queue=queues["front"])
    rules = RuleSetFactory(
        review_queue=queues["review"], red_flag_queue=queues["front"], red_flag_task_type=triage
    )
    denial = TaskTypeFactory(code="claim_denial", default_queue=queues["billing"])
    appeal = TaskTypeFactory(
        code="appeal", default_queue=queues["appeals"], capacity_weight=2, default_priority=2
    )
    records_request = TaskTypeFactory(code="records_request", default_queue=queues["records"])
    referral = TaskTypeFactory(code="referral", default_queue=queues["front"], capacity_weight=3)
    for phrases, task_type in [
        ("appeal", appeal),
        ("claim denied", denial),
        ("medical records", records_request),
        ("referral", referral),
    ]:
        ClassificationRuleFactory(rule_set=rules, phrases=phrases, set_task_type=task_type)
    # A resolved referral spawns a records request, and a claim follow-up blocked until the
    # records request is resolved.
    template = WorkflowTemplate.objects.create(
        name="Referral processed", trigger_type=referral, trigger=WorkflowTemplate.Trigger.RESOLVED
    )
    WorkflowStep.objects.create(template=template, order=10, task_type=records_request)
    WorkflowStep.objects.create(
        template=template, order=20, task_type=denial, blocked_until=records_request
    )
    appeals_skill = SkillFactory(code="payer-appeals", name="Payer appeals")
    RoutingRuleFactory(
        rule_set=rules,
        task_types=[appeal],
        target_queue=queues["appeals"],
        required_skill=appeals_skill,
        min_skill_level=3,
    )
    # Escalation: the first claim's breach raises the priority (set-based); a breached
    # resolution moves the task to the escalation queue, and an hour later offers it to
    # someone else (both through the state machine).
    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=240)
    EscalationStepFactory(policy=policy, level=1, percent=100, action="raise_priority")
    EscalationStepFactory(
        policy=policy,
        level=2,
        target="resolution",
        when="after_breach",
        minutes_after=0,
        action="move_to_escalation_queue",
        escalation_queue=queues["escalations"],
    )
    EscalationStepFactory(
        policy=policy,
        level=3,
        target="resolution",
        when="after_breach",
        minutes_after=60,
        action="reassign",
    )
    people = {
        "ana": ([billing], 2, None, "available"),
        "ben": ([billing], 3, 4, "available"),
        "cara": ([records], 1, None, "available"),
        "dev": ([billing, records], 3, 2, "available"),
        "eve": ([records], 2, None, "away"),
    }
    staff = {}
    for name, (departments, capacity, appeals_level, availability) in people.items():
        staff[name] = StaffProfileFactory(
            user=UserFactory(username=name, first_name=name.title(), last_name="Agent"),
            departments=departments,
            capacity=capacity,
            availability=availability,
        )
        if appeals_level:
            StaffSkillFactory(staff=staff[name], skill=appeals_skill, level=appeals_level)
    return World(
        queues=queues,
        departments={"billing": billing, "records": records},
        staff=staff,
        users={name: profile.user for name, profile in staff.items()},
    )


TASKS_SQL = """
SELECT t.id, t.status, t.assignee_id, t.queue_id, t.weight, t.version, t.priority,
       t.waiting_for_capacity,
       (SELECT count(*) FROM queues_taskevent e WHERE e.task_id = t.id AND e.kind <> 'escalated'),
       (SELECT count(*) FROM queues_taskevent e WHERE e.task_id = t.id AND e.kind = 'escalated'),
       (SELECT count(*) FROM escalation_escalation x WHERE x.task_id = t.id),
       t.assignee_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM guardian_groupobjectpermission gop
             JOIN auth_user_groups ug ON ug.group_id = gop.group_id
             JOIN auth_permission p ON p.id = gop.permission_id
             JOIN django_content_type ct ON ct.id = p.content_type_id
            WHERE ug.user_id = t.assignee_id AND p.codename = 'work_queue'
              AND ct.app_label = 'queues' AND ct.model = 'queue'
              AND gop.content_type_id = ct.id AND gop.object_pk = t.queue_id::text)
  FROM queues_task t ORDER BY t.id
"""
STAFF_SQL = """
SELECT sp.user_id, sp.active_load, sp.capacity, sp.availability,
       coalesce((SELECT sum(t.weight) FROM queues_task t
                  WHERE t.assignee_id = sp.user_id AND t.status IN ('assigned', 'in_progress')),
                0)
  FROM accounts_staffprofile sp ORDER BY sp.user_id
"""
EVENTS_SQL = """
SELECT id, task_id, kind, actor_id, actor_label, to_user_id FROM queues_taskevent
 WHERE id > %s ORDER BY id
"""


def fetch(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class ClinicMachine(RuleBasedStateMachine):
    world: World  # set by the test before the machine runs

    def __init__(self):
        super().__init__()
        # Every example in a savepoint of the test's transaction, rolled back in teardown.
        self._example = transaction.atomic()
        self._example.__enter__()
        self.users = self.world.users
        self.queues = self.world.queues
        self.clock = timedelta(0)  # how far the sweep's clock is ahead of the real one
        self.n = 0
        self.over_capacity: set[int] = set()  # people whose capacity was lowered under load
        self.tasks: dict[int, tuple] = {}
        self.loads: dict[int, int] = {}
        self.last_event_id = fetch("SELECT coalesce(max(id), 0) FROM queues_taskevent")[0][0]

    def teardown(self):
        transaction.set_rollback(True)
        self._example.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------

    def _task_ids(self) -> list[int]:
        return sorted(self.tasks)

    def _pick_task(self, data, *statuses: str) -> int | None:
        """Mostly a task the action fits; now and then any task, which must be refused."""
        ids = self._task_ids()
        fitting = [task_id for task_id in ids if self.tasks[task_id][1] in statuses]
        if fitting and data.draw(st.integers(0, 4), label="any task") != 0:
            ids = fitting
        return data.draw(st.sampled_from(ids), label="task") if ids else None

    def _do(self, call) -> None:
        """One request: its own savepoint, as a page's; a refusal changes nothing."""
        try:
            with transaction.atomic():
                call()
        except EXPECTED_REFUSALS:
            pass

    def _version(self, task_id: int) -> int:
        return self.tasks[task_id][5]

    def _actor(self, data, task_id: int):
        """The assignee half the time, as on the page; otherwise anyone (a colleague, a lead)."""
        assignee_id = self.tasks[task_id][2]
        if assignee_id and data.draw(st.booleans(), label="assignee acts"):
            return User.objects.get(pk=assignee_id)
        return self.users[data.draw(st.sampled_from(STAFF), label="actor")]

    # --- rules -------------------------------------------------------------------------------

    @initialize(subjects=st.lists(st.sampled_from(SUBJECTS), min_size=2, max_size=6))
    def morning(self, subjects):
        """Every example starts with some work in the queues."""
        for n, subject in enumerate(subjects):
            self.create(subject, mrn=f"MRN-{n % 2}")

    @rule(subject=st.sampled_from(SUBJECTS), mrn=st.sampled_from(["", "MRN-1", "MRN-2"]))
    def create(self, subject, mrn):
        self.n += 1
        draft = TaskDraft(channel="api", subject=subject, patient_mrn=mrn, external_id=f"m{self.n}")
        self._do(lambda: intake_submit(draft=draft, actor="client:ehr"))

    @rule(data=st.data(), who=st.sampled_from(STAFF), stale=st.integers(0, 4))
    def claim(self, data, who, stale):
        """Mostly from a fresh page; now and then from a stale one."""
        task_id = self._pick_task(data, Task.Status.QUEUED)
        if task_id is None:
            return
        version = self._version(task_id) - (1 if stale == 0 else 0)
        self._do(
            lambda: ACTIONS["claim"].service(
                task_id=task_id, user=self.users[who], expected_version=version
            )
        )

    @rule(who=st.sampled_from(STAFF))
    def next_task(self, who):
        self._do(lambda: queues_services.task_claim_next(user=self.users[who]))

    @rule(data=st.data())
    def start(self, data):
        task_id = self._pick_task(data, Task.Status.ASSIGNED)
        if task_id is None:
            return
        user = self._actor(data, task_id)
        self._do(lambda: ACTIONS["start"].service(task_id=task_id, user=user))

    @rule(data=st.data(), follow_up=st.booleans())
    def hold(self, data, follow_up):
        task_id = self._pick_task(data, *LOADED)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        when = timezone.now() + timedelta(days=1) if follow_up else None
        self._do(
            lambda: ACTIONS["hold"].service(
                task_id=task_id, actor=actor, reason="Waiting for the payer", follow_up_at=when
            )
        )

    @rule(data=st.data())
    def resume(self, data):
        task_id = self._pick_task(data, Task.Status.ON_HOLD)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        self._do(lambda: ACTIONS["resume"].service(task_id=task_id, actor=actor))

    @rule(data=st.data())
    def resolve(self, data):
        task_id = self._pick_task(data, *LOADED, Task.Status.ON_HOLD)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        version = self._version(task_id)
        self._do(
            lambda: ACTIONS["resolve"].service(
                task_id=task_id, actor=actor, outcome="done", expected_version=version
            )
        )

    @rule(data=st.data())
    def reopen(self, data):
        task_id = self._pick_task(data, Task.Status.RESOLVED)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        self._do(lambda: ACTIONS["reopen"].service(task_id=task_id, actor=actor, reason="Not done"))

    @rule(data=st.data())
    def release(self, data):
        task_id = self._pick_task(data, *LOADED)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        self._do(lambda: ACTIONS["release"].service(task_id=task_id, actor=actor, reason="Busy"))

    @rule(data=st.data(), to=st.sampled_from(["billing", "appeals", "records", "front"]))
    def reroute(self, data, to):
        """Also a department transfer: records and front desk belong to another department."""
        task_id = self._pick_task(data, *Task.OPEN_STATUSES)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        self._do(
            lambda: ACTIONS["reroute"].service(
                task_id=task_id, actor=actor, to_queue=self.queues[to], reason="Not ours"
            )
        )

    @rule(
        data=st.data(),
        task_type=st.sampled_from(["claim_denial", "appeal", "records_request", "referral"]),
        priority=st.sampled_from([None, 1, 4]),
    )
    def classify(self, data, task_type, priority):
        """A person classifies a task, typically from Needs review; the rules route it."""
        task_id = self._pick_task(data, Task.Status.QUEUED, *LOADED)
        if task_id is None:
            return
        actor = self._actor(data, task_id)
        self._do(
            lambda: ACTIONS["classify"].service(
                task_id=task_id, actor=actor, task_type_code=task_type, priority=priority
            )
        )

    @rule(data=st.data(), to=st.sampled_from(STAFF), by=st.sampled_from(STAFF))
    def reassign(self, data, to, by):
        task_id = self._pick_task(data, Task.Status.QUEUED, *LOADED)
        if task_id is None:
            return
        self._do(
            lambda: ACTIONS["reassign"].service(
                task_id=task_id, actor=self.users[by], to_user=self.users[to], reason="Cover"
            )
        )

    @rule(minutes=st.sampled_from([30, 90, 300]))
    def escalate(self, minutes):
        """The sweep, with its clock moved on: steps fall due as the tasks age."""
        self.clock += timedelta(minutes=minutes)
        self._do(lambda: escalation_services.sweep(now=timezone.now() + self.clock))

    @rule(data=st.data())
    def follow_up_falls_due(self, data):
        """The follow-up time of a held task passes, and the minute's job brings it back."""
        held = [task_id for task_id in self._task_ids() if self.tasks[task_id][1] == "on_hold"]
        if held:
            task_id = data.draw(st.sampled_from(held), label="held task")
            # The clock moves on: a due time, not a change of the task (no version, no event).
            Task.objects.filter(pk=task_id, follow_up_at__isnull=False).update(
                follow_up_at=timezone.now() - timedelta(minutes=1)
            )
        self._do(routing_jobs.resume_due_follow_ups)

    @rule(who=st.sampled_from(STAFF), availability=st.sampled_from(StaffProfile.Availability))
    def set_availability(self, who, availability):
        profile = StaffProfile.objects.get(user=self.users[who])
        self._do(
            lambda: routing_services.staff_set_availability(
                profile=profile, availability=availability
            )
        )

    @rule(who=st.sampled_from(STAFF), capacity=st.integers(1, 3))
    def set_capacity(self, who, capacity):
        """A manager edits the capacity in the admin, maybe below the present load."""
        profile = StaffProfile.objects.get(user=self.users[who])
        profile.capacity = capacity
        profile.save(update_fields=["capacity"])
        if profile.active_load > capacity:
            self.over_capacity.add(profile.user_id)

    @rule(who=st.sampled_from(STAFF), department=st.sampled_from(["billing", "records"]))
    def leave_department(self, who, department):
        profile = StaffProfile.objects.get(user=self.users[who])
        leaving = self.world.departments[department]
        remaining = [d for d in accounts_services.departments_of(profile.user) if d != leaving]
        accounts_services.staff_set_departments(profile=profile, departments=remaining)
        # What they held in that department's queues went back to the team with the change.
        assert not Task.objects.filter(
            assignee_id=profile.user_id,
            status__in=(*LOADED, Task.Status.ON_HOLD),
            queue__department=leaving,
        ).exists()

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def the_books_balance(self):
        tasks = {row[0]: row for row in fetch(TASKS_SQL)}
        staff = fetch(STAFF_SQL)
        events = fetch(EVENTS_SQL, [self.last_event_id])
        availability = {user_id: avail for user_id, _, _, avail, _ in staff}

        for task_id, row in tasks.items():
            _, status, assignee, queue_id, _, version, priority, waiting, *counts = row
            non_escalated, escalated, escalations, may_work = counts
            holds_someone = status in LOADED or (
                status == Task.Status.ON_HOLD and assignee is not None
            )
            assert (assignee is not None) == holds_someone or status == Task.Status.RESOLVED, (
                f"task {task_id} is {status} with assignee {assignee}"
            )
            assert not waiting or status == Task.Status.QUEUED, f"task {task_id} waits, {status}"
            if holds_someone:
                assert may_work, (
                    f"task {task_id} ({status}) is with user {assignee}, who may not work "
                    f"queue {queue_id}"
                )
            before = self.tasks.get(task_id)
            old_version, old_priority, old_events = (
                (before[5], before[6], before[8]) if before else (0, priority, 0)
            )
            old_escalated, old_escalations = (before[9], before[10]) if before else (0, 0)
            # The sweep raises a priority with no event of its own: its ESCALATED event says so.
            raised = old_priority - priority if escalated > old_escalated else 0
            assert raised >= 0
            assert version - old_version == (non_escalated - old_events) + raised, (
                f"task {task_id}: version {old_version} -> {version}, "
                f"{non_escalated - old_events} new events, priority raised {raised}"
            )
            assert escalated - old_escalated == escalations - old_escalations, (
                f"task {task_id}: {escalations - old_escalations} steps fired, "
                f"{escalated - old_escalated} escalated events"
            )

        for event_id, task_id, kind, actor_id, actor_label, to_user in events:
            assert actor_id is not None or actor_label, f"event {event_id} ({kind}) has no actor"
            if kind == "assigned":
                assert availability[to_user] == StaffProfile.Availability.AVAILABLE, (
                    f"task {task_id} was pushed to user {to_user}, who is {availability[to_user]}"
                )

        for user_id, load, capacity, _, carried in staff:
            assert load == carried, f"user {user_id}: load {load}, tasks weigh {carried}"
            if load > capacity:
                assert user_id in self.over_capacity, (
                    f"user {user_id}: load {load} over capacity {capacity}"
                )
                assert load <= self.loads.get(user_id, 0), (
                    f"user {user_id} took work while over capacity"
                )
            else:
                self.over_capacity.discard(user_id)

        self.tasks = tasks
        self.loads = {user_id: load for user_id, load, *_ in staff}
        if events:
            self.last_event_id = events[-1][0]


def test_any_sequence_of_actions_keeps_tasks_loads_and_timeline_consistent():
    ClinicMachine.world = build_world()
    run_state_machine_as_test(
        ClinicMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
