from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_POST


@login_required
@require_POST
def keepalive(request):
    """The idle warning's “Stay signed in”: any request refreshes the idle clock."""
    return HttpResponse(status=204)
