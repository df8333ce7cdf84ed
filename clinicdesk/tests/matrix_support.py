"""The clinic of the access matrix, the routes it walks, and who may do what on each.

Two departments, A and B. Every object a route names belongs to department B; the people
asking are an agent of A, an agent of B (the owner: proves each URL really names a B object
someone may open), a supervisor of A, a manager, a compliance reviewer, an integration client
serving A, and an anonymous visitor.

Routes are read from the URL resolver, so a new route is walked as soon as it exists. Filling
a route takes a value for each of its parameters from `PARAMS` (by name); a route with a
parameter nobody knows, or without an entry in `ACCESS`, fails the matrix with a message saying
what to add here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.services import staff_set_departments
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from clinicdesk import roles
from escalation.models import Escalation, Notification
from escalation.tests.factories import EscalationStepFactory
from queues.intake import store
from queues.models import Attachment, Channel, InboundMessage, Queue, Task
from queues.tests.factories import QueueFactory, TaskEventFactory, TaskFactory, TaskTypeFactory
from routing.tests.factories import ClassificationRuleFactory, RoutingRuleFactory, RuleSetFactory

# In every patient field of department B's tasks: no page of A's people may ever show it.
MARK = "xfb7q3"
# In the names of B's queue, department and people: not patient data, but still B's rows.
FOREIGN = "qz9kw"

ANON = "anonymous"
AGENT_A = "agent_a"
AGENT_B = "agent_b"
SUPERVISOR_A = "supervisor_a"
MANAGER = "manager"
COMPLIANCE = "compliance"
CLIENT_A = "client_a"
ROLES = (ANON, AGENT_A, AGENT_B, SUPERVISOR_A, MANAGER, COMPLIANCE, CLIENT_A)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# The Django groups each matrix role holds (the integration client reads as its service user).
ROLE_GROUPS = {
    AGENT_A: roles.AGENT,
    AGENT_B: roles.AGENT,
    SUPERVISOR_A: roles.SUPERVISOR,
    MANAGER: roles.MANAGER,
    COMPLIANCE: roles.COMPLIANCE,
}


# --- the clinic ----------------------------------------------------------------------------


@dataclass
class World:
    dept_a: object
    dept_b: object
    queue_a: Queue
    queue_b: Queue
    review_a: Queue
    users: dict[str, object]
    tokens: dict[str, str]
    client_b: object
    task_b: Task
    tasks_a: list[Task]
    tasks_b: list[Task]
    attachment_b: Attachment
    inbound_b: InboundMessage
    inbound_a: InboundMessage
    escalation_b: Escalation
    escalation_a: Escalation
    rule_set: object
    routing_rule: object
    classification_rule: object
    replay_run: object
    media_root: str
    # Per admin model label ("queues.task"): the pk the admin routes of that model open.
    admin_objects: dict[str, object] = field(default_factory=dict)


def _person(username: str, role: str, departments, **kwargs):
    names = {"first_name": username.replace("_", " ").title(), "last_name": "Matrix"}
    if username == AGENT_B:
        names["last_name"] = f"{FOREIGN.title()}staff"
    return StaffProfileFactory(
        user=UserFactory(username=username, roles=[role], **names, **kwargs),
        departments=list(departments),
    ).user


def _b_task(task_type, **fields) -> Task:
    defaults = {
        "subject": f"Refill {MARK}subject",
        "body": f"Please call back about {MARK}body.",
        "patient_name": f"Ana {MARK}name",
        "patient_mrn": f"{MARK}mrn",
        "patient_birth_date": date(1961, 2, 14),
        "metadata": {"note": f"{MARK}metadata"},
    }
    return TaskFactory(task_type=task_type, **{**defaults, **fields})


def build_world(media_root: str) -> World:
    now = timezone.now()
    dept_a = DepartmentFactory(name="Matrix A front desk", code="matrix-a")
    dept_b = DepartmentFactory(name=f"Matrix B {FOREIGN}dept", code="matrix-b")
    queue_a = QueueFactory(department=dept_a, name="Matrix A desk", code="matrix-a-desk")
    queue_b = QueueFactory(department=dept_b, name=f"Matrix B {FOREIGN}queue", code="matrix-b")
    review_a = QueueFactory(
        department=dept_a,
        name="Matrix review",
        code="matrix-review",
        kind=Queue.Kind.REVIEW,
        assignment_policy=Queue.Policy.PULL_ONLY,
    )
    type_a = TaskTypeFactory(code="matrix_a_type", name="Matrix A request", default_queue=queue_a)
    type_b = TaskTypeFactory(code="matrix_b_type", name="Matrix B request", default_queue=queue_b)
    rule_set = RuleSetFactory(review_queue=review_a, red_flag_queue=queue_a)
    routing_rule = RoutingRuleFactory(rule_set=rule_set, target_queue=queue_b)
    classification_rule = ClassificationRuleFactory(
        rule_set=rule_set, phrases="matrix", set_task_type=type_b
    )

    users = {
        AGENT_A: _person(AGENT_A, roles.AGENT, [dept_a]),
        AGENT_B: _person(AGENT_B, roles.AGENT, [dept_b]),
        SUPERVISOR_A: _person(SUPERVISOR_A, roles.SUPERVISOR, [dept_a]),
        # As the clinic sets them up: the admin is the managers' page only.
        MANAGER: _person(MANAGER, roles.MANAGER, [], is_staff=True),
        COMPLIANCE: _person(COMPLIANCE, roles.COMPLIANCE, []),
    }
    client_a, issued_a = store.integration_client_create(
        name="matrix-a-ehr", channels=["api", "fhir", "email"], departments=[dept_a]
    )
    client_b, _ = store.integration_client_create(
        name="matrix-b-lab", channels=["api", "fhir"], departments=[dept_b]
    )
    users[CLIENT_A] = client_a.user

    agent_a, agent_b = users[AGENT_A], users[AGENT_B]
    tasks_a = [
        TaskFactory(task_type=type_a, subject="A queued request", patient_name="Al Apple"),
        TaskFactory(
            task_type=type_a,
            status=Task.Status.ASSIGNED,
            assignee=agent_a,
            subject="A assigned request",
        ),
        TaskFactory(
            task_type=type_a,
            status=Task.Status.ON_HOLD,
            assignee=agent_a,
            hold_reason="Waiting on the payer",
            follow_up_at=now + timedelta(days=1),
            subject="A held request",
        ),
    ]
    task_b = _b_task(type_b, status=Task.Status.ASSIGNED, assignee=agent_b, priority=1)
    tasks_b = [
        task_b,
        # A follow-up of A's first task that B's team does (a workflow chain across teams).
        _b_task(type_b, status=Task.Status.QUEUED, priority=1, parent=tasks_a[0]),
        _b_task(
            type_b,
            status=Task.Status.ON_HOLD,
            assignee=agent_b,
            hold_reason=f"Waiting on {MARK}hold",
            follow_up_at=now - timedelta(minutes=5),
        ),
        # A request about A's first task that ended up in B's queue.
        _b_task(
            type_b,
            status=Task.Status.DUPLICATE,
            duplicate_of=tasks_a[0],
            resolved_at=now,
            outcome="done",
        ),
    ]
    for task in [*tasks_a, *tasks_b]:
        TaskEventFactory(task=task, kind="created", actor_label="system:matrix")
    TaskEventFactory(
        task=task_b, kind="routed", actor_label="system:matrix", to_queue=queue_b, rule_id=1
    )

    attachment_b = Attachment(
        task=task_b,
        filename=f"{MARK}scan.pdf",
        content_type="application/pdf",
        size=9,
        sha256="ab" * 32,
    )
    attachment_b.file.save("scan", ContentFile(b"%PDF-1.4\n"), save=False)
    attachment_b.save()

    inbound_b = InboundMessage.objects.create(
        channel=Channel.API,
        client=client_b,
        sender=client_b.actor_label,
        content_type="application/json",
        payload=f'{{"subject": "{MARK}payload", "patient": {{"name": "{MARK}"}}}}'.encode(),
        status=InboundMessage.Status.FAILED,
        error="patient.birth_date: required",
        error_fields={"patient.birth_date": ["Give the date of birth."]},
    )
    inbound_a = InboundMessage.objects.create(
        channel=Channel.API,
        client=client_a,
        sender=client_a.actor_label,
        content_type="application/json",
        payload=b'{"subject": "A broken payload"}',
        status=InboundMessage.Status.FAILED,
        error_fields={"patient": ["Name the patient."]},
    )

    step = EscalationStepFactory(level=1)
    escalations = {}
    for name, task in (("a", tasks_a[0]), ("b", task_b)):
        escalations[name] = Escalation.objects.create(
            task=task, step=step, level=1, due_at=now, fired_at=now
        )
        Notification.objects.create(
            escalation=escalations[name],
            channel=Notification.Channel.EMAIL,
            target=f"team-{name}@clinic.example",
            body={"task": task.pk},
            next_attempt_at=now,
        )

    from routing import replay as replay_module

    replay_run = replay_module.replay_run_create(
        rule_set=rule_set,
        traffic=replay_module.load_generated(
            n=3, seed=1, day=date(2025, 3, 4), review_queue_id=review_a.pk
        ),
        baseline=replay_module.ACTIVE,
        actor=users[MANAGER],
    )
    world = World(
        dept_a=dept_a,
        dept_b=dept_b,
        queue_a=queue_a,
        queue_b=queue_b,
        review_a=review_a,
        users=users,
        tokens={CLIENT_A: issued_a.token},
        client_b=client_b,
        task_b=task_b,
        tasks_a=tasks_a,
        tasks_b=tasks_b,
        attachment_b=attachment_b,
        inbound_b=inbound_b,
        inbound_a=inbound_a,
        escalation_b=escalations["b"],
        escalation_a=escalations["a"],
        rule_set=rule_set,
        routing_rule=routing_rule,
        classification_rule=classification_rule,
        replay_run=replay_run,
        media_root=media_root,
    )
    world.admin_objects = _admin_objects(world)
    return world


def _admin_objects(world: World) -> dict[str, object]:
    """Department B's row for each admin model that has one; any row for the others (a rule,
    a skill, a log line), created here when the seed has none."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django_otp.plugins.otp_static.models import StaticDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from django_q.models import OrmQ, Schedule
    from django_q.models import Task as QTask

    from accounts.models import StaffProfile
    from accounts.tests.factories import StaffSkillFactory
    from escalation.tests.factories import CalendarClosureFactory
    from routing.models import DedupPolicy, WorkflowRun, WorkflowTemplate

    agent_b = world.users[AGENT_B]
    skill_b = StaffSkillFactory(staff=StaffProfile.objects.get(user=agent_b), level=2)
    DedupPolicy.objects.create(task_type=world.task_b.task_type, window_hours=24)
    totp = TOTPDevice.objects.create(user=agent_b, name="Phone", confirmed=True)
    static = StaticDevice.objects.create(user=agent_b, name="Recovery codes", confirmed=True)
    template = WorkflowTemplate.objects.create(
        name="Matrix follow-up", trigger_type=world.task_b.task_type
    )
    WorkflowRun.objects.create(template=template, trigger_task=world.task_b)
    CalendarClosureFactory(date=date(2025, 12, 25))
    AccessAttempt.objects.create(username="matrix", ip_address="10.0.0.1", failures_since_start=1)
    AccessLog.objects.create(username="matrix", ip_address="10.0.0.1")
    AccessFailureLog.objects.create(username="matrix", ip_address="10.0.0.1", locked_out=False)
    Schedule.objects.create(name="matrix-schedule", func="math.floor")
    QTask.objects.create(
        id="matrix-success",
        name="matrix-success",
        func="math.floor",
        started=timezone.now(),
        stopped=timezone.now(),
        success=True,
    )
    QTask.objects.create(
        id="matrix-failure",
        name="matrix-failure",
        func="math.floor",
        started=timezone.now(),
        stopped=timezone.now(),
        success=False,
    )
    OrmQ.objects.create(key="matrix", payload="", lock=timezone.now())
    return {
        "queues.task": world.task_b,
        "queues.queue": world.queue_b,
        "queues.tasktype": world.task_b.task_type,
        "queues.taskevent": world.task_b.events.first(),
        "queues.inboundmessage": world.inbound_b,
        "queues.integrationclient": world.client_b,
        "accounts.department": world.dept_b,
        "accounts.staffprofile": StaffProfile.objects.get(user=agent_b),
        "accounts.staffskill": skill_b,
        "otp_totp.totpdevice": totp,
        "otp_static.staticdevice": static,
        "auth.user": agent_b,
        "auth.group": world.dept_b.group,
        "escalation.escalation": world.escalation_b,
        "escalation.notification": world.escalation_b.notifications.first(),
        "routing.ruleset": world.rule_set,
        "routing.routingrule": world.routing_rule,
        "routing.classificationrule": world.classification_rule,
        "routing.workflowtemplate": template,
        "django_q.success": QTask.objects.get(id="matrix-success"),
        "django_q.failure": QTask.objects.get(id="matrix-failure"),
    }


