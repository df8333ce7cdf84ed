from django.conf import settings

from accounts.views import NAV_ROLES_SESSION_KEY

# Which menu links each role sees (the pages check permissions themselves).
NAV_LINKS = {
    "intake_new": {"Agent", "Supervisor"},
    "intake_failed": {"Supervisor", "Manager", "Compliance"},
    "escalations": {"Supervisor", "Manager", "Compliance"},
    "dashboard": {"Supervisor", "Manager", "Compliance"},
    "audit": {"Manager", "Compliance"},
    "emergency": {"Agent", "Supervisor"},  # break the glass (queues.views.emergency)
}


def clinicdesk(request):
    roles = (
        set(request.session.get(NAV_ROLES_SESSION_KEY, ()))
        if hasattr(request, "session")
        else set()
    )
    return {
        "session_idle_minutes": settings.SESSION_IDLE_MINUTES,
        "nav": {link: bool(roles & allowed) for link, allowed in NAV_LINKS.items()},
    }
