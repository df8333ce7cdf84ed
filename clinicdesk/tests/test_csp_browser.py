"""Every page runs under the Content-Security-Policy in a real browser without one violation:
no inline script, no inline style, nothing from another origin. One browser session per role
walks the pages that role uses, doing the things that run our scripts (htmx swaps, Chart.js,
the task page's panels, Swagger UI), and fails on any violation the browser reports."""

from __future__ import annotations

import re

import pytest
from django.urls import include, path
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD, UserFactory
from clinicdesk.roles import MANAGER
from clinicdesk.tests.browser import login
from queues.tests.test_task_page import build_clinic, submit

pytestmark = pytest.mark.browser


def _broken_view(request):
    raise RuntimeError("a deliberate failure, to show the 500 page")


# The site's own URLs plus one view that fails, so that the 500 page is seen in the browser.
urlpatterns = [
    path("broken/", _broken_view),
    path("", include("clinicdesk.urls")),
]

# Reported through an exposed function, so that a violation on a page the test has already
# left is still counted. Playwright adds this script itself; the page's policy does not apply.
LISTEN = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} on ${event.documentURI}`
  );
});
"""

# What an htmx poll does when its time comes, without waiting for it.
REFRESH = """(selector) => {
  const element = document.querySelector(selector);
  return htmx.ajax("GET", element.getAttribute("hx-get"),
                   {source: element, target: element, swap: "outerHTML"});
}"""


def watch(page) -> list[str]:
    """Every CSP violation the browser reports from now on: the DOM event and the console line."""
    violations: list[str] = []

    def report(text: str) -> None:
        violations.append(text)

    page.expose_function("reportCspViolation", report)
    page.add_init_script(LISTEN)
    page.on(
        "console",
        lambda message: report(message.text) if "Content Security Policy" in message.text else None,
    )
    return violations


def directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {name: sources for name, *sources in parts}


def visit(page, url: str):
    """Open a page and check that it was served under the strict policy: without the header
    the browser would report nothing and the test would pass for nothing."""
    response = page.goto(url)
    policy = directives(response.headers.get("content-security-policy", ""))
    assert policy.get("script-src") == ["'self'"], (url, policy)
    assert policy.get("style-src") == ["'self'"], (url, policy)
    return response


@pytest.fixture
def clinic(live_server, settings):
    settings.ROOT_URLCONF = __name__
    people = build_clinic()
    people["task"] = submit(
        "Claim denied for March 14 visit — CO-197 no prior authorization",
        "The claim for my visit was denied; please appeal.",
    )
    people["mia"] = UserFactory(
        username="mia", first_name="Mia", last_name="Wong", is_staff=True, roles=[MANAGER]
    )
    return people


def assert_the_watch_sees_a_violation(page, violations: list[str]) -> None:
    """An inline style attribute, added to the page, is blocked and reported."""
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    color = page.locator("p[style]").evaluate("p => getComputedStyle(p).color")
    assert color != "rgb(255, 0, 0)"  # blocked
    for _ in range(20):
        if len(violations) >= 2:
            break
        page.wait_for_timeout(50)  # lets Playwright deliver the reports
    assert any(line.startswith("style-src-attr blocked inline") for line in violations)
    assert any("Content Security Policy" in line for line in violations)


def test_an_agent_works_through_the_pages_without_a_violation(live_server, page, clinic):
    violations = watch(page)
    base = live_server.url
    visit(page, f"{base}/accounts/login/")
    assert_the_watch_sees_a_violation(page, violations)  # or this test would prove nothing
    violations.clear()

    login(page, live_server, "alice", PASSWORD)  # the sign-in page is watched too

    visit(page, f"{base}/")
    expect(page.get_by_role("heading", name="Welcome, Alice")).to_be_visible()
    visit(page, f"{base}/work/")
    with page.expect_response(re.compile(r"/work/$")):
        page.evaluate(REFRESH, "#my-work")
    visit(page, f"{base}/queues/{clinic['appeals_queue'].pk}/")
    with page.expect_response(re.compile(r"/rows/")):
        page.evaluate(REFRESH, "#queue-rows")

    visit(page, f"{base}/tasks/{clinic['task'].pk}/")
    page.get_by_role("button", name="Hold", exact=True).click()
    page.get_by_label("Waiting for").fill("Waiting for the payer's answer")
    page.get_by_role("button", name="Tomorrow 9:00").click()
    page.get_by_role("button", name="Put on hold").click()
    expect(page.locator(".task-head")).to_contain_text("On hold")
    with page.expect_response(re.compile(r"/timeline/")):
        page.evaluate("htmx.trigger(document.body, 'refresh-timeline')")

    visit(page, f"{base}/holding/")
    visit(page, f"{base}/intake/new/")
    with page.expect_response(re.compile(r"/intake/new/fields/")):
        page.get_by_label("Task type").select_option(label="Claim denial")
    visit(page, f"{base}/api/docs/")
    expect(page.locator(".swagger-ui .info")).to_contain_text("ClinicDesk API")

    # The error pages: not allowed (the dashboard is not for agents), not found, a failure.
    assert visit(page, f"{base}/dashboard/").status == 403
    expect(page.get_by_role("heading", name="You may look, but not change this")).to_be_visible()
    assert visit(page, f"{base}/tasks/999999/").status == 404
    expect(page.get_by_role("heading", name="We could not find that page")).to_be_visible()
    assert visit(page, f"{base}/broken/").status == 500
    expect(page.get_by_role("heading", name="Something went wrong on our side")).to_be_visible()
    expect(page.locator("main")).to_have_css("max-width", "576px")  # its stylesheet applied

    assert violations == []


def test_a_manager_works_through_the_pages_without_a_violation(live_server, page, clinic):
    violations = watch(page)
    base = live_server.url
    # A manager's first sign-in sets up the second factor: those pages are watched too.
    login(page, live_server, "mia", PASSWORD)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    visit(page, f"{base}/escalations/")
    visit(page, f"{base}/dashboard/")
    expect(page.locator("canvas[data-drawn]").first).to_be_visible()
    visit(page, f"{base}/dashboard/rules/")
    visit(page, f"{base}/audit/?q=claim")
    visit(page, f"{base}/audit/tasks/{clinic['task'].pk}/")
    visit(page, f"{base}/admin/")
    visit(page, f"{base}/admin/queues/queue/{clinic['appeals_queue'].pk}/change/")
    expect(page.get_by_role("button", name="Save", exact=True)).to_be_visible()
    visit(page, f"{base}/admin/routing/ruleset/{clinic['rules'].pk}/change/")
    visit(page, f"{base}/admin/routing/classificationrule/add/")
    visit(page, f"{base}/api/docs/")
    expect(page.locator(".swagger-ui .info")).to_contain_text("ClinicDesk API")
    # Redoc has its own, wider policy (queues/api/docs_urls.py); it must still need no more.
    page.goto(f"{base}/api/docs/redoc/")
    expect(page.get_by_role("heading", name="ClinicDesk API")).to_be_visible()

    assert violations == []
