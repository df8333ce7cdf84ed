"""Deploy checks of our own (`manage.py check --deploy`): the settings that keep patient data
safe and that Django's own checks cannot know about. Each message names the setting and the
environment variable that fixes it."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from clinicdesk.roles import COMPLIANCE, MANAGER, SUPERVISOR

CSP_MIDDLEWARE = "csp.middleware.CSPMiddleware"
# Sources that let script-src run code that is not one of our static files: inline code,
# eval, and any origin at all.
UNSAFE_SCRIPT_SOURCES = {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:", "data:"}
MAX_IDLE_MINUTES = 30
MAX_SESSION_SECONDS = 12 * 3600
TWO_FACTOR_ROLES = (MANAGER, SUPERVISOR, COMPLIANCE)
# Django's startproject keys, and ours for development, start with this.
INSECURE_KEY_PREFIX = "django-insecure"


def _script_sources() -> list[str] | None:
    """The script-src of the enforced policy (default-src when it has none), or None when no
    policy is sent at all."""
    if CSP_MIDDLEWARE not in settings.MIDDLEWARE:
        return None
    policy = getattr(settings, "CONTENT_SECURITY_POLICY", None) or {}
    directives = policy.get("DIRECTIVES") or {}
    sources = directives.get("script-src") or directives.get("default-src")
    if not sources:
        return None
    return [sources] if isinstance(sources, str) else [str(source) for source in sources]


@register(Tags.security, deploy=True)
def check_content_security_policy(app_configs, **kwargs):
    sources = _script_sources()
    if sources is None:
        return [
            Warning(
                "No Content-Security-Policy with a script-src is sent: an injected script "
                "would run.",
                hint=f"Keep '{CSP_MIDDLEWARE}' in MIDDLEWARE and a CONTENT_SECURITY_POLICY "
                "with DIRECTIVES['script-src'] = ['self'] in clinicdesk/settings.py.",
                id="clinicdesk.W001",
            )
        ]
    unsafe = sorted(UNSAFE_SCRIPT_SOURCES.intersection(source.lower() for source in sources))
    if unsafe:
        return [
            Warning(
                f"CONTENT_SECURITY_POLICY's script-src allows {', '.join(unsafe)}: an injected "
                "script would run.",
                hint="Remove them from CONTENT_SECURITY_POLICY['DIRECTIVES']['script-src'] and "
                "move the page's code into static/js/*.js; a page that cannot do without gets a "
                "nonce through django-csp's @csp_update, never a site-wide exception.",
                id="clinicdesk.W002",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_session_timeouts(app_configs, **kwargs):
    warnings = []
    idle = getattr(settings, "SESSION_IDLE_MINUTES", None)
    if idle is None or idle > MAX_IDLE_MINUTES:
        warnings.append(
            Warning(
                f"SESSION_IDLE_MINUTES is {idle}: an unattended screen stays signed in for "
                f"longer than {MAX_IDLE_MINUTES} minutes.",
                hint=f"Set the SESSION_IDLE_MINUTES environment variable to {MAX_IDLE_MINUTES} "
                "or less (15 by default).",
                id="clinicdesk.W003",
            )
        )
    if settings.SESSION_COOKIE_AGE > MAX_SESSION_SECONDS:
        hours = settings.SESSION_COOKIE_AGE / 3600
        warnings.append(
            Warning(
                f"SESSION_COOKIE_AGE is {hours:g} hours: a session outlives a "
                f"{MAX_SESSION_SECONDS // 3600}-hour shift.",
                hint=f"Set the SESSION_MAX_HOURS environment variable to "
                f"{MAX_SESSION_SECONDS // 3600} or less.",
                id="clinicdesk.W004",
            )
        )
    return warnings


@register(Tags.security, deploy=True)
def check_two_factor_roles(app_configs, **kwargs):
    roles = getattr(settings, "TWO_FACTOR_REQUIRED_ROLES", None)
    missing = [role for role in TWO_FACTOR_ROLES if role not in (roles or ())]
    if roles is None or missing:
        shown = "not set" if roles is None else f"missing {', '.join(missing)}"
        return [
            Warning(
                f"TWO_FACTOR_REQUIRED_ROLES is {shown}: people who change rules or read the "
                "whole audit could sign in with a password alone.",
                hint=f"Set TWO_FACTOR_REQUIRED_ROLES = {list(TWO_FACTOR_ROLES)!r} (or more) in "
                "clinicdesk/settings.py.",
                id="clinicdesk.W005",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_production_basics(app_configs, **kwargs):
    errors = []
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on: error pages would show settings, code and patient data.",
                hint="Set the DEBUG environment variable to false in production.",
                id="clinicdesk.E001",
            )
        )
    if str(settings.SECRET_KEY).startswith(INSECURE_KEY_PREFIX):
        errors.append(
            Error(
                "SECRET_KEY is the development key: anyone could forge sessions and signed links.",
                hint="Set the SECRET_KEY environment variable to a long random value, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                id="clinicdesk.E002",
            )
        )
    return errors
