import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.shortcuts import redirect
from django.urls import reverse

from accounts.signin import SIGNED_IN_AT_KEY, two_factor_satisfied

SESSION_KEY = "clinicdesk_last_activity"
# Page views within this many seconds of the last recorded one do not rewrite the session:
# saving it costs a database transaction on every request. The clock may therefore start up
# to this much before the real last request, so the server signs out at most this much early,
# never late. Any other method (a form, "Stay signed in") always records.
ACTIVITY_GRANULARITY_S = 20


class IdleLogoutMiddleware:
    """Sign a person out after SESSION_IDLE_MINUTES without a request.

    The page's own script warns a minute before and pings `accounts:keepalive` when the person
    chooses to stay; the server is the one that enforces it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            last = request.session.get(SESSION_KEY)
            if last is not None and now - last > settings.SESSION_IDLE_MINUTES * 60:
                # The audit's sign-out record reads this: an idle logoff, not a sign-out.
                request.audit_logout_kind = "idle_logoff"
                logout(request)
                messages.info(request, "You were signed out after a period of inactivity.")
                query = {"idle": "1"}
                if request.method == "GET" and not request.headers.get("HX-Request"):
                    query["next"] = request.get_full_path()
                return redirect(f"{reverse('accounts:login')}?{urlencode(query)}")
            # Polling fragments (htmx refreshes) must not keep an idle session alive.
            fresh = last is not None and now - last < ACTIVITY_GRANULARITY_S
            if not request.headers.get("X-Idle-Poll") and not (fresh and request.method == "GET"):
                request.session[SESSION_KEY] = now
        return self.get_response(request)


class SignInLimitsMiddleware:
    """End a session SESSION_MAX_HOURS after its sign-in, and refuse a password-only session of
    someone who must use a second factor (their role changed, or their second factor was reset,
    since they signed in).

    The sign-in time is kept in the session, not read from the cookie: the session row's own
    expiry moves forward every time the session is saved, so it bounds idleness, not age.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            signed_in_at = request.session.get(SIGNED_IN_AT_KEY)
            if (
                signed_in_at is None
                or time.time() - signed_in_at > settings.SESSION_MAX_HOURS * 3600
            ):
                # No stamp: a session from before sign-in times were kept; its age is unknown.
                return self._sign_out(
                    request, "Your session reached its time limit. Please sign in again."
                )
            if not two_factor_satisfied(request):
                return self._sign_out(
                    request,
                    "Your account now signs in with a two-factor code. Please sign in again.",
                )
        return self.get_response(request)

    @staticmethod
    def _sign_out(request, message: str):
        logout(request)
        messages.info(request, message)
        query = {}
        if request.method == "GET" and not request.headers.get("HX-Request"):
            query["next"] = request.get_full_path()
        url = reverse("accounts:login")
        return redirect(f"{url}?{urlencode(query)}" if query else url)
