import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import Schedule

from accounts.models import StaffProfile
from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing.jobs import resume_due_follow_ups
from routing.tests.factories import RuleSetFactory


@pytest.fixture
def clinic(db):
    billing = DepartmentFactory(name="Billing", code="billing")
    claims = QueueFactory(department=billing, name="Claims", code="claims")
    RuleSetFactory()
    return {"billing": billing, "claims": claims, "type": TaskTypeFactory(default_queue=claims)}


def agent(clinic, username, **kwargs):
    return StaffProfileFactory(
        user=UserFactory(username=username), departments=[clinic["billing"]], **kwargs
    ).user


def on_hold(clinic, holder=None, minutes=-5, **kwargs):
    kwargs.setdefault("follow_up_at", timezone.now() + timedelta(minutes=minutes))
    return TaskFactory(
        task_type=clinic["type"],
        status=Task.Status.ON_HOLD,
        assignee=holder,
        hold_reason="Waiting for the payer",
        **kwargs,
    )


@pytest.mark.django_db
def test_due_follow_ups_come_back_to_their_holder_and_others_wait(clinic):
    ana = agent(clinic, "ana")
    due = on_hold(clinic, ana, minutes=-5)
    not_yet = on_hold(clinic, ana, minutes=30)
    no_time = on_hold(clinic, ana, follow_up_at=None)

    assert resume_due_follow_ups() == 1

    due.refresh_from_db()
    assert due.status == Task.Status.IN_PROGRESS
    assert due.assignee == ana
    assert due.follow_up_at is None and due.hold_reason == ""
    event = due.events.get(kind=TaskEvent.Kind.RESUMED)
    assert event.actor is None and event.actor_label == "system:follow_up"
    assert StaffProfile.objects.get(user=ana).active_load == 1
    for task in (not_yet, no_time):
        task.refresh_from_db()
        assert task.status == Task.Status.ON_HOLD


@pytest.mark.django_db
def test_a_holder_without_room_gives_the_task_back_to_be_offered_again(clinic):
    ana = agent(clinic, "ana", capacity=1)
    ben = agent(clinic, "ben")
    StaffProfile.objects.filter(user=ana).update(active_load=1)
    due = on_hold(clinic, ana)

    assert resume_due_follow_ups() == 1

    due.refresh_from_db()
    assert due.assignee == ben
    assert due.status == Task.Status.ASSIGNED
    assert "no room" in due.events.get(kind=TaskEvent.Kind.RESUMED).reason


@pytest.mark.django_db
def test_a_run_takes_a_bounded_batch_oldest_follow_up_first_and_a_rerun_does_nothing_twice(
    clinic,
):
    ana = agent(clinic, "ana", capacity=10)
    third = on_hold(clinic, ana, minutes=-1)
    first = on_hold(clinic, ana, minutes=-30)
    second = on_hold(clinic, ana, minutes=-10)

    assert resume_due_follow_ups(limit=2) == 2
    assert set(Task.objects.filter(status="in_progress").values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
    assert resume_due_follow_ups(limit=2) == 1
    assert resume_due_follow_ups(limit=2) == 0

    third.refresh_from_db()
    assert third.status == Task.Status.IN_PROGRESS
    assert TaskEvent.objects.filter(kind=TaskEvent.Kind.RESUMED).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_task_locked_elsewhere_is_skipped_not_waited_for(clinic):
    ana = agent(clinic, "ana")
    busy, free = on_hold(clinic, ana), on_hold(clinic, ana)
    locked, release = threading.Event(), threading.Event()

    def someone_else_holds_the_row():
        try:
            with transaction.atomic():
                Task.objects.select_for_update().get(pk=busy.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=someone_else_holds_the_row)
    thread.start()
    try:
        assert locked.wait(10)
        assert resume_due_follow_ups() == 1
    finally:
        release.set()
        thread.join()

    free.refresh_from_db()
    busy.refresh_from_db()
    assert free.status == Task.Status.IN_PROGRESS
    assert busy.status == Task.Status.ON_HOLD
    assert resume_due_follow_ups() == 1


@pytest.mark.django_db
def test_setup_schedules_twice_declares_one_schedule_every_minute():
    call_command("setup_schedules")
    call_command("setup_schedules")

    schedule = Schedule.objects.get(name="resume-due-follow-ups")
    assert schedule.func == "routing.jobs.resume_due_follow_ups"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1


@pytest.mark.django_db
def test_setup_schedules_repairs_an_edited_schedule_and_drops_duplicates():
    Schedule.objects.create(
        name="resume-due-follow-ups", func="routing.jobs.resume_due_follow_ups", minutes=5
    )
    Schedule.objects.create(name="resume-due-follow-ups", func="somewhere.else")

    call_command("setup_schedules")

    schedule = Schedule.objects.get(name="resume-due-follow-ups")
    assert (schedule.schedule_type, schedule.minutes) == (Schedule.MINUTES, 1)
