"""A manager's first sign-in in a real browser: the admin sends her to ClinicDesk's sign-in,
she sets up her authenticator app from the QR code's key, keeps her recovery codes, and lands
where she was going; her next sign-in asks for the app's code."""

import re

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD, UserFactory
from accounts.tests.two_factor_support import code_from_key
from clinicdesk.roles import MANAGER
from clinicdesk.tests.browser import screenshot, two_factor_step

pytestmark = pytest.mark.browser


def test_a_managers_first_sign_in_sets_up_two_factor(live_server, page):
    UserFactory(
        username="maria", first_name="Maria", last_name="Chen", is_staff=True, roles=[MANAGER]
    )
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/admin/$"))
    page.get_by_label("Username").fill("maria")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Set up two-factor sign-in")).to_be_visible()
    expect(page.get_by_role("figure", name="QR code")).to_be_visible()
    key = page.locator("[data-setup-key]").inner_text()
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", key)
    screenshot(page, "two-factor-set-up")

    page.get_by_label("Code from the app").fill("000000")
    page.get_by_role("button", name="Turn on and sign in").click()
    expect(page.get_by_text("That code is not right")).to_be_visible()
    page.wait_for_timeout(1100)  # django-otp pauses a second after a wrong code
    page.get_by_label("Code from the app").fill(code_from_key(key))
    page.get_by_role("button", name="Turn on and sign in").click()

    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = page.get_by_role("list", name="Recovery codes").get_by_role("listitem")
    expect(codes).to_have_count(10)
    screenshot(page, "two-factor-recovery-codes")
    page.get_by_role("link", name="I have saved my codes").click()

    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.get_by_role("heading", name="Rules, staff and queues")).to_be_visible()
    page.get_by_role("button", name="Log out").click()

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("maria")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Two-factor code")).to_be_visible()
    screenshot(page, "two-factor-code")
    two_factor_step(page, "maria")  # the app's code
    expect(page).to_have_url(f"{live_server.url}/work/")
    expect(page.get_by_role("link", name="Account security")).to_be_visible()
    assert errors == []
