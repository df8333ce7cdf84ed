from datetime import UTC, datetime

import pytest
from auditlog.models import LogEntry
from django.db import connection

from accounts.models import StaffProfile
from accounts.tests.factories import (
    DepartmentFactory,
    SiteFactory,
    SkillFactory,
    StaffProfileFactory,
    StaffSkillFactory,
    UserFactory,
)
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing import preview, selectors
from routing.models import ClassificationRule, RoutingRule, RuleSet
from routing.tests.factories import (
    ClassificationRuleFactory,
    RoutingRuleFactory,
    RuleSetFactory,
)

pytestmark = pytest.mark.django_db


def build_clinic() -> dict:
    """Billing and records with an active rule set; Ana is free, Carla away, Dan lacks the
    appeals skill. Reused by the admin and command tests."""
    site = SiteFactory(name="Northgate", code="northgate")
    billing = DepartmentFactory(name="Billing", code="billing", site=site)
    records = DepartmentFactory(name="Medical records", code="records", site=site)
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    appeals_queue = QueueFactory(department=billing, name="Appeals", code="appeals")
    records_queue = QueueFactory(
        department=records, name="Records", code="records", assignment_policy="pull_only"
    )
    rules = RuleSetFactory(name="Clinic rules")
    denial = TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=billing_queue)
    records_request = TaskTypeFactory(
        code="records_request", name="Records request", default_queue=records_queue
    )
    denied = ClassificationRuleFactory(
        rule_set=rules, name="Denied claims", phrases="claim denied\ndenial", set_task_type=denial
    )
    ClassificationRuleFactory(
        rule_set=rules,
        name="Records",
        phrases="medical records\nrecords request",
        set_task_type=records_request,
    )
    appeal_tag = ClassificationRuleFactory(
        rule_set=rules, name="Appeal tag", phrases="appeal", add_tags=["appeal"]
    )
    appeals = SkillFactory(code="payer-appeals", name="Payer appeals")
    to_appeals = RoutingRuleFactory(
        rule_set=rules,
        name="Appeals need the skill",
        task_types=[denial],
        target_queue=appeals_queue,
        required_skill=appeals,
        min_skill_level=3,
        tags_any=["appeal"],
    )

    def person(username, department, **kwargs):
        return StaffProfileFactory(
            user=UserFactory(username=username, first_name=username.title(), last_name="Agent"),
            departments=[department],
            **kwargs,
        )

    ana = person("ana", billing)
    carla = person("carla", billing, availability=StaffProfile.Availability.AWAY)
    dan = person("dan", billing)
    StaffSkillFactory(staff=dan, skill=appeals, level=1)
    return {
        "site": site,
        "billing": billing,
        "records": records,
        "billing_queue": billing_queue,
        "appeals_queue": appeals_queue,
        "records_queue": records_queue,
        "rules": rules,
        "denial": denial,
        "records_request": records_request,
        "denied_rule": denied,
        "appeal_tag_rule": appeal_tag,
        "appeals_rule": to_appeals,
        "appeals": appeals,
        "ana": ana,
        "carla": carla,
        "dan": dan,
    }


@pytest.fixture
def clinic():
    return build_clinic()


def row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Task, TaskEvent, RuleSet, ClassificationRule, RoutingRule, LogEntry)
    }


def test_a_denied_claim_would_go_to_billing_and_to_the_free_agent(clinic):
    decision = preview.preview(
        rule_set_id=None, channel="portal", subject="Claim denied for March", body=""
    )
    summary = preview.decision_summary(decision)
    assert summary["task_type"] == "claim_denial"
    assert summary["priority"] == 3
    assert summary["queue"] == "Billing"
    assert summary["rule_set_version"] == clinic["rules"].version
    assert summary["rules"] == [
        {"kind": "classification", "id": clinic["denied_rule"].pk, "name": "Denied claims"}
    ]
    assert summary["needs_review"] is False
    assert summary["assignee"] == "Ana Agent"
    reasons = {c["name"]: c["reason"] for c in summary["explanation"]["assignment"]["candidates"]}
    assert reasons["Carla Agent"] == "away"


def test_an_appeal_is_routed_by_rule_and_nobody_qualified_is_free(clinic):
    decision = preview.preview(
        rule_set_id=clinic["rules"].pk,
        channel="email",
        subject="Claim denied",
        body="We want to appeal this decision.",
    )
    summary = preview.decision_summary(decision)
    assert summary["queue"] == "Appeals"
    assert summary["tags"] == ["appeal"]
    assert {rule["name"] for rule in summary["rules"]} == {
        "Denied claims",
        "Appeal tag",
        "Appeals need the skill",
    }
    assert summary["assignee"] is None
    reasons = {c["name"]: c["reason"] for c in summary["explanation"]["assignment"]["candidates"]}
    assert reasons == {
        "Ana Agent": "lacks_skill",
        "Carla Agent": "away",
        "Dan Agent": "lacks_skill",
    }