def remove_from_department(user, department) -> None:
    """What the staff admin does when someone leaves a team."""
    from accounts.models import StaffProfile

    profile = StaffProfile.objects.get(user=user)
    keep = [d for d in profile.user.groups.filter(department__isnull=False)]
    staff_set_departments(
        profile=profile,
        departments=[g.department for g in keep if g.department.pk != department.pk],
    )


# --- the routes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # the pattern as written, "tasks/<int:task_id>/"
    name: str | None  # "queues:task"; None for unnamed patterns

    @property
    def key(self) -> str:
        return self.name or self.route

    @property
    def is_admin(self) -> bool:
        return self.route.startswith("admin/")


def iter_routes() -> Iterator[Route]:
    def walk(patterns, prefix: str, namespace: str):
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = namespace
                if p.namespace:
                    ns = f"{namespace}:{p.namespace}" if namespace else p.namespace
                yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                name = f"{namespace}:{p.name}" if namespace and p.name else p.name
                yield Route(prefix + str(p.pattern), name)

    yield from walk(get_resolver().url_patterns, "", "")


PARAM_RE = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>|\(\?P<(?P<rname>\w+)>[^)]*\)")


def route_params(route: str) -> list[str]:
    return [m["name"] or m["rname"] for m in PARAM_RE.finditer(route)]


