from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import DepartmentFactory, StaffProfileFactory, UserFactory
from escalation.models import TaskSla
from escalation.templatetags.escalation_sla import sla_badge, sla_state
from queues.models import Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

RECEIVED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CLAIM_DUE = RECEIVED + timedelta(hours=4)
RESOLVE_DUE = RECEIVED + timedelta(hours=24)


def task(**kwargs) -> Task:
    """A task in memory: the filter reads fields only, so no database is needed."""
    fields = {
        "status": Task.Status.QUEUED,
        "received_at": RECEIVED,
        "claim_due_at": CLAIM_DUE,
        "resolve_due_at": RESOLVE_DUE,
        **kwargs,
    }
    return Task(pk=7, subject="Claim denied", **fields)


def test_unclaimed_task_watches_the_first_claim_target_and_is_on_time():
    now = RECEIVED + timedelta(hours=1, minutes=50)
    state = sla_state(task(), now)
    assert (state.state, state.target, state.words) == ("on-time", "First claim", "2 h 10 min left")
    badge = sla_badge(task(), now)
    assert 'class="badge badge--sla badge--on-time"' in badge
    assert "On time · 2 h 10 min left" in badge
    assert '<span class="visually-hidden">SLA first claim: </span>' in badge


def test_less_than_a_quarter_of_the_target_left_is_at_risk():
    now = CLAIM_DUE - timedelta(minutes=59)  # 59 of 240 minutes left
    assert "At risk · 59 min left" in sla_badge(task(), now)
    assert sla_state(task(), CLAIM_DUE - timedelta(minutes=61)).state == "on-time"


def test_a_task_the_sweep_marked_at_risk_is_at_risk_however_much_time_is_left():
    marked = task()
    TaskSla(task=marked, at_risk=True, task_version=1, computed_at=RECEIVED)
    assert sla_state(marked, RECEIVED + timedelta(minutes=5)).state == "at-risk"


def test_past_the_due_time_is_breached_with_how_long_overdue():
    now = CLAIM_DUE + timedelta(minutes=35)
    badge = sla_badge(task(), now)
    assert "badge--breached" in badge
    assert "Breached · overdue by 35 min" in badge


def test_once_claimed_the_resolution_target_is_watched():
    claimed = task(status=Task.Status.IN_PROGRESS, first_claimed_at=RECEIVED)
    state = sla_state(claimed, CLAIM_DUE + timedelta(hours=1))
    assert (state.target, state.state, state.words) == ("Resolution", "on-time", "19 h left")


@pytest.mark.parametrize("status", [Task.Status.RESOLVED, Task.Status.DUPLICATE])
def test_a_closed_task_has_no_badge(status):
    assert sla_badge(task(status=status), CLAIM_DUE + timedelta(days=3)) == ""


def test_a_task_without_due_times_has_no_badge():
    assert sla_badge(task(claim_due_at=None, resolve_due_at=None), RECEIVED) == ""
    claimed_without_resolution = task(first_claimed_at=RECEIVED, resolve_due_at=None)
    assert sla_badge(claimed_without_resolution, RECEIVED) == ""


# --- on the pages ----------------------------------------------------------------------------


