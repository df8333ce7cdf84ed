from datetime import datetime
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from guardian.models import GroupObjectPermission

from accounts.models import Department, Site, Skill, StaffProfile, StaffSkill
from accounts.tests.factories import UserFactory
from clinicdesk.demo import (
    CLASSIFICATION_RULES,
    DEMO_EMAIL_DOMAIN,
    DEPARTMENTS,
    LOGINS,
    QUEUES,
    ROUTING_RULES,
    RULE_SET,
    SLA_POLICIES,
    STAFF,
    TASK_TYPES,
)
from escalation import services as escalation_services
from queues.models import Queue, Task, TaskType
from routing import selectors
from routing.models import ClassificationRule, RoutingRule, RuleSet

pytestmark = pytest.mark.django_db
User = get_user_model()
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run_demo(*args) -> str:
    out = StringIO()
    call_command("demo", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot() -> dict[str, int]:
    models = [
        Site,
        Department,
        Group,
        Queue,
        Skill,
        TaskType,
        User,
        StaffProfile,
        StaffSkill,
        GroupObjectPermission,
        LogEntry,
        RuleSet,
        ClassificationRule,
        RoutingRule,
        Task,
    ]
    counts = {model.__name__: model.objects.count() for model in models}
    counts["memberships"] = User.groups.through.objects.count()
    counts["routing rule types"] = RoutingRule.task_types.through.objects.count()
    counts["rule set revision"] = sum(RuleSet.objects.values_list("revision", flat=True))
    return counts


def test_demo_builds_the_clinic():
    output = run_demo()

    assert Site.objects.get(code="riverside").name == "Riverside Family Practice"
    assert Department.objects.filter(code__in=[d["code"] for d in DEPARTMENTS]).count() == 7
    assert Queue.objects.filter(code__in=[q["code"] for q in QUEUES]).count() == len(QUEUES)
    assert TaskType.objects.filter(code__in=[t["code"] for t in TASK_TYPES]).count() == len(
        TASK_TYPES
    )
    assert StaffProfile.objects.count() == len(STAFF)
    assert Queue.objects.get(code="needs-review").kind == Queue.Kind.REVIEW
    assert Queue.objects.get(code="scheduling").assignment_policy == Queue.Policy.PUSH_ROUND_ROBIN
    assert TaskType.objects.get(code="clinical_triage").capacity_weight == 2
    assert "Demo clinic ready" in output
    for username in LOGINS:
        assert username in output


def test_running_demo_twice_changes_nothing():
    run_demo()
    before = snapshot()

    output = run_demo()

    assert snapshot() == before  # no duplicates, and no audit entries: nothing was written
    assert "Created" not in output
    assert "Updated" not in output


def test_demo_logins_authenticate_with_the_demo_password(settings):
    run_demo()
    for username in LOGINS:
        assert (
            authenticate(
                RequestFactory().post("/accounts/login/"),
                username=username,
                password=settings.DEMO_PASSWORD,
            )
            is not None
        )


def test_demo_leaves_a_non_demo_user_of_the_same_name_alone(settings):
    someone = UserFactory(username="billing1", email="billing1@hospital.example")
    password_hash = someone.password

    run_demo()

    someone.refresh_from_db()
    assert someone.password == password_hash
    assert not someone.groups.exists()
    assert (
        authenticate(
            RequestFactory().post("/accounts/login/"),
            username="billing1",
            password=settings.DEMO_PASSWORD,
        )
        is None
    )


def test_frontdesk_agent_sees_front_desk_queues_but_not_triage():
    run_demo()
    frontdesk1 = User.objects.get(username="frontdesk1")

    visible = set(Queue.objects.visible_to(frontdesk1).values_list("code", flat=True))

    assert {"front-desk", "needs-review", "holding"} <= visible
    assert "triage" not in visible
    assert "billing" not in visible


def test_supervisor_sees_the_queues_of_their_three_departments():
    run_demo()
    supervisor1 = User.objects.get(username="supervisor1")

    visible = set(Queue.objects.visible_to(supervisor1).values_list("code", flat=True))

    assert {"front-desk", "billing", "scheduling"} <= visible
    assert "triage" not in visible
    assert supervisor1.groups.filter(name="Supervisor").exists()


def test_manager_sees_every_queue_and_may_use_the_admin_without_being_superuser():
    run_demo()
    manager1 = User.objects.get(username="manager1")

    assert Queue.objects.visible_to(manager1).count() == Queue.objects.count()
    assert manager1.is_staff
    assert not manager1.is_superuser


def test_compliance_sees_every_queue():
    run_demo()
    compliance1 = User.objects.get(username="compliance1")

    assert Queue.objects.visible_to(compliance1).count() == Queue.objects.count()
    assert not compliance1.is_staff


def test_demo_staff_include_people_who_are_not_available():
    run_demo()

    assert StaffProfile.objects.filter(availability="away").exists()
    assert StaffProfile.objects.filter(
        availability="offline", user__groups__department__isnull=False
    ).exists()
    on_call = StaffProfile.objects.get(user__username="nurse3")
    assert on_call.shift_start.hour == 16 and on_call.shift_end.hour == 8


def test_negative_tasks_are_refused_before_anything_is_built():
    with pytest.raises(CommandError, match="0 or more"):
        run_demo("--tasks", "-1")
    assert not Site.objects.filter(code="riverside").exists()


def test_tasks_option_routes_a_generated_morning():
    output = run_demo("--tasks", "12", "--date", "2025-03-11")

    tasks = Task.objects.all()
    assert tasks.count() == 12
    assert not tasks.filter(queue__isnull=True).exists()
    assert set(tasks.values_list("rule_set_version", flat=True)) == {RULE_SET["version"]}
    assert "loaded: 12 new tasks" in output
    assert "Routed to the expected queue" in output


def test_demo_creates_the_active_rule_set():
    output = run_demo()

    rule_set = RuleSet.objects.get(version=RULE_SET["version"])
    assert rule_set.status == RuleSet.Status.ACTIVE
    assert rule_set.name == "Riverside rules"
    assert rule_set.review_queue.code == "needs-review"
    assert rule_set.red_flag_queue.code == "triage"
    assert rule_set.red_flag_task_type.code == "clinical_triage"
    assert {"chest pain", "shortness of breath", "suicidal"} <= set(rule_set.red_flag_phrase_list)
    assert rule_set.classification_rules.count() == len(CLASSIFICATION_RULES)
    assert rule_set.routing_rules.count() == len(ROUTING_RULES)
    assert selectors.routing_snapshot().compiled.problems == ()
    assert "routing rules" in output


def test_demo_restores_its_rules_and_leaves_a_managers_rules_alone():
    run_demo()
    rule_set = RuleSet.objects.get(version=RULE_SET["version"])
    revision = rule_set.revision
    ClassificationRule.objects.filter(rule_set=rule_set, name="Claim denial").update(
        phrases="denied"
    )
    ClassificationRule.objects.create(
        rule_set=rule_set, name="Parking", phrases="parking", add_tags=["parking"]
    )

    run_demo()

    rule_set.refresh_from_db()
    restored = rule_set.classification_rules.get(name="Claim denial")
    assert "claim denied" in restored.phrase_list
    assert rule_set.classification_rules.filter(name="Parking").exists()
    assert rule_set.revision > revision  # routing caches see the change


def test_demo_does_not_take_over_when_another_rule_set_is_active():
    run_demo()
    demo_set = RuleSet.objects.get(version=RULE_SET["version"])
    RuleSet.objects.filter(pk=demo_set.pk).update(status=RuleSet.Status.RETIRED)
    other = RuleSet.objects.create(
        name="Manager's rules",
        version=7,
        status=RuleSet.Status.ACTIVE,
        review_queue=demo_set.review_queue,
        red_flag_queue=demo_set.red_flag_queue,
        red_flag_task_type=demo_set.red_flag_task_type,
    )

    run_demo()

    demo_set.refresh_from_db()
    other.refresh_from_db()
    assert demo_set.status == RuleSet.Status.RETIRED
    assert other.status == RuleSet.Status.ACTIVE


def test_tasks_zero_builds_the_clinic():
    run_demo("--tasks", "0")

    assert Site.objects.filter(code="riverside").exists()


def submit_at(received: datetime, **fields) -> Task:
    """A request through intake and routing, as if it arrived at `received`."""
    from routing.services import task_submit

    return task_submit(actor="client:test", now=received, received_at=received, **fields)


def test_demo_sla_policies_escalate_a_prior_authorization_nobody_claimed():
    """The demo's SLA policies are live: a prior-authorization update received at 9:00 on a
    Tuesday and still unclaimed at 11:30 is at risk, and its authorization lead is told."""
    from escalation.models import Escalation, Notification, SlaPolicy

    run_demo()
    assert SlaPolicy.objects.filter(is_active=True).count() == len(SLA_POLICIES)
    received = datetime(2026, 11, 17, 9, 0, tzinfo=NEW_YORK)
    task = submit_at(
        received,
        channel="fax",
        subject="Prior auth update REF-1234",
        body="Payer needs more information for the MRI.",
        patient_mrn="MRN-77",
        patient_name="Test Patient",
        request_type="prior_auth_update",
    )
    assert task.task_type.code == "prior_auth_update"

    later = datetime(2026, 11, 17, 11, 30, tzinfo=NEW_YORK)
    while escalation_services.sweep_batch(now=later).worked:
        pass

    task.refresh_from_db()
    policy = SlaPolicy.objects.get(name__startswith="Prior authorization")
    assert task.claim_due_at == datetime(2026, 11, 17, 11, 0, tzinfo=NEW_YORK)
    fired = Escalation.objects.filter(task=task).order_by("level")
    assert [(e.step.policy_id, e.level) for e in fired] == [(policy.pk, 1), (policy.pk, 2)]
    (notice,) = Notification.objects.filter(escalation__task=task)
    assert notice.target == f"auth-lead@{DEMO_EMAIL_DOMAIN}"
    assert "MRN-77" not in str(notice.body) and "Test Patient" not in str(notice.body)


def test_demo_sla_policies_count_business_hours_over_a_weekend():
    """Received Friday at 16:00, a prior authorization is due to be claimed Monday at 9:00
    (one clinic hour on Friday, one on Monday)."""
    run_demo()
    received = datetime(2026, 11, 20, 16, 0, tzinfo=NEW_YORK)
    task = submit_at(
        received,
        channel="portal",
        subject="Prior authorization request",
        body="Please start a prior authorization.",
        request_type="prior_auth_request",
    )
    escalation_services.sweep_batch(now=received)
    task.refresh_from_db()
    assert task.claim_due_at == datetime(2026, 11, 23, 9, 0, tzinfo=NEW_YORK)
