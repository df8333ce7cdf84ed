import threading
from datetime import time

import pytest
from django.db import connection

from accounts.models import StaffProfile
from accounts.tests.factories import (
    DepartmentFactory,
    SkillFactory,
    StaffProfileFactory,
    StaffSkillFactory,
    UserFactory,
)
from queues.models import Queue, Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing import services
from routing.tests.factories import (
    ClassificationRuleFactory,
    RoutingRuleFactory,
    RuleSetFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    billing = DepartmentFactory(name="Billing", code="billing")
    records = DepartmentFactory(name="Medical records", code="records")
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    appeals_queue = QueueFactory(department=billing, name="Appeals", code="appeals")
    records_queue = QueueFactory(
        department=records, name="Records", code="records", assignment_policy="pull_only"
    )
    rules = RuleSetFactory()
    denial = TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=billing_queue)
    records_request = TaskTypeFactory(
        code="records_request", name="Records request", default_queue=records_queue
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Denied claims", phrases="claim denied\ndenial", set_task_type=denial
    )
    ClassificationRuleFactory(
        rule_set=rules,
        name="Records",
        phrases="medical records\nrecords request",
        set_task_type=records_request,
    )
    appeals = SkillFactory(code="payer-appeals", name="Payer appeals")
    RoutingRuleFactory(
        rule_set=rules,
        name="Appeals need the skill",
        task_types=[denial],
        target_queue=appeals_queue,
        required_skill=appeals,
        min_skill_level=3,
        tags_any=["appeal"],
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Appeal tag", phrases="appeal", add_tags=["appeal"]
    )
    return {
        "billing": billing,
        "records": records,
        "billing_queue": billing_queue,
        "appeals_queue": appeals_queue,
        "records_queue": records_queue,
        "rules": rules,
        "appeals": appeals,
    }


def agent(department, username, **kwargs):
    return StaffProfileFactory(
        user=UserFactory(username=username, first_name=username.title(), last_name="Agent"),
        departments=[department],
        **kwargs,
    )


def submit(subject, body="", **kwargs):
    return services.task_submit(
        actor="client:test",
        channel=kwargs.pop("channel", "portal"),
        subject=subject,
        body=body,
        **kwargs,
    )


def test_a_denied_claim_lands_with_the_least_loaded_billing_agent(clinic):
    ana = agent(clinic["billing"], "ana", capacity=5)
    ben = agent(clinic["billing"], "ben", capacity=5)
    StaffProfile.objects.filter(pk=ana.pk).update(active_load=2)
    task = submit("Claim denied for March visit")
    assert task.task_type.code == "claim_denial"
    assert task.queue == clinic["billing_queue"]
    assert task.status == Task.Status.ASSIGNED
    assert task.assignee == ben.user
    ben.refresh_from_db()
    assert ben.active_load == 1
    routed = task.events.get(kind=TaskEvent.Kind.ROUTED)
    assert routed.rule_set_version == clinic["rules"].version
    assert "Denied claims" in str(routed.explanation)
    assigned = task.events.get(kind=TaskEvent.Kind.ASSIGNED)
    names = str(assigned.explanation)
    assert "Ana" in names and "Ben" in names


def test_away_and_unskilled_people_are_passed_over_and_the_task_waits(clinic):
    agent(clinic["billing"], "carla", availability=StaffProfile.Availability.AWAY)
    dan = agent(clinic["billing"], "dan")
    StaffSkillFactory(staff=dan, skill=clinic["appeals"], level=1)
    task = submit("Claim denied, we want to appeal")
    assert task.queue == clinic["appeals_queue"]
    assert task.status == Task.Status.QUEUED
    assert task.waiting_for_capacity
    waiting = task.events.get(kind=TaskEvent.Kind.WAITING_FOR_CAPACITY)
    text = str(waiting.explanation)
    assert "away" in text and "lacks_skill" in text


def test_nothing_matched_goes_to_needs_review(clinic):
    task = submit("Hello, a question about parking")
    assert task.queue == clinic["rules"].review_queue
    assert task.queue.kind == Queue.Kind.REVIEW
    assert task.task_type is None


def test_red_flag_goes_to_triage_as_p1_whatever_else_matches(clinic):
    task = submit("Billing question", "my claim denied and I have chest pain since this morning")
    assert task.priority == 1
    assert task.queue == clinic["rules"].red_flag_queue
    assert "red-flag" in task.tags


def test_pull_only_queue_waits_for_next_task(clinic):
    agent(clinic["records"], "eve")
    task = submit("Please send my medical records to my new doctor")
    assert task.queue == clinic["records_queue"]
    assert task.status == Task.Status.QUEUED
    assert task.assignee is None


def test_off_shift_person_is_never_chosen(clinic):
    # A shift that is over at any time of day: one minute long, a day's half away.
    from django.utils import timezone

    now_local = timezone.now().astimezone(timezone.get_current_timezone())
    start = time((now_local.hour + 12) % 24, 0)
    end = time((now_local.hour + 12) % 24, 1)
    agent(clinic["billing"], "fay", shift_start=start, shift_end=end)
    task = submit("Claim denied")
    assert task.assignee is None
    assert task.waiting_for_capacity


def test_resolving_frees_capacity_and_the_waiting_task_flows_to_that_person(clinic):
    gus = agent(clinic["billing"], "gus", capacity=1)
    first = submit("Claim denied A")
    second = submit("Claim denied B")
    assert first.assignee == gus.user
    assert second.status == Task.Status.QUEUED and second.waiting_for_capacity
    services.task_resolve(task_id=first.pk, actor=gus.user, outcome="appeal filed")
    second.refresh_from_db()
    assert second.assignee == gus.user
    assert not second.waiting_for_capacity


