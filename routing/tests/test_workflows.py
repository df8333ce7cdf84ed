"""Workflow follow-ups, blocked steps, replies, and held tasks that wake up when their
documents arrive."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from queues import services as queues_services
from queues.intake.draft import AttachmentDraft
from queues.models import InboundMessage, Task, TaskEvent
from queues.services import TaskStateError
from routing import services as routing_services
from routing import workflows
from routing.models import DedupPolicy, WorkflowRun, WorkflowStep, WorkflowTemplate
from routing.tests.intake_clinic import build_intake_clinic, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    clinic = build_intake_clinic()
    template = WorkflowTemplate.objects.create(
        name="Referral processed",
        trigger_type=clinic["referral_packet"],
        trigger=WorkflowTemplate.Trigger.RESOLVED,
    )
    WorkflowStep.objects.create(
        template=template, order=10, task_type=clinic["eligibility_verification"]
    )
    WorkflowStep.objects.create(template=template, order=20, task_type=clinic["prior_auth_request"])
    WorkflowStep.objects.create(
        template=template,
        order=30,
        task_type=clinic["scheduling_readiness"],
        blocked_until=clinic["prior_auth_request"],
    )
    clinic["template"] = template
    return clinic


def page_text(response) -> str:
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(text))


def referral(clinic, **fields) -> Task:
    fields.setdefault("channel", "fax")
    task = submit("Referral to cardiology", "Referred by Dr. Adams", **fields).task
    assert task.task_type == clinic["referral_packet"]
    assert task.assignee == clinic["rita"]
    return task


def processed(clinic) -> tuple[Task, dict[str, Task]]:
    parent = referral(clinic)
    routing_services.task_resolve(task_id=parent.pk, actor=clinic["rita"], outcome="Done")
    children = {child.task_type.code: child for child in parent.children.all()}
    return parent, children


# --- spawning -------------------------------------------------------------------------------


def test_a_processed_referral_spawns_its_follow_ups_routed_to_their_teams(clinic):
    parent, children = processed(clinic)

    assert set(children) == {
        "eligibility_verification",
        "prior_auth_request",
        "scheduling_readiness",
    }
    eligibility = children["eligibility_verification"]
    authorization = children["prior_auth_request"]
    scheduling = children["scheduling_readiness"]
    for child in children.values():
        assert child.patient_mrn == parent.patient_mrn
        assert child.patient_name == parent.patient_name
        assert child.parent == parent
        assert child.events.filter(kind=TaskEvent.Kind.ROUTED).exists()
    assert (eligibility.queue, eligibility.assignee) == (clinic["front-desk_queue"], clinic["fred"])
    assert (authorization.queue, authorization.assignee) == (
        clinic["prior-auth_queue"],
        clinic["paula"],
    )
    # Visible in its queue, but not offered while the authorization is open.
    assert scheduling.queue == clinic["scheduling_queue"]
    assert scheduling.status == Task.Status.QUEUED
    assert scheduling.assignee is None
    assert scheduling.blocked_by == authorization

    spawned = parent.events.filter(kind=TaskEvent.Kind.SPAWNED).order_by("id")
    assert [e.explanation["headline"] for e in spawned] == [
        f"Follow-up #{eligibility.pk} created: Eligibility verification",
        f"Follow-up #{authorization.pk} created: Prior authorization request",
        f"Follow-up #{scheduling.pk} created: Scheduling readiness, "
        f"waiting until #{authorization.pk} is resolved",
    ]


def test_a_template_fires_once_per_task_even_when_resolved_again(clinic):
    parent, _ = processed(clinic)
    routing_services.task_reopen(task_id=parent.pk, actor=clinic["rita"], reason="More pages")
    parent.refresh_from_db()
    if parent.status == Task.Status.QUEUED:
        queues_services.task_claim(task_id=parent.pk, user=clinic["rita"])
    routing_services.task_resolve(task_id=parent.pk, actor=clinic["rita"], outcome="Done")

    assert parent.children.count() == 3
    assert WorkflowRun.objects.filter(trigger_task=parent).count() == 1
    assert workflows.on_resolved(task=parent, actor="system:test") == []


def test_a_when_created_template_fires_on_intake_and_not_on_a_resend(clinic):
    clinic["template"].trigger = WorkflowTemplate.Trigger.CREATED
    clinic["template"].save()

    first = submit("Referral to cardiology", channel="fax", external_id="fax-9")
    assert first.task.children.count() == 3
    again = submit("Referral to cardiology", channel="fax", external_id="fax-9")

    assert again.outcome == InboundMessage.Status.RESENT
    assert Task.objects.filter(parent=first.task).count() == 3
    assert workflows.on_created(task=first.task, actor="system:test", now=timezone.now()) == []


def test_a_template_switched_off_creates_nothing(clinic):
    WorkflowTemplate.objects.update(is_active=False)
    _, children = processed(clinic)
    assert children == {}


# --- blocked steps ------------------------------------------------------------------------------


def test_a_blocked_step_cannot_be_claimed_by_service_next_task_or_page(client, clinic):
    _, children = processed(clinic)
    scheduling = children["scheduling_readiness"]

    with pytest.raises(TaskStateError, match="waits for task"):
        queues_services.task_claim(task_id=scheduling.pk, user=clinic["sid"])
    assert queues_services.task_claim_next(user=clinic["sid"]) is None

    client.force_login(clinic["sid"])
    page = client.get(reverse("queues:task", args=[scheduling.pk]))
    assert page.status_code == 200  # visible
    text = page_text(page)
    assert f"Waits for task #{children['prior_auth_request'].pk}" in text
    assert reverse("queues:task_action", args=[scheduling.pk, "claim"]) not in (
        page.content.decode()
    )
    response = client.post(
        reverse("queues:task_action", args=[scheduling.pk, "claim"]),
        {"expected_version": scheduling.version},
        follow=True,
    )
    assert "Claim is not possible now" in page_text(response)
    assert Task.objects.get(pk=scheduling.pk).assignee is None


def test_resolving_the_blocker_unblocks_and_offers_the_step(clinic):
    _, children = processed(clinic)
    authorization = children["prior_auth_request"]

    routing_services.task_resolve(
        task_id=authorization.pk, actor=clinic["paula"], outcome="Authorization approved"
    )

    scheduling = Task.objects.get(pk=children["scheduling_readiness"].pk)
    assert scheduling.blocked_by is None
    assert scheduling.status == Task.Status.ASSIGNED
    assert scheduling.assignee == clinic["sid"]
    unblocked = scheduling.events.get(kind=TaskEvent.Kind.UNBLOCKED)
    assert unblocked.explanation["headline"] == (
        f"Task #{authorization.pk} it waited for is resolved: it can be worked now"
    )
    kinds = list(scheduling.events.values_list("kind", flat=True))
    assert kinds[-2:] == ["unblocked", "assigned"]


def test_the_parent_page_shows_the_whole_chain_in_the_same_queries(client, clinic):
    WorkflowTemplate.objects.update(is_active=False)
    processed(clinic)
    WorkflowTemplate.objects.update(is_active=True)
    parent, children = processed(clinic)
    authorization = children["prior_auth_request"]
    client.force_login(clinic["rita"])

    def queries(task: Task) -> tuple[int, object]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("queues:task", args=[task.pk]))
        return len(captured), response

    lone = Task.objects.get(channel="fax", pk__lt=parent.pk, parent=None)
    queries(lone)  # warm the per-process caches (content types) before counting
    alone, _ = queries(lone)
    chained, response = queries(parent)
    # The linked and the chained tasks come in the one query the page already made.
    assert chained == alone

    text = page_text(response)
    assert "Workflow 3 follow-ups" in text
    for child in children.values():
        assert f"#{child.pk} {child.task_type.name}" in text
    assert f"Waits for #{authorization.pk}" in text
    assert f"Blocks #{children['scheduling_readiness'].pk}" in text
    # Rita works referrals: the other teams' steps show their state, not a link or subject.
    content = response.content.decode()
    assert reverse("queues:task", args=[authorization.pk]) not in content
    assert authorization.subject not in text


def test_a_follow_up_page_shows_its_siblings(client, clinic):
    parent, children = processed(clinic)
    client.force_login(clinic["paula"])
    text = page_text(client.get(reverse("queues:task", args=[children["prior_auth_request"].pk])))
    assert f"#{parent.pk} Referral packet" in text
    assert "(this task)" in text
    assert f"#{children['scheduling_readiness'].pk} Scheduling readiness" in text


# --- replies -------------------------------------------------------------------------------------


def email(subject, **fields):
    fields.setdefault("patient_mrn", "")
    return submit(subject, channel="email", **fields)


def test_a_reply_reopens_a_resolved_task_as_a_comment_with_its_attachments(clinic):
    task = email("Question about my bill", external_id="<q1@mail.example>").task
    routing_services.task_resolve(task_id=task.pk, actor=clinic["bea"], outcome="Done")

    reply = email(
        "Re: Question about my bill",
        body="It is still wrong, see the scan.",
        external_id="<q2@mail.example>",
        in_reply_to=["<q1@mail.example>"],
        metadata={"email": {"from": "Jordan Rivera <jordan@mail.example>"}},
        attachments=[AttachmentDraft("scan.pdf", "application/pdf", b"%PDF-1.4 scan")],
    )

    assert reply.outcome == InboundMessage.Status.REPLY
    assert not reply.created
    task.refresh_from_db()
    assert reply.task == task
    assert task.status == Task.Status.ASSIGNED
    assert task.reopen_count == 1
    assert task.events.get(kind=TaskEvent.Kind.REOPENED).reason == "Reply received"
    comment = task.events.filter(kind=TaskEvent.Kind.COMMENTED).get()
    assert comment.explanation["headline"] == (
        "Reply received from Jordan Rivera <jordan@mail.example>"
    )
    assert "It is still wrong, see the scan." in comment.reason
    assert list(task.attachments.values_list("filename", flat=True)) == ["scan.pdf"]
    assert Task.objects.count() == 1


def test_a_resent_reply_is_recorded_once(clinic):
    task = email("Question about my bill", external_id="<q1@mail.example>").task
    for _ in range(2):
        email("Re: bill", external_id="<q2@mail.example>", in_reply_to=["<q1@mail.example>"])
    assert task.events.filter(kind=TaskEvent.Kind.COMMENTED).count() == 1


def test_a_reply_resumes_a_held_task(clinic):
    task = email("Question about my bill", external_id="<q1@mail.example>").task
    routing_services.task_hold(
        task_id=task.pk,
        actor=clinic["bea"],
        reason="Waiting for the patient to call back",
        follow_up_at=timezone.now() + timedelta(days=1),
    )
    email("Re: bill", external_id="<q2@mail.example>", in_reply_to=["<q1@mail.example>"])
    task.refresh_from_db()
    assert task.status == Task.Status.IN_PROGRESS
    assert task.assignee == clinic["bea"]
    assert task.events.filter(kind=TaskEvent.Kind.RESUMED).get().reason == (
        "Resumed: reply received"
    )


# --- held tasks waiting for documents ------------------------------------------------------------


def hold(task: Task, person, reason="Waiting for records from another provider") -> None:
    routing_services.task_hold(
        task_id=task.pk,
        actor=person,
        reason=reason,
        follow_up_at=timezone.now() + timedelta(days=2),
    )


def test_a_fax_for_a_held_referral_resumes_it(clinic):
    waiting = referral(clinic, external_id="fax-1")
    hold(waiting, clinic["rita"])

    result = submit("Referral pages 3-5", channel="fax", external_id="fax-2")

    waiting.refresh_from_db()
    assert waiting.status == Task.Status.IN_PROGRESS
    assert waiting.assignee == clinic["rita"]
    resumed = waiting.events.get(kind=TaskEvent.Kind.RESUMED)
    assert resumed.reason == f"Resumed: new documents arrived by fax (#{result.task.pk})"
    # Without a dedup policy the fax is work of its own.
    assert result.outcome == InboundMessage.Status.PARSED


def test_with_a_dedup_policy_the_missing_documents_land_on_the_held_task(clinic):
    DedupPolicy.objects.create(task_type=clinic["referral_packet"], window_hours=7 * 24)
    waiting = referral(clinic, external_id="fax-1")
    hold(waiting, clinic["rita"])

    result = submit("Referral pages 3-5", channel="fax", external_id="fax-2")

    assert result.outcome == InboundMessage.Status.DUPLICATE
    assert result.duplicate_of == waiting
    waiting.refresh_from_db()
    assert waiting.status == Task.Status.IN_PROGRESS
    assert list(
        waiting.events.filter(kind__in=["duplicate", "resumed"]).values_list("kind", flat=True)
    ) == ["duplicate", "resumed"]
    assert Task.objects.filter(status__in=Task.OPEN_STATUSES).count() == 1


def test_a_held_follow_up_resumes_when_its_referral_gets_more_pages(clinic):
    _, children = processed(clinic)
    authorization = children["prior_auth_request"]
    hold(authorization, clinic["paula"], reason="Waiting for clinical notes")

    result = submit("Referral: clinical notes", channel="email", patient_mrn="MRN-1001")

    authorization.refresh_from_db()
    assert authorization.status == Task.Status.IN_PROGRESS
    assert authorization.events.get(kind=TaskEvent.Kind.RESUMED).reason == (
        f"Resumed: a new message arrived by email (#{result.task.pk})"
    )


def test_an_item_for_another_patient_or_matter_resumes_nothing(clinic):
    waiting = referral(clinic, external_id="fax-1")
    hold(waiting, clinic["rita"])

    submit("Referral pages", channel="fax", patient_mrn="MRN-2002")
    submit("A question about my bill", channel="portal")

    assert Task.objects.get(pk=waiting.pk).status == Task.Status.ON_HOLD


# --- templates as managers write them ------------------------------------------------------------


def test_steps_are_created_after_the_step_they_wait_for():
    assert workflows.steps_in_order([("c", "b"), ("a", None), ("b", "a")]) == [1, 2, 0]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([("a", None), ("a", None)], "a is there twice"),
        ([("a", "x")], "waits for x, which is not a step"),
        ([("a", "b"), ("b", "a")], "wait for each other in a circle"),
    ],
)
def test_templates_that_cannot_run_are_refused(steps, message):
    with pytest.raises(workflows.WorkflowError, match=message):
        workflows.steps_in_order(steps)


def test_the_admin_refuses_steps_waiting_for_each_other(client, clinic):
    manager = get_user_model().objects.create_superuser("manager", "m@clinic.example", "pw")
    client.force_login(manager)
    a, b = clinic["eligibility_verification"], clinic["prior_auth_request"]
    form = {
        "name": "Circular",
        "trigger_type": clinic["referral_packet"].pk,
        "trigger": "resolved",
        "is_active": "on",
        "description": "",
        "steps-TOTAL_FORMS": "2",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-order": "10",
        "steps-0-task_type": a.pk,
        "steps-0-blocked_until": b.pk,
        "steps-1-order": "20",
        "steps-1-task_type": b.pk,
        "steps-1-blocked_until": a.pk,
    }
    response = client.post(reverse("admin:routing_workflowtemplate_add"), form)
    assert response.status_code == 200
    assert "wait for each other in a circle" in page_text(response)
    assert not WorkflowTemplate.objects.filter(name="Circular").exists()

    form["steps-1-blocked_until"] = ""
    response = client.post(reverse("admin:routing_workflowtemplate_add"), form)
    assert response.status_code == 302
    template = WorkflowTemplate.objects.get(name="Circular")
    assert template.steps.get(task_type=a).blocked_until == b
    assert client.get(reverse("admin:routing_workflowtemplate_changelist")).status_code == 200
    assert client.get(reverse("admin:routing_deduppolicy_add")).status_code == 200
