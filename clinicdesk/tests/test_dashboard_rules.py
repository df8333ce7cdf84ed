"""Rule health: the tasks each rule decided, the corrections people made, and the sentence."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clinicdesk.dashboard import rule_health
from clinicdesk.tests import test_dashboard_support as support
from clinicdesk.tests.test_dashboard_support import NOW, event
from queues.models import Queue
from queues.tests.factories import QueueFactory
from routing.tests.factories import ClassificationRuleFactory, RoutingRuleFactory

pytestmark = pytest.mark.django_db
clinic = support.clinic
HOUR = timedelta(hours=1)


@pytest.fixture
def labs(clinic):
    """'Lab results' routed ten tasks to Claims; people moved four to Records release (three
    of them record requests from patients all named Smith), reassigned one within the queue,
    and the escalation sweep moved one (not a person's correction)."""
    rule = RoutingRuleFactory(name="Lab results", target_queue=clinic.claims)
    created = NOW - timedelta(days=3)
    moved_subjects = [
        "Smith records request for the new dentist",
        "Smith asks: records request",
        "Records request - Smith family",
        "Smith lab result question",
    ]
    other_subjects = [
        "Lab result ready",
        "Lab results call back",
        "Potassium lab result",
        "Lab result abnormal",
        "Records of lab visit",
        "Lab result fax",
    ]
    tasks = [
        clinic.task(
            created=created,
            subject=subject,
            patient_name=f"{first} Smith",
            routed_by_rule_id=rule.pk,
        )
        for subject, first in zip(moved_subjects, ("Ann", "Bob", "Cy", "Di"), strict=True)
    ] + [
        clinic.task(
            created=created, subject=subject, patient_name="Eve Jones", routed_by_rule_id=rule.pk
        )
        for subject in other_subjects
    ]
    for task in tasks[:4]:
        event(
            task,
            "rerouted",
            created + HOUR,
            actor=clinic.supervisor,
            actor_label="sam",
            from_queue=clinic.claims,
            to_queue=clinic.release,
            rule_id=rule.pk,
        )
        # A later correction of the same task does not count twice.
        event(
            task,
            "rerouted",
            created + 2 * HOUR,
            actor=clinic.supervisor,
            actor_label="sam",
            from_queue=clinic.release,
            to_queue=clinic.statements,
            rule_id=rule.pk,
        )
    event(
        tasks[4],
        "reassigned",
        created + HOUR,
        actor=clinic.supervisor,
        actor_label="sam",
        from_user=clinic.agent,
        to_user=clinic.supervisor,
        rule_id=rule.pk,
    )
    escalation = QueueFactory(department=clinic.billing, name="Escalations", kind="escalation")
    event(
        tasks[5],
        "rerouted",
        created + HOUR,
        actor_label="system:escalation_sweep",
        from_queue=clinic.claims,
        to_queue=escalation,
        rule_id=rule.pk,
    )
    return rule


def test_routing_rule_counts_people_corrections_and_where_tasks_went(clinic, labs):
    scope = clinic.scope(clinic.claims, clinic.statements, clinic.release)

    (health,) = [r for r in rule_health.rule_health(scope) if r.kind == "routing"]

    assert (health.name, health.decided, health.corrected) == ("Lab results", 10, 5)
    assert health.rate == 0.5 and health.flagged
    assert health.destinations == [
        ("Records release", 4),
        ("another person in the same queue", 1),
    ]


def test_flagged_rule_says_its_most_common_correction_without_patient_names(clinic, labs):
    scope = clinic.scope(clinic.claims, clinic.statements, clinic.release)

    (health,) = [r for r in rule_health.rule_health(scope) if r.kind == "routing"]

    # "smith" is in all four moved subjects, but it is the patients' name: never offered.
    assert health.sentence == (
        "4 of 10 tasks routed by 'Lab results' were moved to Records release: "
        "3 mention 'records request'"
    )
    assert "smith" not in health.sentence.lower()


def test_classification_rule_counts_corrections_from_needs_review(clinic):
    review = QueueFactory(
        department=clinic.billing,
        name="Needs review",
        kind=Queue.Kind.REVIEW,
        assignment_policy="pull_only",
    )
    unsure = ClassificationRuleFactory(name="Maybe a statement")
    sure = ClassificationRuleFactory(rule_set=unsure.rule_set, name="Claim denial words")
    created = NOW - timedelta(days=2)
    reviewed = [clinic.task(review, created=created) for _ in range(2)]
    confident = [clinic.task(created=created) for _ in range(3)]
    for task in reviewed:
        event(
            task,
            "routed",
            created,
            to_queue=review,
            explanation={"classification_rule_ids": [unsure.pk]},
        )
    for task in confident:
        event(
            task,
            "routed",
            created,
            to_queue=clinic.claims,
            explanation={"classification_rule_ids": [sure.pk, unsure.pk]},
        )
    # A person classified one of the Needs-review tasks: it went to Statements.
    event(
        reviewed[0],
        "reclassified",
        created + HOUR,
        actor=clinic.agent,
        actor_label="alice",
        from_queue=review,
        to_queue=clinic.statements,
        explanation={"correction": {"corrected_rule_ids": [unsure.pk]}},
    )

    scope = clinic.scope(clinic.claims, clinic.statements, review)
    by_name = {r.name: r for r in rule_health.rule_health(scope)}

    assert (by_name["Maybe a statement"].decided, by_name["Maybe a statement"].corrected) == (5, 1)
    assert by_name["Maybe a statement"].flagged  # 20%
    assert by_name["Maybe a statement"].sentence == (
        "1 of 5 tasks classified by 'Maybe a statement' was moved to Statements"
    )
    assert (by_name["Claim denial words"].decided, by_name["Claim denial words"].corrected) == (
        3,
        0,
    )
    assert not by_name["Claim denial words"].flagged
    assert by_name["Claim denial words"].sentence == ""


def test_rules_of_tasks_outside_the_scope_are_not_counted(clinic, labs):
    # Records release only: none of the ten tasks is there now.
    assert rule_health.rule_health(clinic.scope(clinic.release)) == []


def test_correction_sentence_for_reassignments():
    rule = rule_health.RuleHealth(
        kind="routing",
        rule_id=1,
        name="Billing",
        rule_set_version=3,
        decided=1,
        corrected=1,
        destinations=[("another person in the same queue", 1)],
    )
    assert rule_health.correction_sentence(rule, None) == (
        "1 of 1 task routed by 'Billing' was reassigned to another person in the same queue"
    )
