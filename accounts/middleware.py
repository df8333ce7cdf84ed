import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.shortcuts import redirect
from django.urls import reverse

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