@pytest.fixture
def clinic(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    billing = DepartmentFactory(name="Billing", code="billing")
    claims = QueueFactory(department=billing, name="Claims", code="claims")
    alice = StaffProfileFactory(
        user=UserFactory(username="alice", roles=["Agent"]), departments=[billing], capacity=50
    ).user
    return {"claims": claims, "alice": alice, "type": TaskTypeFactory(default_queue=claims)}


def _due_tasks(clinic, count):
    """`count` of alice's tasks with the resolution breached, and as many at risk by the
    sweep's mark; each is on My work, on the queue page and has its own task page."""
    now = timezone.now()
    made = []
    for n in range(2 * count):
        made.append(
            TaskFactory(
                task_type=clinic["type"],
                status=Task.Status.IN_PROGRESS,
                assignee=clinic["alice"],
                received_at=now - timedelta(hours=5),
                first_claimed_at=now - timedelta(hours=4),
                resolve_due_at=now - timedelta(hours=1) if n < count else now + timedelta(hours=3),
            )
        )
    TaskSla.objects.bulk_create(
        TaskSla(task=t, task_version=t.version, at_risk=True, computed_at=now) for t in made[count:]
    )
    return made


@pytest.mark.parametrize("count", [2, 10])
def test_my_work_shows_each_rows_badge_in_the_same_queries(
    client, clinic, django_assert_num_queries, count
):
    _due_tasks(clinic, count)
    client.force_login(clinic["alice"])
    # as pinned in queues/tests/test_work_page.py: the badge adds no query
    with django_assert_num_queries(8):
        page = client.get(reverse("queues:my_work")).content.decode()
    assert page.count("Breached · overdue by 1 h") == count
    assert page.count("At risk · ") == count


@pytest.mark.parametrize("count", [2, 10])
def test_the_queue_page_shows_each_rows_badge_in_the_same_queries(
    client, clinic, django_assert_num_queries, count
):
    _due_tasks(clinic, count)
    client.force_login(clinic["alice"])
    url = reverse("queues:queue", args=[clinic["claims"].pk])
    # session, user, queue, rows, total, types to filter by; session activity time (3)
    with django_assert_num_queries(9):
        page = client.get(url).content.decode()
    assert page.count("Breached · overdue by 1 h") == count
    assert page.count("At risk · ") == count


def test_the_task_page_header_shows_the_badge(client, clinic):
    # its query count stays pinned by queues/tests/test_task_page.py: "sla" joins the task
    breached, at_risk = _due_tasks(clinic, 1)
    client.force_login(clinic["alice"])
    page = client.get(reverse("queues:task", args=[breached.pk])).content.decode()
    head = page.split('class="task-head__badges"', 1)[1].split("</div>", 1)[0]
    assert "Breached · overdue by 1 h" in head
    page = client.get(reverse("queues:task", args=[at_risk.pk])).content.decode()
    head = page.split('class="task-head__badges"', 1)[1].split("</div>", 1)[0]
    assert "At risk · " in head
    assert " left</span>" in head


@pytest.mark.django_db
def test_a_policy_on_clinic_hours_counts_the_time_left_in_clinic_hours():
    """Due at 10:00 on a weekday, seen at 19:00 the evening before: two clinic hours are left
    (not fifteen), and the at-risk quarter is counted the same way."""
    from zoneinfo import ZoneInfo

    from escalation.tests.factories import BusinessCalendarFactory, SlaPolicyFactory

    new_york = ZoneInfo("America/New_York")
    calendar = BusinessCalendarFactory(
        time_zone="America/New_York",
        hours={str(day): [["08:00", "17:00"]] for day in range(5)},
        country="",
    )
    policy = SlaPolicyFactory(calendar=calendar, first_claim_minutes=240)
    received = datetime(2026, 3, 2, 15, 0, tzinfo=new_york)  # Monday 3 p.m.
    due = datetime(2026, 3, 3, 10, 0, tzinfo=new_york)  # 2 h on Monday, 2 h on Tuesday
    made = TaskFactory(received_at=received, claim_due_at=due)
    TaskSla.objects.create(task=made, policy=policy, task_version=1, computed_at=received)
    seen = Task.objects.select_related("sla__policy__calendar").get(pk=made.pk)

    evening = datetime(2026, 3, 2, 19, 0, tzinfo=new_york)
    state = sla_state(seen, evening)
    assert (state.state, state.words, state.clock) == ("on-time", "2 h left", "clinic hours")
    badge = sla_badge(seen, evening)
    assert "On time · 2 h left" in badge
    assert "counted in clinic hours" in badge  # in the tooltip and for screen readers
    # 50 minutes of clinic time left of 240: under a quarter, at risk.
    assert sla_state(seen, datetime(2026, 3, 3, 9, 10, tzinfo=new_york)).state == "at-risk"
    late = sla_state(seen, datetime(2026, 3, 3, 17, 30, tzinfo=new_york))
    assert (late.state, late.words) == ("breached", "overdue by 7 h")


@pytest.mark.django_db
def test_without_the_calendar_fetched_the_badge_runs_no_query(django_assert_num_queries):
    from escalation.tests.factories import BusinessCalendarFactory, SlaPolicyFactory

    policy = SlaPolicyFactory(calendar=BusinessCalendarFactory(country=""))
    made = TaskFactory(received_at=RECEIVED, claim_due_at=CLAIM_DUE)
    TaskSla.objects.create(task=made, policy=policy, task_version=1, computed_at=RECEIVED)
    seen = Task.objects.select_related("sla").get(pk=made.pk)
    with django_assert_num_queries(0):
        words = sla_state(seen, RECEIVED + timedelta(hours=1, minutes=50)).words
    assert words == "2 h 10 min left"  # wall-clock, as before
