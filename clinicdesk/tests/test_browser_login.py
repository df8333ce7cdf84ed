import re

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD, DepartmentFactory, StaffProfileFactory, UserFactory
from clinicdesk.roles import MANAGER
from clinicdesk.tests.browser import login, screenshot
from queues.models import Task
from queues.tests.factories import QueueFactory, TaskFactory, TaskTypeFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def alice():
    """A billing agent with work waiting in her queue."""
    billing = DepartmentFactory(name="Billing")
    claims = QueueFactory(department=billing, name="Claims follow-up")
    task_type = TaskTypeFactory(default_queue=claims, name="Claim denial")
    TaskFactory.create_batch(3, task_type=task_type, queue=claims, status=Task.Status.QUEUED)
    TaskFactory(task_type=task_type, queue=claims, status=Task.Status.QUEUED, priority=1)
    statements = QueueFactory(department=billing, name="Patient statements")
    TaskFactory(
        task_type=TaskTypeFactory(default_queue=statements),
        queue=statements,
        status=Task.Status.ON_HOLD,
        priority=2,
    )
    QueueFactory(department=DepartmentFactory(name="Front desk"), name="Check-in")
    return StaffProfileFactory(
        user__username="alice",
        user__first_name="Alice",
        user__last_name="Moreno",
        departments=[billing],
    ).user


def test_agent_signs_in_and_sees_her_queues(live_server, page, alice):
    page.goto(f"{live_server.url}/")

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="ClinicDesk")).to_be_visible()
    screenshot(page, "login")

    login(page, live_server, "alice", PASSWORD)

    # Staff land on their own work after signing in; Home lists the queues they may see.
    expect(page).to_have_url(f"{live_server.url}/work/")
    page.get_by_role("link", name="Home").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Welcome, Alice")).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("Alice Moreno")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    claims = page.get_by_role("row", name=re.compile("Claims follow-up"))
    expect(claims.get_by_role("cell")).to_have_text(["Work", "4", "1", "4"])
    expect(page.get_by_role("row", name=re.compile("Patient statements"))).to_be_visible()
    expect(page.get_by_text("Check-in")).to_have_count(0)
    screenshot(page, "home")

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(f"{live_server.url}/accounts/login/")
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_wrong_password_names_the_problem(live_server, page, alice):
    login(page, live_server, "alice", "not the password")

    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    expect(page.get_by_label("Username")).to_have_value("alice")
    screenshot(page, "login-error")


def test_manager_opens_the_admin(live_server, page):
    UserFactory(
        username="maria", first_name="Maria", last_name="Chen", is_staff=True, roles=[MANAGER]
    )

    login(page, live_server, "maria", PASSWORD)
    page.get_by_role("link", name="Admin").click()

    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.get_by_role("heading", name="Rules, staff and queues")).to_be_visible()
    expect(page.get_by_role("link", name="ClinicDesk administration")).to_be_visible()
    expect(page.get_by_role("link", name="Queues", exact=True)).to_be_visible()
    screenshot(page, "admin")


def test_idle_person_is_warned_then_signed_out(live_server, page, alice, settings):
    # One minute is the shortest limit; the warning comes a minute before, so at once.
    settings.SESSION_IDLE_MINUTES = 1
    login(page, live_server, "alice", PASSWORD)

    dialog = page.get_by_role("dialog", name="Are you still there?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("You will be signed out in")
    expect(dialog).to_contain_text("for privacy. Stay signed in?")
    expect(dialog.get_by_role("button", name="Stay signed in")).to_be_focused()
    screenshot(page, "idle-warning")

    countdown = dialog.locator("[data-idle-countdown]")
    expect(countdown).to_have_text(re.compile(r"^5[0-6] seconds$"), timeout=15_000)
    with page.expect_response(lambda r: r.url.endswith("/accounts/keepalive/")) as keepalive:
        dialog.get_by_role("button", name="Stay signed in").click()
    assert keepalive.value.status == 204
    # The clock starts again: with a one-minute limit the warning stays, counting from 60.
    expect(countdown).to_have_text(re.compile(r"^(60|59|58) seconds$"))

    expect(page).to_have_url(re.compile(r"/accounts/login/\?idle=1"), timeout=75_000)
    expect(page.get_by_text("You were signed out after a period of inactivity.")).to_be_visible()
    screenshot(page, "login-after-idle")
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
