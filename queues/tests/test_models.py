import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

from queues.models import Channel, Task, TaskEvent
from queues.tests.factories import TaskEventFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("priority", [0, 5])
def test_priority_outside_p1_to_p4_is_refused_by_the_database(priority):
    task = TaskFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(priority=priority)


def test_the_same_external_id_cannot_arrive_twice_on_one_channel():
    TaskFactory(channel=Channel.FHIR, external_id="Communication/123")
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskFactory(channel=Channel.FHIR, external_id="Communication/123")


def test_the_same_external_id_on_another_channel_is_another_task():
    TaskFactory(channel=Channel.FHIR, external_id="42")
    TaskFactory(channel=Channel.EMAIL, external_id="42")
    assert Task.objects.filter(external_id="42").count() == 2


def test_tasks_without_external_id_do_not_collide():
    TaskFactory(channel=Channel.FORM, external_id="")
    TaskFactory(channel=Channel.FORM, external_id="")
    assert Task.objects.filter(channel=Channel.FORM).count() == 2


def test_an_assigned_task_must_have_an_assignee():
    task = TaskFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(status=Task.Status.ASSIGNED, assignee=None)


def test_timeline_event_cannot_be_updated_through_the_orm():
    event = TaskEventFactory(reason="first")
    event.reason = "rewritten"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    event.refresh_from_db()
    assert event.reason == "first"


def test_timeline_event_cannot_be_updated_or_deleted_in_raw_sql():
    event = TaskEventFactory()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE queues_taskevent SET reason = 'x' WHERE id = %s", [event.pk])
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM queues_taskevent WHERE id = %s", [event.pk])
    assert TaskEvent.objects.filter(pk=event.pk).exists()


def test_a_task_with_a_timeline_cannot_be_deleted():
    event = TaskEventFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        event.task.delete()
    assert Task.objects.filter(pk=event.task_id).exists()


def test_patient_initials_for_lists():
    assert TaskFactory.build(patient_name="Maria de la Cruz").patient_initials == "MDL"
    assert TaskFactory.build(patient_name="").patient_initials == ""
