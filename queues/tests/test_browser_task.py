"""The Task page in a real browser: hold, resume and resolve a task; keyboard shortcuts;
another department's task stays out of sight."""

import re
from datetime import date, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from clinicdesk.tests.browser import login, screenshot
from queues import services as queues_services
from queues.tests.test_task_page import FAST_HASHERS, build_clinic, submit

pytestmark = pytest.mark.browser


@pytest.fixture
def clinic(settings, live_server):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    return build_clinic()


@pytest.fixture
def denial(clinic):
    task = submit(
        "Claim denied for March 14 visit — CO-197 no prior authorization",
        "Hello,\n\nI received a letter from Blue Harbor Health saying the claim for my visit on "
        "March 14 was denied because no prior authorization was on file. The referral was "
        "sent by Dr. Okafor's office. Could you please look into this and appeal if needed?\n\n"
        "Thank you,\nJordan Rivera",
        patient_mrn="MRN-204611",
        patient_name="Jordan M. Rivera",
        patient_birth_date=date(1984, 3, 12),
        received_at=timezone.now() - timedelta(hours=2, minutes=14),
    )
    queues_services.task_comment(
        task_id=task.pk,
        actor=clinic["carla"],
        text="Patient called the front desk too; prefers a call back after 3 pm.",
    )
    return task


def task_url(live_server, task) -> str:
    return f"{live_server.url}/tasks/{task.pk}/"


def test_agent_holds_resumes_and_resolves_a_task(live_server, page, clinic, denial):
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    login(page, live_server, "alice", PASSWORD)
    page.goto(task_url(live_server, denial))

    expect(page.get_by_role("heading", level=1)).to_have_text(
        re.compile("Claim denied for March 14")
    )
    patient = page.get_by_role("region", name="Patient")
    expect(patient).to_contain_text("Jordan M. Rivera")
    expect(patient).to_contain_text("MRN-204611")
    timeline = page.get_by_role("region", name="Timeline")
    expect(timeline).to_contain_text("Routed to Appeals by rule 'Appeals need the skill'")
    expect(timeline).to_contain_text("Carla Diaz lacks skill Payer appeals (level 1 of 3)")
    screenshot(page, "task-assigned")

    page.get_by_role("button", name="Hold", exact=True).click()
    reason = page.get_by_label("Waiting for")
    expect(reason).to_be_focused()
    reason.fill("Waiting for the payer's answer")
    page.get_by_role("button", name="Tomorrow 9:00").click()
    expect(page.get_by_label("Follow up on")).to_have_value(re.compile(r"T09:00$"))
    screenshot(page, "task-hold-form")
    page.get_by_role("button", name="Put on hold").click()

    expect(
        page.get_by_role("listitem").filter(has_text="is on hold; it left your load")
    ).to_be_visible()
    expect(page.locator(".task-head")).to_contain_text("On hold")
    expect(timeline).to_contain_text("Put on hold until tomorrow at 9:00 AM")
    screenshot(page, "task-on-hold")

    page.get_by_role("button", name="Resume", exact=True).click()
    expect(page.locator(".task-head")).to_contain_text("In progress")

    page.wait_for_load_state()  # task.js binds the shortcuts once the page has loaded
    page.keyboard.press("r")  # the Resolve shortcut
    outcome = page.get_by_label("Outcome")
    expect(outcome).to_be_focused()
    outcome.select_option("Appeal filed")
    page.get_by_label("Note (optional)").fill("Appeal sent to Blue Harbor with the referral.")
    page.get_by_role("button", name="Resolve task").click()

    expect(page.locator(".task-head")).to_contain_text("Resolved")
    expect(timeline).to_contain_text("Resolved — Appeal filed")
    expect(page.get_by_role("button", name="Reopen", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Hold", exact=True)).to_have_count(0)
    screenshot(page, "task-resolved")
    assert errors == []


def test_hold_shortcut_and_form_errors(live_server, page, clinic, denial):
    login(page, live_server, "alice", PASSWORD)
    page.goto(task_url(live_server, denial))  # waits for the load event

    page.keyboard.press("h")
    expect(page.get_by_label("Waiting for")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#panel-hold")).to_be_hidden()

    page.keyboard.press("h")
    page.get_by_role("button", name="Put on hold").click()  # no reason given
    expect(page.get_by_role("alert").filter(has_text="Hold was not saved")).to_be_visible()
    expect(page.locator("#panel-hold")).to_contain_text("Say what the task is waiting for")
    expect(page.get_by_label("Waiting for")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "task-hold-error")


def test_supervisor_sees_reassign(live_server, page, clinic, denial):
    login(page, live_server, "sam", PASSWORD)
    page.goto(task_url(live_server, denial))
    page.get_by_role("button", name="Reassign", exact=True).click()
    expect(page.get_by_label("Give it to")).to_contain_text("Carla Diaz — 0 of 5 in use, available")
    screenshot(page, "task-supervisor-reassign")


def test_billing_agent_opening_a_triage_task_gets_not_found(live_server, page, clinic):
    triage_task = submit("Call back", "I have chest pain since this morning")
    login(page, live_server, "alice", PASSWORD)
    response = page.goto(task_url(live_server, triage_task))
    assert response.status == 404
    expect(page.locator("body")).not_to_contain_text("chest pain")


def test_a_change_by_someone_else_is_announced_when_the_timeline_refreshes(
    live_server, page, clinic, denial
):
    login(page, live_server, "alice", PASSWORD)
    page.goto(task_url(live_server, denial))
    notice = page.get_by_role("status").filter(has_text="Someone changed this task")
    expect(notice).to_be_hidden()

    queues_services.task_comment(task_id=denial.pk, actor=clinic["sam"], text="Called the payer.")
    page.evaluate("htmx.trigger(document.body, 'refresh-timeline')")

    expect(page.get_by_role("region", name="Timeline")).to_contain_text("Called the payer.")
    expect(notice).to_be_visible()


def test_front_desk_classifies_a_needs_review_task(live_server, page, clinic):
    task = submit("Question about my statement", "Why was I charged twice in April?")
    login(page, live_server, "frank", PASSWORD)
    page.goto(task_url(live_server, task))
    expect(page.get_by_role("region", name="Timeline")).to_contain_text(
        "Sent to Needs review for a person to classify"
    )

    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_label("Task type").select_option(label="Statement question")
    page.get_by_label("Priority").select_option(label="P2 high")
    screenshot(page, "task-classify")
    page.get_by_role("button", name="Classify and route").click()

    # Billing's work now: the front desk lands back on My work, told where it went.
    expect(page.get_by_text(f"Task #{task.pk} classified and routed to Billing.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/work/$"))
