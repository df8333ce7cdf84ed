"""Per-caller request budgets: each integration client, and each signed-in person, its own.

The counts live in Django's cache: with the default per-process cache each web process keeps
its own count, so the budget a client gets is the rate times the number of processes; a shared
cache (Redis) makes it exact. The rates are settings (`API_CLIENT_RATE`, `API_STAFF_RATE`).
"""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from queues.api.authentication import calling_client


class ClientRateThrottle(SimpleRateThrottle):
    scope = "client"

    def get_cache_key(self, request, view):
        client = calling_client(request)
        if client is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": client.pk}


class StaffRateThrottle(SimpleRateThrottle):
    scope = "staff"

    def get_cache_key(self, request, view):
        if calling_client(request) is not None or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
