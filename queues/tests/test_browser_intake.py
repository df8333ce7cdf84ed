"""The front-desk form in a real browser: the fields a type needs appear when it is chosen
(htmx), keep what was typed, and a submission made from the keyboard becomes a task."""

import re

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from clinicdesk.tests.browser import login, screenshot
from queues.models import InboundMessage, Task
from queues.tests.desk_support import build_desk_clinic

pytestmark = pytest.mark.browser


@pytest.fixture
def clinic(live_server):
    return build_desk_clinic()


def test_the_types_required_fields_appear_and_a_keyboard_submission_becomes_a_task(
    live_server, page, clinic
):
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    login(page, live_server, "maria", PASSWORD)
    page.goto(f"{live_server.url}/intake/new/")
    expect(page.get_by_role("heading", name="Log a walk-in or call", level=1)).to_be_visible()
    page.get_by_label("Phone call").check()
    page.get_by_label("Patient name").fill("Jordan Avery")
    expect(page.get_by_role("group", name=re.compile("Needed for"))).to_have_count(0)

    type_select = page.get_by_label("Task type")
    type_select.focus()
    with page.expect_response(re.compile(r"/intake/new/fields/")):
        page.keyboard.press("p")  # type-ahead in the closed list: Prior authorization request

    needed = page.get_by_role("group", name="Needed for prior authorization request")
    expect(needed).to_be_visible()
    expect(needed.get_by_role("textbox")).to_have_count(3)
    expect(needed.get_by_label(re.compile("Payer"))).to_have_attribute("aria-required", "true")
    expect(page.get_by_label("Patient name")).to_have_value("Jordan Avery")  # kept
    expect(page.locator("#fields-status")).to_contain_text(
        "needs: patient mrn, payer, referring provider"
    )
    expect(type_select).to_be_focused()  # the swap does not steal the keyboard's place
    screenshot(page, "intake-new")

    # From the keyboard: Tab out of the type, type into fields, press Enter to submit.
    page.get_by_label("What do they need?").focus()
    page.keyboard.type("MRI of the left knee needs authorization")
    page.get_by_label(re.compile("Patient MRN")).focus()
    page.keyboard.type("MRN-20417")
    page.get_by_label(re.compile("Referring provider")).focus()
    page.keyboard.type("Dr. Okafor")
    page.keyboard.press("Enter")

    expect(page.get_by_role("alert")).to_contain_text(
        "A prior authorization request needs the payer: add the patient's insurer."
    )
    assert not Task.objects.exists() and not InboundMessage.objects.exists()
    page.get_by_role("link", name="Payer").click()  # the error summary leads to the field
    expect(page.get_by_label(re.compile("^Payer"))).to_be_focused()
    page.keyboard.type("Aetna")
    page.keyboard.press("Enter")

    expect(
        page.get_by_text(re.compile(r"Logged as task #\d+: Prior authorization request"))
    ).to_be_visible()
    task = Task.objects.get()
    assert task.channel == "phone" and task.queue == clinic["auth_queue"]
    assert task.patient_name == "Jordan Avery"
    assert InboundMessage.objects.get().task == task
    assert errors == []
