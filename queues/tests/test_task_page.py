"""The Task page: fields, the patient in full, the timeline in words, the actions offered."""

import html
import re
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import StaffProfile
from accounts.tests.factories import (
    DepartmentFactory,
    SkillFactory,
    StaffProfileFactory,
    StaffSkillFactory,
    UserFactory,
)
from queues import services as queues_services
from queues.models import Queue, Task
from queues.tests.factories import QueueFactory, TaskTypeFactory
from routing import services as routing_services
from routing.tests.factories import ClassificationRuleFactory, RoutingRuleFactory, RuleSetFactory

pytestmark = pytest.mark.django_db


def person(department, username, first, last, *, roles=("Agent",), **profile):
    return StaffProfileFactory(
        user=UserFactory(username=username, first_name=first, last_name=last, roles=list(roles)),
        departments=[department] if department else [],
        **profile,
    ).user


def build_clinic() -> dict:
    """A small clinic with rules: Billing (and its Appeals queue, which needs a skill), a
    Needs review queue worked by the front desk, Clinical triage; and the people of the
    permission tests: alice, ben (away), carla (little skill), sam (billing supervisor,
    offline), frank (front desk), nora (triage nurse), carol (compliance)."""
    billing = DepartmentFactory(name="Billing", code="billing")
    front_desk = DepartmentFactory(name="Front desk", code="front-desk")
    triage = DepartmentFactory(name="Clinical triage", code="triage")
    billing_queue = QueueFactory(department=billing, name="Billing", code="billing")
    appeals_queue = QueueFactory(department=billing, name="Appeals", code="appeals")
    review_queue = QueueFactory(
        department=front_desk,
        name="Needs review",
        code="needs-review",
        kind=Queue.Kind.REVIEW,
        assignment_policy=Queue.Policy.PULL_ONLY,
    )
    triage_queue = QueueFactory(department=triage, name="Clinical triage", code="triage")
    rules = RuleSetFactory(review_queue=review_queue, red_flag_queue=triage_queue)
    denial = TaskTypeFactory(code="claim_denial", name="Claim denial", default_queue=billing_queue)
    TaskTypeFactory(
        code="statement_question", name="Statement question", default_queue=billing_queue
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Denied claims", phrases="claim denied\ndenial", set_task_type=denial
    )
    ClassificationRuleFactory(
        rule_set=rules, name="Appeal tag", phrases="appeal", add_tags=["appeal"]
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
    alice = person(billing, "alice", "Alice", "Moreno")
    StaffSkillFactory(staff=alice.staff, skill=appeals, level=4)
    ben = person(billing, "ben", "Ben", "Ortiz", availability=StaffProfile.Availability.AWAY)
    carla = person(billing, "carla", "Carla", "Diaz")
    StaffSkillFactory(staff=carla.staff, skill=appeals, level=1)
    sam = person(
        billing,
        "sam",
        "Sam",
        "Patel",
        roles=("Supervisor",),
        availability=StaffProfile.Availability.OFFLINE,
    )
    frank = person(front_desk, "frank", "Frank", "Lee")
    nora = person(triage, "nora", "Nora", "Quinn")
    carol = UserFactory(
        username="carol", first_name="Carol", last_name="Reyes", roles=["Compliance"]
    )
    return {
        "billing_queue": billing_queue,
        "appeals_queue": appeals_queue,
        "review_queue": review_queue,
        "triage_queue": triage_queue,
        "rules": rules,
        "alice": alice,
        "ben": ben,
        "carla": carla,
        "sam": sam,
        "frank": frank,
        "nora": nora,
        "carol": carol,
    }


def submit(subject: str, body: str = "", **fields) -> Task:
    fields.setdefault("patient_mrn", "MRN-204611")
    fields.setdefault("patient_name", "Jordan M. Rivera")
    fields.setdefault("patient_birth_date", date(1984, 3, 12))
    return routing_services.task_submit(
        actor="client:portal", channel="portal", subject=subject, body=body, **fields
    )


def page_text(response) -> str:
    """The visible text of a page, with tags dropped and entities decoded."""
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(text))


def buttons(response) -> list[str]:
    """The labels of the action buttons (toggles and one-click forms)."""
    content = response.content.decode()
    bar = content[
        content.index('class="action-bar"') : content.index(
            "</div>", content.index('class="action-bar"')
        )
    ]
    return [
        html.unescape(label.strip()) for label in re.findall(r"<button[^>]*>([^<]+)</button>", bar)
    ]


FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def clinic(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    return build_clinic()


def test_agent_sees_fields_patient_and_the_routing_in_words(client, clinic):
    task = submit(
        "Claim denied for March visit",
        "Hello, my claim was denied.\nCan you <b>help</b>?",
        received_at=timezone.now() - timedelta(hours=2),
    )
    assert task.assignee == clinic["alice"]
    client.force_login(clinic["alice"])

    response = client.get(reverse("queues:task", args=[task.pk]))

    assert response.status_code == 200
    text = page_text(response)
    assert "Claim denied for March visit" in text
    assert "Claim denial" in text and "P3" in text and "Assigned" in text
    assert "Assigned to you" in text and "Patient portal" in text
    assert "MRN-204611" in text and "Jordan M. Rivera" in text and "Mar 12, 1984" in text
    assert "&lt;b&gt;help&lt;/b&gt;" in response.content.decode()  # escaped, not markup
    assert "Routed to Billing by rule 'Denied claims' — matched 'claim denied'" in text
    assert "Offered to Alice Moreno (0 of 5 in use) — Ben Ortiz away; Sam Patel offline" in text
    assert "Billing is the default queue for Claim denial tasks." in text
    assert "Integration: portal" in text and "Routing engine" in text
    assert (
        "Why it is here: Routed to Billing by rule 'Denied claims' — matched 'claim denied'; "
        "offered to Alice Moreno (0 of 5 in use)" in text
    )
    assert 'href="/static/css/task.css"' in response.content.decode()


def test_a_rule_route_names_the_skill_and_who_lacks_it(client, clinic):
    task = submit("Claim denied, we want to appeal")
    client.force_login(clinic["alice"])

    text = page_text(client.get(reverse("queues:task", args=[task.pk])))

    assert "Routed to Appeals by rule 'Appeals need the skill'" in text
    assert (
        "Classified as Claim denial by rule 'Denied claims' — matched 'claim denied'; "
        "rule 'Appeal tag' — matched 'appeal'." in text
    )
    assert "Carla Diaz lacks skill Payer appeals (level 1 of 3)" in text
    assert "Needs skill Payer appeals at level 3 or higher." in text
    assert "Tags: appeal." in text


def test_needs_review_and_red_flags_read_as_such(client, clinic):
    unsure = submit("A question about parking")
    urgent = submit("Bill", "my claim denied and I have chest pain")
    client.force_login(clinic["frank"])
    text = page_text(client.get(reverse("queues:task", args=[unsure.pk])))
    assert "Sent to Needs review for a person to classify — no rule set a task type" in text

    client.force_login(clinic["nora"])
    text = page_text(client.get(reverse("queues:task", args=[urgent.pk])))
    assert "Red flag 'chest pain': sent to Clinical triage" in text
    assert "Priority P1: red flag: always P1." in text


def test_the_assignee_is_offered_the_actions_of_an_assigned_task(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["alice"])
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert buttons(response) == ["Start", "Resolve", "Hold", "Release", "Reroute", "Comment"]
    assert f'name="expected_version" value="{task.version}"' in response.content.decode()


def test_a_colleague_may_only_comment_on_someone_elses_task(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["carla"])
    assert buttons(client.get(reverse("queues:task", args=[task.pk]))) == ["Comment"]


def test_a_supervisor_is_offered_reassign(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["sam"])
    labels = buttons(client.get(reverse("queues:task", args=[task.pk])))
    assert labels == ["Resolve", "Hold", "Release", "Reroute", "Reassign", "Comment"]


def test_a_needs_review_task_offers_claim_and_classify(client, clinic):
    task = submit("A question about parking")
    client.force_login(clinic["frank"])
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert buttons(response) == ["Claim", "Classify", "Reroute", "Comment"]
    assert "Statement question" in page_text(response)


def test_on_hold_and_resolved_tasks_offer_resume_and_reopen(client, clinic):
    task = submit("Claim denied for March visit")
    alice = clinic["alice"]
    routing_services.task_hold(
        task_id=task.pk,
        actor=alice,
        reason="Waiting for the payer",
        follow_up_at=timezone.now() + timedelta(days=1),
    )
    client.force_login(alice)
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert buttons(response) == ["Resume", "Resolve", "Reroute", "Comment"]
    assert "On hold: Waiting for the payer" in page_text(response)

    routing_services.task_resolve(task_id=task.pk, actor=alice, outcome="Appeal filed")
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert buttons(response) == ["Reopen", "Comment"]
    assert "Resolved — Appeal filed" in page_text(response)


def test_compliance_reads_everything_and_is_offered_nothing(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["carol"])
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert response.status_code == 200
    text = page_text(response)
    assert "Jordan M. Rivera" in text and "Read only" in text
    assert 'class="action-bar"' not in response.content.decode()


def test_another_departments_task_is_not_found(client, clinic):
    task = submit("Bill", "my claim denied and I have chest pain")  # triage
    client.force_login(clinic["alice"])
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert response.status_code == 404
    assert b"chest pain" not in response.content
    assert client.get(reverse("queues:task_timeline", args=[task.pk])).status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(client, clinic):
    task = submit("Claim denied for March visit")
    response = client.get(reverse("queues:task", args=[task.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_the_timeline_partial_is_the_pages_timeline(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["alice"])
    response = client.get(reverse("queues:task_timeline", args=[task.pk]), HTTP_HX_REQUEST="true")
    content = response.content.decode()
    assert response.status_code == 200
    assert content.lstrip().startswith('<section class="card timeline-card" id="timeline"')
    assert "<html" not in content
    assert "Routed to Billing by rule" in html.unescape(content)
    assert f'data-task-version="{task.version}"' in content


def _with_events(task: Task, total: int) -> None:
    for n in range(total - task.events.count()):
        queues_services.task_comment(task_id=task.pk, actor=task.assignee, text=f"Note {n}")


@pytest.mark.parametrize("events", [3, 30])
def test_the_page_takes_the_same_queries_whatever_the_timeline_length(
    client, clinic, django_assert_num_queries, events
):
    task = submit("Claim denied for March visit")
    _with_events(task, events)
    assert task.events.count() == events
    client.force_login(clinic["alice"])
    url = reverse("queues:task", args=[task.pk])
    # session, user, the task with its permissions, events, type and skill names, related
    # tasks, the queues a reroute may go to; then the session's activity time (3); and the
    # audit's record of the read (clinicdesk.audit): one INSERT, plus the task's content type,
    # which a process reads once and caches (the test starts with the cache cleared)
    with django_assert_num_queries(12):
        response = client.get(url)
    assert response.status_code == 200
    assert f"{events} events" in page_text(response)


@pytest.mark.parametrize("events", [3, 30])
def test_the_timeline_partial_takes_the_same_queries_whatever_its_length(
    client, clinic, django_assert_num_queries, events
):
    task = submit("Claim denied for March visit")
    _with_events(task, events)
    client.force_login(clinic["alice"])
    url = reverse("queues:task_timeline", args=[task.pk])
    # session, user, task, events, names: a poll does not touch the session's activity time
    with django_assert_num_queries(5):
        assert client.get(url, HTTP_HX_REQUEST="true", HTTP_X_IDLE_POLL="1").status_code == 200


def test_links_to_related_tasks_show_only_what_the_user_may_see(client, clinic):
    parent = submit("Claim denied for March visit")
    follow_up = routing_services.task_submit(
        actor="system:workflow",
        channel="api",
        subject="Statement question after the denial",
        parent_id=parent.pk,
    )
    client.force_login(clinic["alice"])
    text = page_text(client.get(reverse("queues:task", args=[parent.pk])))
    assert f"#{follow_up.pk} Statement question after the denial" in text
    assert "Follow-up" in text


def test_shared_filters_render_badges_ages_and_initials():
    from queues.templatetags import clinicdesk_tasks as tags

    assert tags.priority_badge(1) == (
        '<span class="badge badge--p1" title="P1 urgent">P1 '
        '<span class="badge__text">Urgent</span></span>'
    )
    assert tags.priority_badge("nonsense") == ""
    assert tags.status_badge("on_hold") == '<span class="badge badge--on_hold">On hold</span>'
    assert tags.status_badge(Task(status="resolved")).endswith(">Resolved</span>")
    assert tags.status_badge("<script>") == ""
    now = timezone.now()
    assert tags.age_text(now, now) == "just now"
    assert tags.age_text(now - timedelta(minutes=12), now) == "12 min"
    assert tags.age_text(now - timedelta(hours=3, minutes=5), now) == "3 h 5 min"
    assert tags.age_text(now - timedelta(days=2, hours=4), now) == "2 d 4 h"
    assert tags.age_text(now - timedelta(days=40), now) == "5 wk"
    assert tags.age_text(None) == ""
    assert tags.ago(now) == "just now"
    assert tags.ago(now - timedelta(minutes=5)) == "5 min ago"
    assert tags.due(now + timedelta(hours=3, minutes=30)).startswith("in 3 h")
    assert tags.due(now - timedelta(hours=2, minutes=1)) == "2 h 1 min overdue"
    assert tags.patient_initials(Task(patient_name="Jordan M. Rivera")) == "JMR"
    assert tags.patient_initials("rivera, jordan") == "RJ"
    assert tags.patient_initials("") == ""
    assert tags.actor_name("client:fax-gateway") == "Integration: fax-gateway"


def test_due_times_and_links_show_when_set(client, clinic):
    original = submit("Claim denied for March visit")
    task = submit("Claim denied again, second letter")
    now = timezone.now()
    Task.objects.filter(pk=task.pk).update(
        claim_due_at=now + timedelta(hours=1),
        resolve_due_at=now - timedelta(hours=3, minutes=30),
        duplicate_of=original,
        reroute_count=2,
    )
    client.force_login(clinic["alice"])
    text = page_text(client.get(reverse("queues:task", args=[task.pk])))
    assert "Claim due" in text
    assert "Resolve due" in text and "(3 h 30 min overdue)" in text
    assert f"Duplicate of Task #{original.pk}" in text
    assert "Rerouted 2 times" in text
    assert f"#{original.pk} Claim denied for March visit Original" in text
