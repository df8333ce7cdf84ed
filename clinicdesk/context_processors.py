from django.conf import settings


def clinicdesk(request):
    return {"session_idle_minutes": settings.SESSION_IDLE_MINUTES}