def _admin_model(world: World, route: Route) -> str:
    app_label, model_name = route.route.split("/")[1:3]
    return f"{app_label}.{model_name}"


def _admin_object_pk(world: World, route: Route):
    label = _admin_model(world, route)
    if label in world.admin_objects:
        return world.admin_objects[label].pk
    model = next(
        (m for m in admin.site._registry if m._meta.label_lower == label),
        None,
    )
    row = model._default_manager.order_by("pk").first() if model is not None else None
    if row is None:
        raise LookupError(
            f"{route.route}: no {label} row to open. Add one to `_admin_objects` in "
            "clinicdesk/tests/matrix_support.py (department B's, when the model has a department)."
        )
    return row.pk


def _task_actions() -> list[str]:
    from queues.views.task import ACTIONS

    return list(ACTIONS)


def _dashboard_tables() -> list[str]:
    from clinicdesk.dashboard.views import EXPORTS

    return list(EXPORTS)


# Parameter name → its value(s) for department B, given the world and the route. A list
# expands the route into one request per value.
PARAMS: dict[str, Callable[[World, Route], object]] = {
    "task_id": lambda w, r: w.task_b.pk,
    "queue_id": lambda w, r: w.queue_b.pk,
    "attachment_id": lambda w, r: w.attachment_b.pk,
    "inbound_id": lambda w, r: w.inbound_b.pk,
    "escalation_id": lambda w, r: w.escalation_b.pk,
    "user_id": lambda w, r: w.users[AGENT_B].pk,
    "action": lambda w, r: _task_actions(),
    "table": lambda w, r: _dashboard_tables(),
    "kind": lambda w, r: ["routing", "classification"],
    # The admin: the B row of the model the route belongs to (the audit's `pk` is set with its
    # `model`, in ROUTE_VALUES).
    "object_id": lambda w, r: _admin_object_pk(w, r),
    "pk": lambda w, r: _admin_object_pk(w, r),
    "run_id": lambda w, r: w.replay_run.pk,
    "content_type_id": lambda w, r: ContentType.objects.get_for_model(Task).pk,
    "id": lambda w, r: w.users[AGENT_B].pk,
    "app_label": lambda w, r: ["queues", "escalation"],
    "url": lambda w, r: "queues/nothing-here/",
}

