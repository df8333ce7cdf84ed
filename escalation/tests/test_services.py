from datetime import UTC, date, datetime, timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escalation import services
from escalation.models import TaskSla
from escalation.tests.factories import (
    BusinessCalendarFactory,
    CalendarClosureFactory,
    EscalationStepFactory,
    SlaPolicyFactory,
)
from queues.models import Task, TaskEvent
from queues.tests.factories import QueueFactory, TaskEventFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.django_db

# Friday 6 March 2026, 16:00 in New York (EST); US daylight saving starts on Sunday the 8th.
FRIDAY_4PM_NY = datetime(2026, 3, 6, 21, 0, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def event_at(task, kind, at):
    with mock.patch("django.utils.timezone.now", return_value=at):
        return TaskEventFactory(task=task, kind=kind)


def test_wall_clock_policy_counts_every_minute_from_receipt():
    SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=240)
    task = TaskFactory(received_at=utc(2026, 3, 7, 22, 30))  # a Saturday night

    task = services.task_compute_due(task_id=task.pk, now=utc(2026, 3, 7, 22, 31))

    assert task.claim_due_at == utc(2026, 3, 7, 23, 30)
    assert task.resolve_due_at == utc(2026, 3, 8, 2, 30)


def test_business_hours_skip_the_weekend_and_follow_daylight_saving():
    SlaPolicyFactory(
        calendar=BusinessCalendarFactory(), first_claim_minutes=120, resolution_minutes=None
    )
    task = TaskFactory(received_at=FRIDAY_4PM_NY)

    task = services.task_compute_due(task_id=task.pk, now=FRIDAY_4PM_NY)

    # One hour on Friday, one on Monday from 09:00, which is now EDT (UTC-4).
    assert task.claim_due_at == utc(2026, 3, 9, 14, 0)
    assert task.resolve_due_at is None


def test_a_local_closure_and_a_public_holiday_are_not_business_time():
    calendar = BusinessCalendarFactory(country="US")
    CalendarClosureFactory(calendar=calendar, date=date(2026, 3, 9))
    SlaPolicyFactory(calendar=calendar, first_claim_minutes=120, resolution_minutes=None)
    friday = TaskFactory(received_at=FRIDAY_4PM_NY)
    # Thursday 2 July 2026, 16:00 EDT; Friday 3 July is Independence Day observed.
    before_holiday = TaskFactory(received_at=utc(2026, 7, 2, 20, 0))

    services.recompute_due_for_tasks(
        task_ids=[friday.pk, before_holiday.pk], now=utc(2026, 7, 2, 20, 0)
    )

    assert Task.objects.get(pk=friday.pk).claim_due_at == utc(2026, 3, 10, 14, 0)
    assert Task.objects.get(pk=before_holiday.pk).claim_due_at == utc(2026, 7, 6, 14, 0)


def test_first_matching_policy_by_order_applies_and_empty_conditions_match_anything():
    billing = QueueFactory()
    denial = TaskTypeFactory(default_queue=billing)
    SlaPolicyFactory(name="Inactive", order=1, is_active=False, first_claim_minutes=1)
    SlaPolicyFactory(name="Urgent", order=2, priorities=[1], first_claim_minutes=15)
    SlaPolicyFactory(name="Denials", order=3, task_types=[denial], first_claim_minutes=30)
    SlaPolicyFactory(name="Billing", order=4, queues=[billing], first_claim_minutes=45)
    SlaPolicyFactory(name="Default", order=5, first_claim_minutes=90)
    received = utc(2026, 3, 2, 15, 0)
    urgent_denial = TaskFactory(task_type=denial, priority=1, received_at=received)
    denial_task = TaskFactory(task_type=denial, priority=3, received_at=received)
    other_in_billing = TaskFactory(task_type=TaskTypeFactory(), queue=billing, received_at=received)
    elsewhere = TaskFactory(received_at=received)
    tasks = [urgent_denial, denial_task, other_in_billing, elsewhere]

    services.recompute_due_for_tasks(task_ids=[t.pk for t in tasks], now=received)

    policies = {
        sla.task_id: sla.policy.name for sla in TaskSla.objects.select_related("policy").all()
    }
    assert [policies[t.pk] for t in tasks] == ["Urgent", "Denials", "Billing", "Default"]
    due = [Task.objects.get(pk=t.pk).claim_due_at - received for t in tasks]
    assert due == [timedelta(minutes=m) for m in (15, 30, 45, 90)]


def test_a_task_no_policy_matches_has_no_due_times():
    SlaPolicyFactory(priorities=[1])
    task = TaskFactory(priority=4, received_at=utc(2026, 3, 2, 15, 0))

    task = services.task_compute_due(task_id=task.pk, now=utc(2026, 3, 2, 15, 0))

    assert (task.claim_due_at, task.resolve_due_at) == (None, None)
    assert task.sla.policy is None
    assert task.sla.next_step_at is None


