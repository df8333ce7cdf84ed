from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from escalation.models import Escalation, EscalationStep
from escalation.tests.factories import EscalationStepFactory, SlaPolicyFactory
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db

LIST = reverse("escalation:list")


def person(username, departments=(), roles=("Agent",)):
    return StaffProfileFactory(
        user=UserFactory(username=username, first_name=username.title(), roles=list(roles)),
        departments=list(departments),
    ).user


@pytest.fixture
def clinic():
    billing = DepartmentFactory(name="Billing", code="billing")
    front_desk = DepartmentFactory(name="Front desk", code="front-desk")
    claims = QueueFactory(department=billing, name="Claims", code="claims")
    check_in = QueueFactory(department=front_desk, name="Check-in", code="check-in")
    step = EscalationStepFactory(
        policy=SlaPolicyFactory(name="Billing two days"),
        level=2,
        action=EscalationStep.Action.NOTIFY_SUPERVISOR,
    )
    return {
        "claims": claims,
        "check_in": check_in,
        "step": step,
        "alice": person("alice", [billing]),
        "sam": person("sam", [billing], roles=["Supervisor"]),
        "mia": person("mia", roles=["Manager"]),
        "carol": person("carol", roles=["Compliance"]),
    }


def escalate(queue, step, *, minutes_ago=10, **kwargs) -> Escalation:
    task = TaskFactory(
        task_type=TaskTypeFactory(name="Claim denial", default_queue=queue),
        patient_name="Jane Rivera",
    )
    now = timezone.now()
    return Escalation.objects.create(
        task=task,
        step=step,
        level=step.level,
        due_at=now - timedelta(hours=1),
        fired_at=now - timedelta(minutes=minutes_ago),
        **kwargs,
    )


def rows(response) -> list[int]:
    return [e.pk for e in response.context["escalations"]]


def test_an_agent_is_refused(client, clinic):
    escalation = escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["alice"])
    assert client.get(LIST).status_code == 403
    url = reverse("escalation:acknowledge", args=[escalation.pk])
    assert client.post(url).status_code == 403


def test_a_supervisor_sees_only_their_departments_queues_newest_first(client, clinic):
    older = escalate(clinic["claims"], clinic["step"], minutes_ago=30)
    newer = escalate(clinic["claims"], clinic["step"], minutes_ago=5)
    escalate(clinic["check_in"], clinic["step"])
    client.force_login(clinic["sam"])

    response = client.get(LIST)

    assert rows(response) == [newer.pk, older.pk]
    page = response.content.decode()
    assert f'href="{reverse("queues:task", args=[newer.task_id])}">#{newer.task_id}</a>' in page
    for text in ("Claim denial", "Claims", "Billing two days", "Email the queue", "Acknowledge"):
        assert text in page
    assert "Check-in" not in page


def test_the_page_names_no_patient(client, clinic):
    escalation = escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["mia"])
    page = client.get(LIST).content.decode()
    assert escalation.task.patient_mrn not in page
    assert "Jane Rivera" not in page
    assert escalation.task.subject not in page


def test_a_manager_sees_every_queue(client, clinic):
    ours = escalate(clinic["claims"], clinic["step"], minutes_ago=20)
    theirs = escalate(clinic["check_in"], clinic["step"], minutes_ago=10)
    client.force_login(clinic["mia"])
    assert rows(client.get(LIST)) == [theirs.pk, ours.pk]


def test_compliance_reads_but_cannot_acknowledge(client, clinic):
    escalation = escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["carol"])

    response = client.get(LIST)
    assert rows(response) == [escalation.pk]
    page = response.content.decode()
    assert reverse("escalation:acknowledge", args=[escalation.pk]) not in page
    assert "Not yet" in page

    url = reverse("escalation:acknowledge", args=[escalation.pk])
    assert client.post(url).status_code == 403
    escalation.refresh_from_db()
    assert escalation.acknowledged_at is None


def test_acknowledging_records_who_and_when_and_leaves_the_default_list(client, clinic):
    escalation = escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["sam"])

    response = client.post(reverse("escalation:acknowledge", args=[escalation.pk]))

    assert response.status_code == 302
    assert response.url == LIST
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Escalation of task #{escalation.task_id} acknowledged."
    ]
    escalation.refresh_from_db()
    assert escalation.acknowledged_by == clinic["sam"]
    assert escalation.acknowledged_at is not None
    assert rows(client.get(LIST)) == []
    everything = client.get(LIST, {"show": "all"})
    assert rows(everything) == [escalation.pk]
    assert "Sam" in everything.content.decode()


def test_acknowledging_twice_says_it_was_done_already(client, clinic):
    escalation = escalate(
        clinic["claims"],
        clinic["step"],
        acknowledged_by=clinic["mia"],
        acknowledged_at=timezone.now(),
    )
    client.force_login(clinic["sam"])
    response = client.post(reverse("escalation:acknowledge", args=[escalation.pk]), {"show": "all"})
    assert response.url == f"{LIST}?show=all"
    assert "acknowledged already" in " ".join(map(str, get_messages(response.wsgi_request)))
    escalation.refresh_from_db()
    assert escalation.acknowledged_by == clinic["mia"]


def test_a_supervisor_cannot_acknowledge_another_departments_escalation(client, clinic):
    escalation = escalate(clinic["check_in"], clinic["step"])
    client.force_login(clinic["sam"])
    url = reverse("escalation:acknowledge", args=[escalation.pk])
    assert client.post(url).status_code == 404
    escalation.refresh_from_db()
    assert escalation.acknowledged_at is None


def test_acknowledge_is_a_post(client, clinic):
    escalation = escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["sam"])
    assert client.get(reverse("escalation:acknowledge", args=[escalation.pk])).status_code == 405


def test_the_list_stops_at_its_limit_and_says_so(client, clinic, monkeypatch):
    monkeypatch.setattr("escalation.views.LIMIT", 2)
    for _ in range(3):
        escalate(clinic["claims"], clinic["step"])
    client.force_login(clinic["mia"])
    response = client.get(LIST)
    assert len(rows(response)) == 2
    assert "Showing the first 2" in response.content.decode()


@pytest.mark.parametrize("count", [3, 20])
def test_the_page_takes_the_same_queries_however_many_escalations(
    client, clinic, django_assert_num_queries, count
):
    steps = [clinic["step"], EscalationStepFactory(policy=clinic["step"].policy, level=3)]
    for n in range(count):
        escalate(
            clinic["claims"],
            steps[n % 2],
            acknowledged_by=clinic["mia"] if n % 3 == 0 else None,
            acknowledged_at=timezone.now() if n % 3 == 0 else None,
        )
    client.force_login(clinic["sam"])
    # session, user, the user's and their groups' permissions, the escalations; then the
    # session's activity time saved (savepoint, update, release)
    with django_assert_num_queries(8):
        response = client.get(LIST, {"show": "all"})
    assert len(rows(response)) == count