# Routes whose parameters only make sense together.
ROUTE_VALUES: dict[str, Callable[[World], list[dict]]] = {
    "audit:rule": lambda w: [
        {"kind": "routing", "rule_id": w.routing_rule.pk},
        {"kind": "classification", "rule_id": w.classification_rule.pk},
    ],
    "audit:object": lambda w: [
        {"model": "queues.queue", "pk": w.queue_b.pk},
        {"model": "accounts.department", "pk": w.dept_b.pk},
        {"model": "queues.inboundmessage", "pk": w.inbound_b.pk},
        {"model": "auth.user", "pk": w.users[AGENT_B].pk},
    ],
    "admin:view_on_site": lambda w: [
        {
            "content_type_id": ContentType.objects.get_for_model(Task).pk,
            "object_id": w.task_b.pk,
        }
    ],
}


@dataclass(frozen=True)
class Request:
    route: Route
    url: str
    values: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values)
        return f"{self.route.key} [{shown}]" if shown else self.route.key

    def value(self, name: str):
        return dict(self.values).get(name)


def fill(world: World, route: Route) -> list[Request]:
    """Every URL of the route, its parameters naming department B's objects."""
    names = route_params(route.route)
    if route.key in ROUTE_VALUES:
        combos = ROUTE_VALUES[route.key](world)
    else:
        unknown = [n for n in names if n not in PARAMS]
        if unknown:
            raise LookupError(
                f"{route.route} ({route.key}): no value for {', '.join(unknown)}. Map the "
                "parameter to department B's object in PARAMS (clinicdesk/tests/matrix_support.py)."
            )
        choices = []
        for n in names:
            value = PARAMS[n](world, route)
            choices.append(value if isinstance(value, list) else [value])
        combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]
    requests = []
    for values in combos:
        url = PARAM_RE.sub(lambda m, v=values: str(v[m["name"] or m["rname"]]), route.route)
        url = "/" + url.replace("^", "").replace("$", "")
        requests.append(Request(route, url, tuple((n, values[n]) for n in names)))
    return requests