def test_unclassified_message_needs_review(clinic):
    summary = preview.decision_summary(
        preview.preview(rule_set_id=None, channel="api", subject="Parking question", body="")
    )
    assert summary["needs_review"] is True
    assert summary["queue"] == clinic["rules"].review_queue.name
    assert summary["rules"] == []


def test_red_flag_wins(clinic):
    summary = preview.decision_summary(
        preview.preview(
            rule_set_id=None, channel="portal", subject="Claim denied", body="I have chest pain"
        )
    )
    assert summary["priority"] == 1
    assert summary["queue"] == clinic["rules"].red_flag_queue.name
    assert summary["explanation"]["red_flag"] == {"phrase": "chest pain"}


def test_a_draft_is_tried_by_id_and_shadow_rules_report_what_they_would_do(clinic):
    draft = RuleSetFactory(
        status=RuleSet.Status.DRAFT,
        review_queue=clinic["rules"].review_queue,
        red_flag_queue=clinic["rules"].red_flag_queue,
        red_flag_task_type=clinic["rules"].red_flag_task_type,
    )
    ClassificationRuleFactory(
        rule_set=draft, name="Denials", phrases="denied", set_task_type=clinic["denial"]
    )
    ClassificationRuleFactory(
        rule_set=draft, name="Maybe urgent", phrases="denied", set_priority=2, mode="shadow"
    )
    summary = preview.decision_summary(
        preview.preview(rule_set_id=draft.pk, channel="portal", subject="Claim denied", body="")
    )
    assert summary["rule_set_version"] == draft.version
    assert summary["priority"] == 3  # the shadow rule never applies
    assert [rule["name"] for rule in summary["rules"]] == ["Denials"]
    [shadow] = summary["explanation"]["shadow"]
    assert shadow["name"] == "Maybe urgent"
    assert shadow["would"] == {"set_priority": 2}


def test_site_and_time_reach_the_time_of_day_rules(clinic):
    RoutingRuleFactory(
        rule_set=clinic["rules"],
        name="After hours",
        order=1,
        business_hours="closed",
        target_queue=clinic["records_queue"],
    )
    sunday_night = datetime(2025, 3, 2, 23, 0, tzinfo=UTC)
    site = clinic["site"]
    site.open_weekdays = [0, 1, 2, 3, 4]
    site.save()
    summary = preview.decision_summary(
        preview.preview(
            rule_set_id=None,
            channel="portal",
            subject="Claim denied",
            body="",
            site_id=site.pk,
            now=sunday_night,
        )
    )
    assert summary["queue"] == "Records"
    assert [rule["name"] for rule in summary["rules"]][-1] == "After hours"


def test_preview_writes_nothing_and_leaves_the_transaction_writable(clinic):
    before = row_counts()
    for subject in ("Claim denied", "medical records please", "hello", "chest pain"):
        preview.preview(
            rule_set_id=None, channel="portal", subject=subject, body="", patient_mrn="MRN-1"
        )
    assert row_counts() == before
    with connection.cursor() as cursor:
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone()[0] == "off"
    TaskFactory()  # the caller's transaction can still write


def test_without_an_active_rule_set_it_says_so(clinic):
    RuleSet.objects.filter(pk=clinic["rules"].pk).update(status=RuleSet.Status.RETIRED)
    with pytest.raises(selectors.NoActiveRuleSet, match="No rule set is active"):
        preview.preview(rule_set_id=None, channel="portal", subject="Claim denied", body="")


def test_the_same_message_always_falls_in_the_same_rollout_bucket():
    assert preview.preview_key("portal", "a", "b") == preview.preview_key("portal", "a", "b")
    assert preview.preview_key("portal", "a", "b") != preview.preview_key("email", "a", "b")


def test_a_write_slipped_into_the_preview_is_refused_by_the_database(clinic, monkeypatch):
    from django.db import InternalError

    real_candidates = selectors.candidates

    def candidates_that_write(**kwargs):
        TaskFactory()
        return real_candidates(**kwargs)

    monkeypatch.setattr(selectors, "candidates", candidates_that_write)
    with pytest.raises(InternalError, match="read-only transaction"):
        preview.preview(rule_set_id=None, channel="portal", subject="Claim denied", body="")
    assert not Task.objects.exists()
