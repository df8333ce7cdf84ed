"""What a signed-in session carries, and the two steps that make one.

The password step does not sign the person in when they need a second factor: it keeps a
*pending* sign-in (who, when, where to go next) in a fresh anonymous session. Only the code
step calls `login()`, which gives the session a new id, and marks the session verified.

Every sign-in stamps its time in the session (`on_user_logged_in`, for any `login()` call),
so the server ends it SESSION_MAX_HOURS later whatever the cookie says. Sessions signed in
through the form also record how (`SIGNED_IN_WITH_KEY`); a session that says "password"
for someone who must use a second factor is refused on every request.
"""

from __future__ import annotations

import time

import django_otp
from django.contrib.auth import get_user_model, login

from accounts.two_factor import two_factor_required

PENDING_KEY = "signin_pending"
SIGNED_IN_AT_KEY = "signed_in_at"
SIGNED_IN_WITH_KEY = "signed_in_with"
NAV_ROLES_SESSION_KEY = "nav_roles"
RECOVERY_CODES_NEXT_KEY = "recovery_codes_next"
PASSWORD = "password"
PASSWORD_AND_CODE = "password+code"

# The code step must follow the password within this time; setting up an app takes longer.
PENDING_SECONDS = 5 * 60
ENROLMENT_SECONDS = 15 * 60


def pending_start(request, *, user, redirect_to: str) -> None:
    # A new session id before anything of the person is kept: a session id planted before
    # the password step must not give its planter the set-up key shown next.
    request.session.cycle_key()
    request.session[PENDING_KEY] = {
        "user": user.pk,
        "backend": user.backend,
        "at": time.time(),
        "next": redirect_to,
    }


def pending_user(request, *, enrolling: bool = False):
    """The person between the two steps, or None when there is none or it expired."""
    pending = request.session.get(PENDING_KEY)
    if not pending:
        return None
    limit = ENROLMENT_SECONDS if enrolling else PENDING_SECONDS
    if time.time() - pending["at"] > limit:
        pending_clear(request)
        return None
    user = get_user_model().objects.filter(pk=pending["user"], is_active=True).first()
    if user is not None:
        user.backend = pending["backend"]
    return user


def pending_next(request) -> str:
    return request.session.get(PENDING_KEY, {}).get("next", "")


def pending_clear(request) -> None:
    request.session.pop(PENDING_KEY, None)


def signin_complete(request, *, user, device=None) -> None:
    """Sign the person in: a new session id, the sign-in time, the menu's roles note and,
    after a second factor, the device that verified the session."""
    pending_clear(request)
    login(request, user)
    if device is not None:
        django_otp.login(request, device)
    request.session[SIGNED_IN_WITH_KEY] = PASSWORD if device is None else PASSWORD_AND_CODE
    # The menu shows role-only pages (Escalations, Failed intake) from this note, so rendering
    # it costs no query on every page. It only decides which links appear; every page still
    # checks permissions itself, so a role changed mid-session is enforced at once and shows
    # in the menu from the next sign-in.
    request.session[NAV_ROLES_SESSION_KEY] = sorted(user.groups.values_list("name", flat=True))


def on_user_logged_in(sender, request, user, **kwargs) -> None:
    """Stamp the sign-in time of every new session (the form's, and tests' force_login)."""
    if request is not None and hasattr(request, "session"):
        request.session[SIGNED_IN_AT_KEY] = time.time()


def two_factor_satisfied(request) -> bool:
    """False for a session signed in with a password alone by someone who must use a second
    factor, or whose second factor was reset since. Sessions made by code rather than the
    sign-in form (tests' force_login) carry no note and are taken as they are."""
    signed_in_with = request.session.get(SIGNED_IN_WITH_KEY)
    if signed_in_with is None:
        return True
    user = request.user
    is_verified = getattr(user, "is_verified", None)  # set by django-otp's middleware
    if is_verified is not None and is_verified():
        return True
    return not two_factor_required(user)


def admin_has_permission(request) -> bool:
    """The admin site's gate: staff, and a session that passed the second step."""
    user = request.user
    return user.is_active and user.is_staff and two_factor_satisfied(request)


def audit_record(kind: str, *, actor, request, detail: dict | None = None) -> None:
    """One audit event of the sign-in (`kind` names an `AuditEvent.Kind`, e.g. "OTP_FAILED").

    Never put a key, a code or a recovery code in `detail`.
    """
    # The audit belongs to the project shell above accounts (DESIGN.md's arrows): reached at
    # call time, not imported at the top.
    from clinicdesk.audit.models import AuditEvent
    from clinicdesk.audit.records import audit_event_record

    audit_event_record(
        kind=getattr(AuditEvent.Kind, kind), actor=actor, request=request, detail=detail
    )