def test_becoming_available_pulls_in_waiting_work(clinic):
    hal = agent(clinic["billing"], "hal", availability=StaffProfile.Availability.AWAY)
    task = submit("Claim denied")
    assert task.assignee is None
    services.staff_set_availability(profile=hal, availability="available")
    task.refresh_from_db()
    assert task.assignee == hal.user


def test_continuity_prefers_who_already_holds_the_patients_matter(clinic):
    ivy = agent(clinic["billing"], "ivy")
    agent(clinic["billing"], "jon")
    first = submit("Claim denied", patient_mrn="MRN-77")
    assert first.assignee == ivy.user  # tie: lowest id
    services.task_resolve(task_id=first.pk, actor=ivy.user, outcome="done")  # free again
    held = submit("Claim denied again", patient_mrn="MRN-88")
    other = submit("Another denial", patient_mrn="MRN-88")
    assert other.assignee == held.assignee
    assigned = other.events.get(kind=TaskEvent.Kind.ASSIGNED)
    assert "continuity" in str(assigned.explanation).lower()


def test_reroute_is_counted_and_offered_in_the_new_queue(clinic):
    kim = agent(clinic["billing"], "kim")
    lee = agent(clinic["records"], "lee")
    task = submit("Claim denied")
    assert task.assignee == kim.user
    task = services.task_reroute(
        task_id=task.pk, actor=kim.user, to_queue=clinic["records_queue"], reason="Records request"
    )
    assert task.reroute_count == 1
    assert task.queue == clinic["records_queue"]
    assert task.assignee is None  # records is pull-only
    event = task.events.get(kind=TaskEvent.Kind.REROUTED)
    assert event.rule_id is None or event.rule_id == task.routed_by_rule_id
    assert event.actor == kim.user
    kim.refresh_from_db()
    assert kim.active_load == 0
    assert lee.active_load == 0


@pytest.mark.django_db(transaction=True)
def test_capacity_race_many_routers_never_overbook_anyone():
    billing = DepartmentFactory(name="Billing", code="billing")
    queue = QueueFactory(department=billing, name="Billing", code="billing")
    rules = RuleSetFactory()
    denial = TaskTypeFactory(code="claim_denial", default_queue=queue)
    ClassificationRuleFactory(rule_set=rules, phrases="denied", set_task_type=denial)
    people = [StaffProfileFactory(departments=[billing], capacity=3).user for _ in range(4)]
    errors = []

    def route_many(n):
        try:
            for i in range(n):
                services.task_submit(actor="client:test", channel="api", subject=f"denied {i}")
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=route_many, args=(10,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Task.objects.count() == 80
    for person in people:
        profile = StaffProfile.objects.get(user=person)
        held = Task.objects.filter(assignee=person, status="assigned").count()
        assert profile.active_load == held <= 3
    assert Task.objects.filter(status="assigned").count() == 12
    assert Task.objects.filter(status="queued", waiting_for_capacity=True).count() == 68


def test_a_person_classifies_a_needs_review_task_and_it_counts_as_a_correction(clinic):
    kim = agent(clinic["billing"], "kim")
    task = submit("Hello, a question about my bill from March")
    assert task.queue == clinic["rules"].review_queue
    task = services.task_reclassify(
        task_id=task.pk, actor=kim.user, task_type_code="claim_denial", reason="It is a denial"
    )
    assert task.task_type.code == "claim_denial"
    assert task.queue == clinic["billing_queue"]
    assert task.assignee == kim.user
    event = task.events.get(kind=TaskEvent.Kind.RECLASSIFIED)
    assert event.actor == kim.user
    assert event.explanation["correction"]["to_type"] == "claim_denial"
    assert event.from_queue == clinic["rules"].review_queue


def test_correcting_a_wrong_classification_names_the_rules_that_got_it_wrong(clinic):
    task = submit("Please send my medical records to the billing office")
    assert task.task_type.code == "records_request"
    records_rule = clinic["rules"].classification_rules.get(name="Records")
    task = services.task_reclassify(
        task_id=task.pk, actor="supervisor1", task_type_code="claim_denial"
    )
    event = task.events.get(kind=TaskEvent.Kind.RECLASSIFIED)
    assert event.explanation["correction"]["corrected_rule_ids"] == [records_rule.pk]


def test_reclassify_to_an_unknown_type_names_the_field(clinic):
    from django.core.exceptions import ValidationError

    task = submit("Hello")
    with pytest.raises(ValidationError) as error:
        services.task_reclassify(task_id=task.pk, actor="x", task_type_code="nonsense")
    assert "task_type" in error.value.message_dict


def test_the_holder_of_a_needs_review_task_may_classify_it(clinic):
    from queues.services import queue_grant, task_claim_next

    kim = agent(clinic["billing"], "kim")
    queue_grant(queue=clinic["rules"].review_queue, group=clinic["billing"].group)
    task = submit("Hello, a question about my bill from March")
    claimed = task_claim_next(user=kim.user)
    assert claimed.pk == task.pk
    task = services.task_reclassify(task_id=task.pk, actor=kim.user, task_type_code="claim_denial")
    assert task.queue == clinic["billing_queue"]
    kinds = list(task.events.values_list("kind", flat=True))
    assert kinds[-3:] == ["released", "reclassified", "assigned"]
    assert task.assignee == kim.user
    kim.refresh_from_db()
    assert kim.active_load == 1
