"""Our deploy checks (clinicdesk/checks.py): each passes with the production settings and fails,
naming the setting and its fix, when that setting is weakened; and `check --deploy` as a whole
is clean in production and fails on a bad value."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from clinicdesk import checks
from clinicdesk.tests.test_settings import PRODUCTION as PRODUCTION_ENV
from clinicdesk.tests.test_settings import run_manage


@pytest.fixture
def production(settings):
    """The settings that DEBUG=false gives (clinicdesk/settings.py), without restarting."""
    settings.DEBUG = False
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    settings.ALLOWED_HOSTS = ["desk.clinic.org"]
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    return settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def set_script_src(settings, sources) -> None:
    policy = {**settings.CONTENT_SECURITY_POLICY}
    policy["DIRECTIVES"] = {**policy["DIRECTIVES"], "script-src": sources}
    settings.CONTENT_SECURITY_POLICY = policy


# --- the Content-Security-Policy ---


def test_the_sites_policy_passes(production):
    assert checks.check_content_security_policy(None) == []


def test_a_policy_without_the_middleware_is_missing(production):
    production.MIDDLEWARE = [m for m in production.MIDDLEWARE if m != checks.CSP_MIDDLEWARE]

    [warning] = checks.check_content_security_policy(None)

    assert warning.id == "clinicdesk.W001"
    assert "csp.middleware.CSPMiddleware" in warning.hint


def test_no_policy_setting_is_missing(production):
    del production.CONTENT_SECURITY_POLICY

    assert ids(checks.check_content_security_policy(None)) == ["clinicdesk.W001"]


def test_default_src_stands_in_for_a_missing_script_src(production):
    policy = {"DIRECTIVES": {"default-src": ["'self'"], "style-src": ["'self'"]}}
    production.CONTENT_SECURITY_POLICY = policy

    assert checks.check_content_security_policy(None) == []


@pytest.mark.parametrize(
    "sources, named",
    [
        (["'self'", "'unsafe-inline'"], "'unsafe-inline'"),
        (["'self'", "'unsafe-eval'"], "'unsafe-eval'"),
        (["*"], "*"),
        (["'self'", "https:"], "https:"),
    ],
)
def test_script_src_that_runs_any_code_is_refused(production, sources, named):
    set_script_src(production, sources)

    [warning] = checks.check_content_security_policy(None)

    assert warning.id == "clinicdesk.W002"
    assert f"script-src allows {named}" in warning.msg
    assert "CONTENT_SECURITY_POLICY['DIRECTIVES']['script-src']" in warning.hint


def test_inline_styles_alone_do_not_weaken_scripts(production):
    policy = {**production.CONTENT_SECURITY_POLICY}
    policy["DIRECTIVES"] = {**policy["DIRECTIVES"], "style-src": ["'self'", "'unsafe-inline'"]}
    production.CONTENT_SECURITY_POLICY = policy

    assert checks.check_content_security_policy(None) == []


# --- session timeouts ---


def test_timeouts_at_their_limits_pass(production):
    production.SESSION_IDLE_MINUTES = 30
    production.SESSION_COOKIE_AGE = int(timedelta(hours=12).total_seconds())

    assert checks.check_session_timeouts(None) == []


def test_a_long_idle_timeout_is_refused(production):
    production.SESSION_IDLE_MINUTES = 31

    [warning] = checks.check_session_timeouts(None)

    assert warning.id == "clinicdesk.W003"
    assert "SESSION_IDLE_MINUTES is 31" in warning.msg
    assert "SESSION_IDLE_MINUTES environment variable to 30 or less" in warning.hint


def test_a_long_session_is_refused(production):
    production.SESSION_COOKIE_AGE = 13 * 3600

    [warning] = checks.check_session_timeouts(None)

    assert warning.id == "clinicdesk.W004"
    assert "SESSION_COOKIE_AGE is 13 hours" in warning.msg
    assert "SESSION_MAX_HOURS" in warning.hint


# --- two-factor roles ---


def test_the_sites_two_factor_roles_pass(production):
    assert checks.check_two_factor_roles(None) == []


def test_two_factor_roles_not_set_are_refused(production):
    del production.TWO_FACTOR_REQUIRED_ROLES

    [warning] = checks.check_two_factor_roles(None)

    assert warning.id == "clinicdesk.W005"
    assert "TWO_FACTOR_REQUIRED_ROLES is not set" in warning.msg


def test_two_factor_roles_missing_one_are_refused(production):
    production.TWO_FACTOR_REQUIRED_ROLES = ["Manager", "Compliance"]

    [warning] = checks.check_two_factor_roles(None)

    assert warning.id == "clinicdesk.W005"
    assert "missing Supervisor" in warning.msg
    assert "'Manager', 'Supervisor', 'Compliance'" in warning.hint


# --- DEBUG and SECRET_KEY ---


def test_production_basics_pass(production):
    assert checks.check_production_basics(None) == []


def test_debug_on_is_an_error(production):
    production.DEBUG = True

    assert ids(checks.check_production_basics(None)) == ["clinicdesk.E001"]


def test_the_development_secret_key_is_an_error(production):
    production.SECRET_KEY = "django-insecure-clinicdesk-development-only"

    [error] = checks.check_production_basics(None)

    assert error.id == "clinicdesk.E002"
    assert "SECRET_KEY environment variable" in error.hint


# --- the whole command ---


@pytest.fixture
def deploy_process(production, monkeypatch):
    """The test process, as a deployed one: the browser tests' plugin allows Django's ORM in
    Playwright's event loop, which Django's own deploy check rightly refuses."""
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    return production


def test_check_deploy_is_clean_with_production_settings(deploy_process, capsys):
    call_command("check", deploy=True, fail_level="WARNING")

    assert "no issues" in capsys.readouterr().out


def test_check_deploy_fails_on_a_weak_setting_and_names_it(deploy_process):
    deploy_process.SESSION_IDLE_MINUTES = 60
    set_script_src(deploy_process, ["'self'", "'unsafe-inline'"])

    with pytest.raises(SystemCheckError) as failure:
        call_command("check", deploy=True, fail_level="WARNING")

    assert "clinicdesk.W002" in str(failure.value)
    assert "clinicdesk.W003" in str(failure.value)
    assert "SESSION_IDLE_MINUTES is 60" in str(failure.value)


def test_check_deploy_from_the_environment_names_a_long_idle_timeout():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV, SESSION_IDLE_MINUTES="45"
    )

    assert result.returncode != 0
    assert "(clinicdesk.W003) SESSION_IDLE_MINUTES is 45" in result.stderr