# --- who may do what -----------------------------------------------------------------------

DENY, ALLOW, ANY = "deny", "allow", "any"
SIGNED_IN = (AGENT_A, AGENT_B, SUPERVISOR_A, MANAGER, COMPLIANCE)
WORKERS = (AGENT_A, AGENT_B, SUPERVISOR_A)  # people who work a queue
API_CALLERS = (*SIGNED_IN, CLIENT_A)
# Who may never read anything of department B: not even a refusal may quote it.
OUTSIDERS = (ANON, AGENT_A, SUPERVISOR_A, CLIENT_A)


@dataclass(frozen=True)
class Rule:
    """Per method, the roles that have the right (ALLOW: must get through) and the roles for
    which the answer is not the point (ANY: anything but a server error). Everyone else, for
    every method, must be refused."""

    allow: dict[str, tuple[str, ...]] = field(default_factory=dict)
    any: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def expect(self, role: str, method: str) -> str:
        if role in self.allow.get(method, ()):
            return ALLOW
        if role in self.any.get(method, ()):
            return ANY
        return DENY


def page(roles_: tuple[str, ...]) -> Rule:
    """A page that answers any method (no method check): the roles read it; what other
    methods answer is not checked."""
    return Rule(allow={"GET": roles_}, any={m: roles_ for m in METHODS if m != "GET"})


def get(roles_: tuple[str, ...]) -> Rule:
    return Rule(allow={"GET": roles_})


def post(roles_: tuple[str, ...]) -> Rule:
    return Rule(allow={"POST": roles_})


def public() -> Rule:
    return Rule(any={m: ROLES for m in METHODS})


def own(roles_: tuple[str, ...]) -> Rule:
    """A page about the person themselves: anything but a server error for them."""
    return Rule(any={m: roles_ for m in METHODS})


B_READERS = (AGENT_B, MANAGER, COMPLIANCE)  # who may read department B's task and queue
AUDITORS = (MANAGER, COMPLIANCE)
OVERSEERS = (SUPERVISOR_A, MANAGER, COMPLIANCE)  # dashboard, escalations, failed intake

