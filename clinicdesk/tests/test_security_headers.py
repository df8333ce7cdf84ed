"""The security headers every answer carries: the Content-Security-Policy, frame denial, referrer
policy, no MIME sniffing; HSTS and Secure, HttpOnly, SameSite cookies under the production
settings; and templates that leave the policy nothing to allow (no inline code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import include, path

from accounts.tests.factories import PASSWORD, DepartmentFactory, StaffProfileFactory

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def _broken_view(request):
    raise RuntimeError("a deliberate failure, to show the 500 page")


# The site's own URLs plus one view that fails (for the 500 page's headers).
urlpatterns = [
    path("broken/", _broken_view),
    path("", include("clinicdesk.urls")),
]


def directives(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {name: sources for name, *sources in parts}


@pytest.fixture
def alice(db):
    """A billing agent: no second factor needed, so one password signs her in."""
    return StaffProfileFactory(
        user__username="alice", departments=[DepartmentFactory(name="Billing")]
    ).user


@pytest.fixture
def production(settings):
    """What DEBUG=false turns on in clinicdesk/settings.py."""
    settings.DEBUG = False
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    return settings


def test_sign_in_page_carries_the_strict_policy_and_the_other_headers(client, db):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert directives(response) == STRICT
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_signed_in_pages_partials_and_error_pages_carry_the_policy(client, alice, settings):
    settings.ROOT_URLCONF = __name__
    client.raise_request_exception = False
    client.force_login(alice)

    answers = {
        "my work": client.get("/work/"),
        "my work, refreshed by htmx": client.get("/work/", headers={"HX-Request": "true"}),
        "not allowed": client.get("/dashboard/"),
        "not found": client.get("/tasks/999999/"),
        "failure": client.get("/broken/"),
        "API docs": client.get("/api/docs/"),
    }

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "my work": 200,
        "my work, refreshed by htmx": 200,
        "not allowed": 403,
        "not found": 404,
        "failure": 500,
        "API docs": 200,
    }
    for name, answer in answers.items():
        assert directives(answer) == STRICT, name
        assert answer.headers["X-Frame-Options"] == "DENY", name


def test_the_api_docs_page_has_no_inline_code(client, db):
    page = client.get("/api/docs/").content.decode()
    [script_url] = re.findall(r'<script src="(/api/docs/\?[^"]*script=[^"]*)"', page)

    assert "<style" not in page
    assert not re.search(r"<script>|<script[^>]*>[^<\s]", page)
    script = client.get(script_url.replace("&amp;", "&"))
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()


def test_redoc_alone_may_apply_inline_styles_but_runs_only_our_scripts(client, db):
    policy = directives(client.get("/api/docs/redoc/"))

    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]


def test_production_over_https_sends_hsts(client, db, production):
    response = client.get("/accounts/login/", secure=True)

    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_production_over_http_redirects_to_https_without_hsts(client, db, production):
    response = client.get("/accounts/login/")

    assert response.status_code == 301
    assert response.headers["Location"] == "https://testserver/accounts/login/"
    assert "Strict-Transport-Security" not in response.headers


def test_production_cookies_are_secure_httponly_and_same_site(client, alice, production):
    form = client.get("/accounts/login/", secure=True)
    signed_in = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, secure=True
    )

    assert signed_in.status_code == 302
    session = signed_in.cookies["sessionid"]
    assert session["secure"] is True
    assert session["httponly"] is True
    assert session["samesite"] == "Lax"
    csrf = form.cookies["csrftoken"]
    assert csrf["secure"] is True
    assert csrf["samesite"] == "Lax"


# Inline code the policy would block: <script> with a body, <style>, style="", onclick= and
# the like, htmx's hx-on (evaluated code), javascript: links.
INLINE_CODE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+\s*=|\bhx-on\b|javascript:",
    re.IGNORECASE,
)
COMMENT = re.compile(r"{#.*?#}|{%\s*comment\s*%}.*?{%\s*endcomment\s*%}|<!--.*?-->", re.DOTALL)


def test_no_template_holds_inline_code():
    found = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        source = COMMENT.sub("", template.read_text())
        found += [
            f"{template.relative_to(TEMPLATES)}: {match.group(0)!r}"
            for match in INLINE_CODE.finditer(source)
        ]

    assert found == [], "Move it to static/js/*.js or static/css/*.css"
