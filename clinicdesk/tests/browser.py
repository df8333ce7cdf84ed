"""Browser fixtures: Debian's chromium driven by Playwright, against Django's live_server.

Loaded as a pytest plugin (`pytest_plugins = ["clinicdesk.tests.browser"]` in the root
conftest, or `pytest -p clinicdesk.tests.browser`). It never downloads a browser: the system
chromium is used, and a missing one fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls from
# it (the live server's test data setup, fixtures) unless told it is safe, which it is here.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.fail(
            "Browser tests need Debian's chromium and none was found. "
            "Install it with `.ci/run` or `apt-get install chromium` "
            "(Playwright's own browser downloads are not used).",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def login(page, live_server, username: str, password: str) -> None:
    """Sign in through the real sign-in page and wait for the page it leads to."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    two_factor_step(page, username)


def two_factor_step(page, username: str) -> None:
    """The second step of a sign-in that asks for one: a code from the person's app, or on a
    first sign-in setting the app up, with codes computed as the app would."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.tests.two_factor_support import app_code, code_from_key

    if page.url.split("?")[0].endswith("/accounts/login/code/"):
        device = TOTPDevice.objects.get(user__username=username, confirmed=True)
        page.get_by_label("Code", exact=True).fill(app_code(device))
        page.get_by_role("button", name="Continue").click()
        page.wait_for_load_state()
    elif page.url.split("?")[0].endswith("/accounts/login/set-up/"):
        key = page.locator("[data-setup-key]").inner_text()
        page.get_by_label("Code from the app").fill(code_from_key(key))
        page.get_by_role("button", name="Turn on and sign in").click()
        page.get_by_role("link", name="I have saved my codes").click()
        page.wait_for_load_state()


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG under test-artifacts/screenshots/ and return its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