ACCESS: dict[str, Rule] = {
    "home": page(SIGNED_IN),
    "healthz": public(),
    # --- sign-in
    "accounts:login": public(),
    "accounts:logout": public(),
    "accounts:keepalive": post(SIGNED_IN),
    # The two steps of a sign-in in progress: they read the pending sign-in, nothing else.
    "accounts:signin_code": public(),
    "accounts:signin_setup": public(),
    # A person's own account security: no other department's data can be there.
    "accounts:recovery_codes": own(SIGNED_IN),
    "accounts:security": own(SIGNED_IN),
    "accounts:security_setup": own(SIGNED_IN),
    "accounts:security_new_codes": own(SIGNED_IN),
    "accounts:security_turn_off": own(SIGNED_IN),
    # --- the work pages
    "queues:my_work": page(SIGNED_IN),
    "queues:next_task": post(WORKERS),
    "queues:availability": post(WORKERS),
    "queues:queue_list": page(SIGNED_IN),
    "queues:queue": page(B_READERS),
    "queues:queue_rows": page(B_READERS),
    # Only a supervisor of the queue's own department reassigns: nobody here.
    "queues:queue_reassign": Rule(),
    "queues:task": get(B_READERS),
    "queues:task_timeline": get(B_READERS),
    "queues:task_attachment": get(B_READERS),
    "queues:task_action": post((AGENT_B,)),
    "queues:task_action[action=reassign]": Rule(),  # supervisors of B only
    "queues:holding": page(SIGNED_IN),
    # Breaking the glass is asked for on this page (a form): agents and supervisors only.
    "queues:emergency_access": Rule(allow={"GET": WORKERS, "POST": WORKERS}),
    "queues:intake_new": Rule(allow={"GET": WORKERS, "POST": WORKERS}),
    "queues:intake_fields": post(WORKERS),
    "queues:intake_failed": page(OVERSEERS),
    # B's client's message: a supervisor of A does not see it; compliance only reads.
    "queues:intake_failed_detail": page(AUDITORS),
    "queues:intake_failed_correct": post((MANAGER,)),
    "queues:intake_failed_retry": post((MANAGER,)),
    "escalation:list": get(OVERSEERS),
    "escalation:acknowledge": post((MANAGER,)),
    # --- audit and dashboard
    "audit:search": get(AUDITORS),
    "audit:export": get(AUDITORS),
    "audit:task": get(AUDITORS),
    "audit:person": get(AUDITORS),
    "audit:rule": get(AUDITORS),
    "audit:object": get(AUDITORS),
    "audit:emergency": get(AUDITORS),
    "dashboard:index": get(OVERSEERS),
    "dashboard:rules": get(OVERSEERS),
    "dashboard:export": get(OVERSEERS),
    # --- the API
    "inbound:fhir": Rule(),  # unsigned: refused, whoever asks
    "inbound:email": Rule(),
    "api:intake": post((CLIENT_A,)),
    "api:task-list": get(API_CALLERS),
    "api:task-next": post(WORKERS),
    "api:task-detail": get(B_READERS),
    "api:queue-list": get(API_CALLERS),
    "api/v1/": Rule(),  # the API's own 404 for any other path
    "api_docs:schema": get(ROLES),
    "api_docs:swagger": get(ROLES),
    "api_docs:redoc": get(ROLES),
}
# The API's task actions: the owner's agent acts (whether the state allows it is a 409, not a
# refusal); a client neither claims nor starts, and never sees B's task anyway.
for _action in ("claim", "start", "resume", "hold", "resolve", "reopen", "release", "reroute"):
    ACCESS[f"api:task-{_action}"] = post((AGENT_B,))
ACCESS["api:task-comment"] = post((AGENT_B,))


# --- the admin: who may, by the role permissions of clinicdesk.roles -------------------------

ADMIN_STAFF = (MANAGER,)
ADMIN_SITE_VIEWS = {
    "admin:index",
    "admin:password_change",
    "admin:password_change_done",
    "admin:autocomplete",
    "admin:jsi18n",
    "admin:view_on_site",
    "admin:app_list",
}
# Per admin view: the model permissions that open it for reading (GET and the methods the
# admin treats like it) and for POST.
READ = ("view", "change")
ADMIN_MODEL_VIEWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "changelist": (READ, READ),
    "history": (READ, READ),
    "auditlog": (READ, READ),
    "redirect": (READ, READ),
    "add": (("add",), ("add",)),
    "change": (READ, ("change",)),
    "delete": (("delete",), ("delete",)),
    "password_change": (("change",), ("change",)),
    # django-otp's authenticator pages (the QR code of a person's second factor).
    "config": (READ, READ),
    "qrcode": (READ, READ),
}
# routing's own rule-set pages (routing/admin.py): the permission each asks for.
ADMIN_RULESET_VIEWS = {
    "try_active": ("routing.view_ruleset",),
    "try": ("routing.view_ruleset",),
    "replay": ("routing.change_ruleset",),
    "replay_report": ("routing.change_ruleset", "routing.publish_ruleset"),
    "publish": ("routing.publish_ruleset",),
    "rollback": ("routing.publish_ruleset",),
}


