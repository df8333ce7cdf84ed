"""The demo's intake policies: a processed referral sets off the work of three teams, and a
second billing question about one bill joins the first."""

import pytest
from django.contrib.auth import get_user_model

from clinicdesk.demo import build_demo_clinic
from queues import services as queues_services
from queues.intake.draft import TaskDraft
from queues.models import InboundMessage, Task
from routing import services as routing_services
from routing.intake import intake_submit

pytestmark = pytest.mark.django_db


def send(subject: str, channel: str, external_id: str, body: str = "") -> Task:
    draft = TaskDraft(
        channel=channel,
        subject=subject,
        body=body,
        external_id=external_id,
        patient_mrn="MRN-300200",
        patient_name="Jordan Rivera",
    )
    return intake_submit(draft=draft, actor="client:demo-test")


def test_a_processed_referral_spawns_eligibility_authorization_and_scheduling():
    build_demo_clinic()
    referral = send("Referral to cardiology", "fax", "fax-1", "Referred by Dr. Adams").task
    assert referral.task_type.code == "referral_packet"
    intake1 = get_user_model().objects.get(username="intake1")
    if referral.assignee_id != intake1.pk:
        referral = queues_services.task_claim(task_id=referral.pk, user=intake1)

    routing_services.task_resolve(task_id=referral.pk, actor=intake1, outcome="Done")

    children = {t.task_type.code: t for t in Task.objects.filter(parent=referral)}
    assert {code: t.queue.code for code, t in children.items()} == {
        "eligibility_verification": "front-desk",
        "prior_auth_request": "prior-auth",
        "scheduling_readiness": "scheduling",
    }
    assert children["scheduling_readiness"].blocked_by == children["prior_auth_request"]
    assert children["eligibility_verification"].blocked_by is None


def test_a_second_billing_question_about_one_bill_joins_the_first():
    build_demo_clinic()
    first = send("Question about my statement", "portal", "p-1", "Why was I billed twice?")
    assert first.task.task_type.code == "billing_question"
    second = send("Voicemail: question about my bill", "phone", "vm-1", "About my statement")
    assert second.outcome == InboundMessage.Status.DUPLICATE
    assert second.duplicate_of == first.task
