import pytest

from accounts.models import StaffProfile
from queues.models import Task, TaskEvent
from routing import services
from routing.tests.test_services import agent, clinic  # noqa: F401 - the shared clinic fixture

pytestmark = pytest.mark.django_db


def drafts(*subjects, **common):
    return [{"channel": "portal", "subject": s, "body": "", **common} for s in subjects]


def test_a_batch_routes_like_single_intake_and_fills_capacity_exactly(clinic):  # noqa: F811
    ana = agent(clinic["billing"], "ana", capacity=2)
    ben = agent(clinic["billing"], "ben", capacity=1)
    tasks = services.task_submit_batch(
        actor="client:ehr", drafts=drafts(*(f"Claim denied {i}" for i in range(5)))
    )
    assert [t.queue_id for t in tasks] == [clinic["billing_queue"].pk] * 5
    assigned = Task.objects.filter(status="assigned")
    assert assigned.count() == 3
    ana.refresh_from_db()
    ben.refresh_from_db()
    assert (ana.active_load, ben.active_load) == (2, 1)
    assert assigned.filter(assignee=ana.user).count() == 2
    waiting = Task.objects.filter(status="queued", waiting_for_capacity=True)
    assert waiting.count() == 2
    for task in Task.objects.all():
        kinds = list(task.events.values_list("kind", flat=True))
        assert kinds[:2] == ["created", "routed"]
        assert kinds[2] in ("assigned", "waiting")
    assert TaskEvent.objects.filter(kind="created", actor_label="client:ehr").count() == 5


def test_a_batch_never_pushes_over_capacity_already_in_use(clinic):  # noqa: F811
    ana = agent(clinic["billing"], "ana", capacity=2)
    StaffProfile.objects.filter(pk=ana.pk).update(active_load=2)
    services.task_submit_batch(actor="client:ehr", drafts=drafts("Claim denied"))
    ana.refresh_from_db()
    assert ana.active_load == 2
    assert Task.objects.get().waiting_for_capacity


def test_a_batch_sends_red_flags_to_triage_and_unknowns_to_review(clinic):  # noqa: F811
    tasks = services.task_submit_batch(
        actor="client:ehr",
        drafts=drafts("My bill", "Chest pain since this morning", "Parking question"),
    )
    by_subject = {t.subject: t for t in tasks}
    triage = by_subject["Chest pain since this morning"]
    assert triage.priority == 1 and triage.queue == clinic["rules"].red_flag_queue
    assert by_subject["Parking question"].queue == clinic["rules"].review_queue


def test_a_batch_keeps_a_returning_patient_with_the_same_person(clinic):  # noqa: F811
    agent(clinic["billing"], "ana", capacity=5)
    agent(clinic["billing"], "ben", capacity=5)
    first = services.task_submit(
        actor="x", channel="portal", subject="Claim denied", patient_mrn="MRN-1"
    )
    StaffProfile.objects.filter(user=first.assignee).update(active_load=3)
    tasks = services.task_submit_batch(
        actor="client:ehr", drafts=drafts("Claim denied again", patient_mrn="MRN-1")
    )
    # Continuity wins over the lighter load of the other person.
    assert tasks[0].assignee_id == first.assignee_id
