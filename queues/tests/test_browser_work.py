"""The work pages in a real browser: Next task by button and by key, a queue that refreshes
itself, a supervisor's bulk reassignment surviving a refresh, and Holding."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import StaffProfile
from accounts.tests.factories import (
    PASSWORD,
    DepartmentFactory,
    StaffProfileFactory,
    UserFactory,
)
from clinicdesk.tests.browser import login, screenshot
from queues.models import Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory
from routing.tests.factories import RuleSetFactory

pytestmark = pytest.mark.browser

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

WAITING = [
    # subject, patient, priority, hours ago, type
    ("Insurance card update: new Aetna plan from July", "Jordan M. Rivera", 3, 26, "coverage"),
    ("Patient cannot log in to the portal", "Amelia Chen", 3, 5, "portal"),
    ("Same-day appointment request, fever since yesterday", "Noah Patel", 1, 1, "visit"),
    ("Update home address and phone number", "Grace O'Neil", 4, 50, "registration"),
    ("Walk-in asks for a copy of the visit summary", "Liam Brooks", 2, 8, "visit"),
    ("Eligibility check before Thursday's physical", "Sofia Martinez", 2, 3, "coverage"),
]


def aged(task, hours):
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(hours=hours))
    return task


@pytest.fixture
def clinic(settings, live_server):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    RuleSetFactory()
    front_desk = DepartmentFactory(name="Front desk", code="front-desk")
    queue = QueueFactory(
        department=front_desk,
        name="Front desk",
        code="front-desk",
        description="Check-in, registration, insurance cards, portal help and phone calls.",
    )
    QueueFactory(department=DepartmentFactory(name="Billing"), name="Claims follow-up")
    types = {
        code: TaskTypeFactory(code=code, name=name, default_queue=queue)
        for code, name in [
            ("coverage", "Eligibility verification"),
            ("portal", "Portal help"),
            ("visit", "Visit request"),
            ("registration", "Registration change"),
        ]
    }
    maria = StaffProfileFactory(
        user=UserFactory(
            username="maria", first_name="Maria", last_name="Alvarez", roles=["Agent"]
        ),
        departments=[front_desk],
        capacity=6,
    ).user
    kevin = StaffProfileFactory(
        user=UserFactory(username="kevin", first_name="Kevin", last_name="Nguyen", roles=["Agent"]),
        departments=[front_desk],
        capacity=5,
    ).user
    angela = StaffProfileFactory(
        user=UserFactory(
            username="angela", first_name="Angela", last_name="Foster", roles=["Supervisor"]
        ),
        departments=[front_desk],
        capacity=3,
    ).user
    StaffProfile.objects.filter(user__in=[maria, kevin]).update(active_load=1)
    waiting = {}
    for subject, patient, priority, hours, code in WAITING:
        task = TaskFactory(
            task_type=types[code],
            subject=subject,
            patient_name=patient,
            priority=priority,
            status=Task.Status.QUEUED,
            waiting_for_capacity=priority == 4,
        )
        waiting[subject] = aged(task, hours)
    mine = aged(
        TaskFactory(
            task_type=types["coverage"],
            subject="Verify Medicaid coverage for new patient",
            patient_name="Ava Thompson",
            priority=2,
            status=Task.Status.IN_PROGRESS,
            assignee=maria,
        ),
        2,
    )
    aged(
        TaskFactory(
            task_type=types["registration"],
            subject="Scan and attach updated photo ID",
            patient_name="Ethan Walker",
            priority=3,
            status=Task.Status.ASSIGNED,
            assignee=kevin,
        ),
        4,
    )
    now = timezone.now()
    for subject, patient, holder, follow_up, reason in [
        (
            "Waiting for the employer's insurance letter",
            "Mia Johnson",
            maria,
            now + timedelta(hours=3),
            "Patient to send the employer letter",
        ),
        (
            "Guardian consent form for a minor",
            "Lucas Kim",
            kevin,
            now - timedelta(minutes=4),
            "Guardian to sign the consent form",
        ),
        (
            "Prior-visit records from Riverside Urgent Care",
            "Isabella Garcia",
            maria,
            now + timedelta(days=2),
            "Urgent care to fax the records",
        ),
    ]:
        aged(
            TaskFactory(
                task_type=types["registration"],
                subject=subject,
                patient_name=patient,
                status=Task.Status.ON_HOLD,
                assignee=holder,
                follow_up_at=follow_up,
                hold_reason=reason,
            ),
            30,
        )
    return {
        "queue": queue,
        "types": types,
        "maria": maria,
        "kevin": kevin,
        "angela": angela,
        "waiting": waiting,
        "mine": mine,
    }


def test_agent_takes_the_next_task_by_button_and_by_the_n_key(live_server, page, clinic):
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    login(page, live_server, "maria", PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My work").click()

    expect(page.get_by_role("heading", name="My work", level=1)).to_be_visible()
    expect(page.get_by_role("group", name="Availability")).to_be_visible()
    expect(page.get_by_role("button", name="Available")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_text("1 of 6 units in use")).to_be_visible()
    active = page.get_by_role("table", name=re.compile("My assigned and in-progress tasks"))
    expect(active.get_by_role("row", name=re.compile("Verify Medicaid coverage"))).to_be_visible()
    held = page.get_by_role("table", name=re.compile("My tasks on hold"))
    expect(held.get_by_role("row")).to_have_count(3)  # header and two of mine
    expect(page.get_by_text("Ava Thompson")).to_have_count(0)
    expect(page.get_by_text("Scan and attach updated photo ID")).to_have_count(0)
    screenshot(page, "my-work")

    page.get_by_role("button", name="Next task").click()

    urgent = clinic["waiting"]["Same-day appointment request, fever since yesterday"]
    expect(page).to_have_url(f"{live_server.url}/tasks/{urgent.pk}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Same-day appointment request")

    page.goto(f"{live_server.url}/work/")
    page.keyboard.press("n")

    walk_in = clinic["waiting"]["Walk-in asks for a copy of the visit summary"]
    expect(page).to_have_url(f"{live_server.url}/tasks/{walk_in.pk}/")
    assert Task.objects.filter(assignee=clinic["maria"], status="assigned").count() == 2
    assert errors == []


def test_j_k_and_enter_open_a_task_but_typing_is_left_alone(live_server, page, clinic):
    login(page, live_server, "maria", PASSWORD)
    page.goto(f"{live_server.url}/queues/{clinic['queue'].pk}/")
    rows = page.locator("[data-keyboard-list] tbody tr")

    for key in "jjk":
        page.keyboard.press(key)
    expect(rows.nth(0)).to_have_class(re.compile("is-selected"))
    page.keyboard.press("j")
    expect(rows.nth(1)).to_have_class(re.compile("is-selected"))
    expect(rows.nth(1).get_by_role("link")).to_be_focused()
    second = rows.nth(1).get_attribute("data-task-id")

    page.get_by_label("Sort by").focus()
    page.keyboard.press("n")  # typing in a field: no Next task
    page.keyboard.press("j")
    expect(page).to_have_url(re.compile(r"/queues/\d+/$"))
    expect(rows.nth(1)).to_have_class(re.compile("is-selected"))

    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server.url}/tasks/{second}/")


def test_the_queue_lists_its_tasks_and_refreshes_itself(live_server, page, clinic):
    login(page, live_server, "maria", PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Queues").click()
    expect(page.get_by_role("row", name=re.compile("Claims follow-up"))).to_have_count(0)
    expect(page.get_by_role("row", name=re.compile("Front desk"))).to_contain_text("11")
    screenshot(page, "queue-list")
    page.get_by_role("link", name="Front desk", exact=True).click()

    expect(page.get_by_role("heading", name="Front desk", level=1)).to_be_visible()
    table = page.get_by_role("table", name=re.compile("Tasks of Front desk"))
    expect(table.locator("tbody tr")).to_have_count(11)  # the open tasks, on hold included
    first = table.locator("tbody tr").first
    expect(first).to_contain_text("Same-day appointment request")
    expect(first).to_contain_text("NP")  # initials only: the patient's name stays on the task
    expect(page.get_by_text("Noah Patel")).to_have_count(0)
    expect(table.get_by_text("Waiting for capacity")).to_have_count(1)
    screenshot(page, "queue")

    with page.expect_request(re.compile(r"/rows/"), timeout=15_000) as poll:
        TaskFactory(
            task_type=clinic["types"]["portal"],
            subject="Portal message: question about a bill",
            patient_name="Henry Lopez",
            priority=1,
            status=Task.Status.QUEUED,
        )
    assert poll.value.headers.get("x-idle-poll") == "1"
    expect(table.get_by_role("row", name=re.compile("question about a bill"))).to_be_visible(
        timeout=15_000
    )

    page.get_by_label("Priority").select_option("1")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"priority=1"))
    expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)
    with page.expect_request(re.compile(r"/rows/\?.*priority=1"), timeout=15_000):
        pass
    expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)


def test_supervisor_picks_rows_that_survive_a_refresh_and_reassigns_them(live_server, page, clinic):
    login(page, live_server, "angela", PASSWORD)
    page.goto(f"{live_server.url}/queues/{clinic['queue'].pk}/?sort=age")
    portal = clinic["waiting"]["Patient cannot log in to the portal"]
    card = clinic["waiting"]["Insurance card update: new Aetna plan from July"]

    page.get_by_label(f"Select task #{portal.pk}").check()
    page.get_by_label(f"Select task #{card.pk}").check()
    expect(page.get_by_text("2 tasks selected")).to_be_visible()
    with page.expect_response(re.compile(r"/rows/"), timeout=15_000):
        pass
    page.wait_for_timeout(300)
    expect(page.get_by_label(f"Select task #{portal.pk}")).to_be_checked()
    expect(page.get_by_label(f"Select task #{card.pk}")).to_be_checked()
    page.get_by_label("To", exact=True).select_option(str(clinic["kevin"].pk))
    page.get_by_label("Reason").fill("Kevin handles portal and insurance questions today")
    screenshot(page, "queue-supervisor")

    page.get_by_role("button", name="Reassign selected").click()

    expect(page).to_have_url(re.compile(r"/queues/\d+/\?sort=age$"))
    expect(page.get_by_text(re.compile(r"Reassigned 2 tasks .* to Kevin Nguyen\."))).to_be_visible()
    assert set(Task.objects.filter(assignee=clinic["kevin"], status="assigned")) >= {portal, card}


def test_holding_shows_follow_ups_and_marks_the_overdue(live_server, page, clinic):
    login(page, live_server, "maria", PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Holding").click()

    expect(page.get_by_role("heading", name="Holding", level=1)).to_be_visible()
    table = page.get_by_role("table", name=re.compile("Tasks on hold"))
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("Guardian consent form")
    expect(rows.first).to_have_class(re.compile("is-overdue"))
    expect(rows.first).to_contain_text("Follow-up due")
    expect(rows.nth(1)).to_contain_text("Patient to send the employer letter")
    screenshot(page, "holding")

    page.get_by_label("Show").select_option("mine")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(2)
