from datetime import date, time

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from escalation.models import EscalationStep, clean_hours
from escalation.tests.factories import (
    BusinessCalendarFactory,
    CalendarClosureFactory,
    EscalationStepFactory,
    SlaPolicyFactory,
)
from queues.models import Queue
from queues.tests.factories import QueueFactory, TaskFactory


def test_weekly_hours_become_sorted_intervals_and_midnight_closes_the_day():
    hours = clean_hours({"0": [["13:00", "17:00"], ["08:00", "12:00"]], "5": [["20:00", "00:00"]]})

    assert hours == {
        0: ((time(8), time(12)), (time(13), time(17))),
        5: ((time(20), time(0)),),
    }


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"7": [["08:00", "12:00"]]}, "not a weekday"),
        ({"mon": [["08:00", "12:00"]]}, "not a weekday"),
        ({"0": [["8 am", "12:00"]]}, "HH:MM"),
        ({"0": [["12:00", "08:00"]]}, "must come before"),
        ({"0": [["08:00", "12:00"], ["11:00", "13:00"]]}, "overlap"),
        ([["08:00", "12:00"]], "object"),
    ],
)
def test_bad_weekly_hours_are_refused_with_a_message_that_says_why(hours, message):
    with pytest.raises(ValidationError, match=message):
        clean_hours(hours)


@pytest.mark.django_db
def test_a_calendar_builds_the_pure_calendar_with_closures_and_public_holidays():
    calendar = BusinessCalendarFactory(country="US", subdivision="NY")
    CalendarClosureFactory(calendar=calendar, date=date(2026, 3, 9))

    pure = calendar.as_calendar([2026])

    assert pure.time_zone == "America/New_York"
    assert pure.hours[0] == ((time(9), time(17)),)
    assert 6 not in pure.hours
    assert {date(2026, 3, 9), date(2026, 7, 3), date(2026, 12, 25)} <= pure.closed_dates


@pytest.mark.django_db
def test_an_unknown_country_or_time_zone_is_refused():
    with pytest.raises(ValidationError) as error:
        BusinessCalendarFactory.build(name="x", country="XX", time_zone="Mars/Olympus").full_clean()
    assert {"country", "time_zone"} <= set(error.value.message_dict)


@pytest.mark.django_db
def test_a_step_needs_what_its_action_uses():
    policy = SlaPolicyFactory(first_claim_minutes=None, resolution_minutes=60)
    work_queue = QueueFactory(kind=Queue.Kind.WORK)

    def errors(**fields):
        step = EscalationStep(policy=policy, level=1, **fields)
        with pytest.raises(ValidationError) as error:
            step.full_clean()
        return set(error.value.message_dict)

    assert "address" in errors(target="resolution", action="notify_address")
    assert {"webhook_url", "webhook_secret"} <= errors(target="resolution", action="notify_webhook")
    assert "escalation_queue" in errors(
        target="resolution", action="move_to_escalation_queue", escalation_queue=work_queue
    )
    assert "target" in errors(target="first_claim", action="mark_at_risk")


def test_step_offsets_on_the_policy_clock():
    at_75 = EscalationStep(when="percent", percent=75)
    after = EscalationStep(when="after_breach", minutes_after=30)

    assert at_75.offset_minutes(60) == 45
    assert at_75.offset_minutes(10) == 8  # rounded up, never early
    assert after.offset_minutes(60) == 90


@pytest.mark.django_db
def test_a_policy_needs_a_target():
    with pytest.raises(ValidationError, match="target"):
        SlaPolicyFactory.build(first_claim_minutes=None, resolution_minutes=None).full_clean()


@pytest.mark.django_db
def test_a_step_fires_once_per_task_by_constraint():
    from django.utils import timezone

    from escalation.models import Escalation

    step = EscalationStepFactory()
    task = TaskFactory()
    now = timezone.now()
    Escalation.objects.create(task=task, step=step, level=1, due_at=now, fired_at=now)
    with pytest.raises(IntegrityError):
        Escalation.objects.create(task=task, step=step, level=1, due_at=now, fired_at=now)


@pytest.mark.django_db
def test_a_calendar_that_never_opens_is_refused():
    with pytest.raises(ValidationError) as error:
        BusinessCalendarFactory.build(name="never", hours={}).full_clean()
    assert "hours" in error.value.message_dict