def test_hold_pauses_the_business_clock_and_resume_gives_the_held_time_back():
    SlaPolicyFactory(calendar=BusinessCalendarFactory(), first_claim_minutes=None)
    # Monday 2 March 2026, 09:00 EST = 14:00 UTC; 240 business minutes → 13:00 EST.
    task = TaskFactory(received_at=utc(2026, 3, 2, 14, 0), status=Task.Status.ON_HOLD)
    # On hold from 10:00 to 11:30 EST: 90 business minutes.
    event_at(task, TaskEvent.Kind.HELD, utc(2026, 3, 2, 15, 0))
    # Overnight while still on hold, nothing can come due.
    held = services.task_compute_due(task_id=task.pk, now=utc(2026, 3, 2, 15, 30))
    assert held.sla.next_step_at is None

    event_at(task, TaskEvent.Kind.RESUMED, utc(2026, 3, 2, 16, 30))
    Task.objects.filter(pk=task.pk).update(status=Task.Status.QUEUED, version=5)
    EscalationStepFactory(policy=held.sla.policy, target="resolution", percent=100)

    resumed = services.task_compute_due(task_id=task.pk, now=utc(2026, 3, 2, 16, 30))

    assert resumed.resolve_due_at == utc(2026, 3, 2, 18, 0) + timedelta(minutes=90)
    assert resumed.sla.next_step_at == resumed.resolve_due_at


def test_a_wall_clock_hold_moves_the_due_time_by_the_held_time():
    SlaPolicyFactory(first_claim_minutes=None, resolution_minutes=60)
    task = TaskFactory(received_at=utc(2026, 3, 2, 10, 0))
    event_at(task, TaskEvent.Kind.HELD, utc(2026, 3, 2, 10, 10))
    event_at(task, TaskEvent.Kind.RESUMED, utc(2026, 3, 2, 10, 35))

    task = services.task_compute_due(task_id=task.pk, now=utc(2026, 3, 2, 11, 0))

    assert task.resolve_due_at == utc(2026, 3, 2, 11, 25)


def test_next_step_time_is_the_earliest_pending_step_and_skips_met_targets():
    policy = SlaPolicyFactory(first_claim_minutes=60, resolution_minutes=240)
    EscalationStepFactory(policy=policy, level=1, target="first_claim", percent=75)
    EscalationStepFactory(
        policy=policy, level=2, target="resolution", when="after_breach", minutes_after=30
    )
    received = utc(2026, 3, 2, 10, 0)
    waiting = TaskFactory(received_at=received)
    claimed = TaskFactory(received_at=received, first_claimed_at=received)
    resolved = TaskFactory(received_at=received, status=Task.Status.RESOLVED)

    services.recompute_due_for_tasks(task_ids=[waiting.pk, claimed.pk, resolved.pk], now=received)

    next_at = dict(TaskSla.objects.values_list("task_id", "next_step_at"))
    assert next_at[waiting.pk] == received + timedelta(minutes=45)
    assert next_at[claimed.pk] == received + timedelta(minutes=270)
    assert next_at[resolved.pk] is None


def test_recompute_is_set_based():
    SlaPolicyFactory(calendar=BusinessCalendarFactory(country="US"))
    tasks = TaskFactory.create_batch(5, received_at=FRIDAY_4PM_NY)
    ids = [t.pk for t in tasks]

    with CaptureQueriesContext(connection) as queries:
        services.recompute_due_for_tasks(task_ids=ids, now=FRIDAY_4PM_NY)
    # tasks, policies (+4 prefetches), holds, escalations, upsert, due times, savepoint pair
    assert len(queries) <= 12
    assert TaskSla.objects.filter(task_id__in=ids).count() == 5


def test_a_calendar_that_never_opens_gives_no_due_times_and_blocks_nothing():
    closed = BusinessCalendarFactory(hours={})
    SlaPolicyFactory(order=1, queues=[queue := QueueFactory()], calendar=closed)
    SlaPolicyFactory(order=2, first_claim_minutes=60)
    stuck = TaskFactory(queue=queue, received_at=FRIDAY_4PM_NY)
    fine = TaskFactory(received_at=FRIDAY_4PM_NY)

    services.recompute_due_for_tasks(task_ids=[stuck.pk, fine.pk], now=FRIDAY_4PM_NY)

    assert Task.objects.get(pk=stuck.pk).claim_due_at is None
    assert Task.objects.get(pk=fine.pk).claim_due_at == FRIDAY_4PM_NY + timedelta(minutes=60)