def role_permissions(role: str) -> set[str]:
    group = ROLE_GROUPS.get(role)
    return set(roles.ROLE_PERMISSIONS.get(group, ())) if group else set()


def admin_view_kind(route: Route) -> tuple[str, str]:
    """(model label, view) of an admin route of a model; ("", name) for the site's own."""
    if route.name in ADMIN_SITE_VIEWS:
        return "", route.name
    if route.route == "admin/(?P<url>.*)$":
        return "", "catch_all"
    if route.name in ("admin:login", "admin:logout"):
        return "", route.name
    app_label, model_name = route.route.split("/")[1:3]
    label = f"{app_label}.{model_name}"
    if route.name is None:
        return label, "redirect"
    prefix = f"admin:{app_label}_{model_name}_"
    if not route.name.startswith(prefix):
        raise LookupError(f"{route.route}: an admin route of no model ({route.name}).")
    return label, route.name.removeprefix(prefix)


def admin_rule(route: Route) -> Rule:
    label, view = admin_view_kind(route)
    if view in ("admin:login", "admin:logout"):
        return public()
    if not label or view == "redirect":
        # The site's own pages; and `<object_id>/`, a bare redirect to the change page, which
        # then asks for the permission.
        return Rule(any={m: ADMIN_STAFF for m in METHODS})
    if label == "routing.ruleset" and view in ADMIN_RULESET_VIEWS:
        needed = ADMIN_RULESET_VIEWS[view]
        holders = tuple(r for r in ADMIN_STAFF if role_permissions(r) & set(needed))
        return Rule(any={m: holders for m in METHODS})
    if view not in ADMIN_MODEL_VIEWS:
        raise LookupError(
            f"{route.route} ({route.name}): an admin view the matrix does not know. Say which "
            "permissions open it in ADMIN_MODEL_VIEWS or ADMIN_RULESET_VIEWS "
            "(clinicdesk/tests/matrix_support.py)."
        )
    read, write = ADMIN_MODEL_VIEWS[view]
    app_label, model_name = label.split(".")

    def holders(actions: tuple[str, ...]) -> tuple[str, ...]:
        wanted = {f"{app_label}.{a}_{model_name}" for a in actions}
        return tuple(r for r in ADMIN_STAFF if role_permissions(r) & wanted)

    # Within what the role may, the admin may refuse more (read-only records): not checked.
    return Rule(any={m: holders(write if m == "POST" else read) for m in METHODS})


def rule_for(request: Request) -> Rule:
    route = request.route
    if route.is_admin:
        return admin_rule(route)
    for name, value in request.values:
        specific = f"{route.key}[{name}={value}]"
        if specific in ACCESS:
            return ACCESS[specific]
    if route.key not in ACCESS:
        raise LookupError(
            f"{route.route} ({route.key}): not in the access table. Say who may use it in "
            "ACCESS (clinicdesk/tests/matrix_support.py)."
        )
    return ACCESS[route.key]


def worth_asking(request: Request, method: str, expected: str) -> bool:
    """Whether to spend a request on this cell. The admin serves PUT, PATCH and DELETE as it
    serves GET (a page to read, or a deletion to confirm): for a role it lets in, those are
    hundreds of full page renders that say nothing GET does not. Every refusal is asked."""
    admin_as_get = request.route.is_admin and method in ("PUT", "PATCH", "DELETE")
    return expected == DENY or not admin_as_get


LOGIN_PATHS = ("/accounts/login/", "/admin/login/")


def refused(response) -> bool:
    """401, 403, 404, 405, or a redirect to a sign-in page."""
    if response.status_code in (401, 403, 404, 405):
        return True
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.get("Location", "")
        return any(location.split("?")[0].endswith(p) for p in LOGIN_PATHS)
    return False
