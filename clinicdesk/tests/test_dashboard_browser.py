"""The dashboard's charts draw in a real browser, from the page's JSON, without errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from clinicdesk.tests.browser import login, screenshot
from clinicdesk.tests.test_dashboard_support import Clinic, event
from queues.models import Task

pytestmark = pytest.mark.browser


def test_supervisor_sees_the_charts_drawn(live_server, page):
    clinic = Clinic()
    created = timezone.now() - timedelta(days=2)
    for minutes in (5, 25, 50):
        task = clinic.task(
            created=created,
            status=Task.Status.RESOLVED,
            priority=1,
            first_assigned_at=created + timedelta(minutes=minutes),
        )
        event(task, "held", created + timedelta(hours=1), reason="Waiting for the payer's answer")
        event(task, "resumed", created + timedelta(hours=2))
    clinic.task(created=timezone.now() - timedelta(hours=2))
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    login(page, live_server, "sam", PASSWORD)
    page.goto(f"{live_server.url}/dashboard/")

    expect(page.get_by_role("heading", name="Operations dashboard", level=1)).to_be_visible()
    for name in ("queue_age", "load", "backlog", "demand_types", "holding"):
        expect(page.locator(f'canvas[data-chart="{name}"]')).to_have_attribute("data-drawn", "true")
    # Chart.js drew pixels: the canvas has a backing store of the chart's size.
    width = page.locator('canvas[data-chart="queue_age"]').evaluate("c => c.width")
    assert width > 100
    screenshot(page, "dashboard")
    assert errors == []
