"""Emergency access in a real browser: another department's task is a 404; from there the
agent gives a reason and reads the task, under a banner, without any action to take."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from clinicdesk.tests.browser import login, screenshot
from queues.models import EmergencyAccess
from queues.tests.test_emergency_access import PATIENT, REASON
from queues.tests.test_emergency_access import clinic as clinic  # the fixture

pytestmark = pytest.mark.browser


def test_an_agent_breaks_the_glass_from_the_404_page(live_server, page, clinic):
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    task = clinic["task"]
    login(page, live_server, "frank", PASSWORD)

    response = page.goto(f"{live_server.url}/tasks/{task.pk}/")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("We could not find that page")
    page.get_by_role("main").get_by_role("link", name="emergency access").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Emergency access")
    expect(page.get_by_label("Task number")).to_have_value(str(task.pk))
    page.get_by_label("Why do you need it now?").fill("urgent")
    page.get_by_role("button", name="Open read-only, and record it").click()
    expect(page.get_by_role("alert")).to_contain_text("in at least 15 characters")
    assert not EmergencyAccess.objects.exists()

    page.get_by_label("Why do you need it now?").fill(REASON)
    page.get_by_role("button", name="Open read-only, and record it").click()

    banner = page.locator("[data-emergency-banner]")
    expect(banner).to_contain_text(re.compile(r"Emergency access — until \d\d:\d\d — recorded"))
    expect(page.get_by_role("region", name="Patient")).to_contain_text(PATIENT)
    expect(page.locator(".read-only")).to_contain_text("Emergency access is read-only")
    expect(page.locator(".action-bar")).to_have_count(0)
    screenshot(page, "task-emergency-access")
    assert EmergencyAccess.objects.get().task == task
    assert errors == []
