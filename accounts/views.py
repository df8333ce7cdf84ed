from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_POST

NAV_ROLES_SESSION_KEY = "nav_roles"


class LoginView(auth_views.LoginView):
    """Django's log-in, which also notes the person's roles in the session for the menu.

    The menu shows role-only pages (Escalations, Failed intake) from this note, so rendering
    it costs no query on every page. It only decides which links appear; every page still
    checks permissions itself, so a role changed mid-session is enforced at once and shows in
    the menu from the next sign-in.
    """

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        self.request.session[NAV_ROLES_SESSION_KEY] = sorted(
            form.get_user().groups.values_list("name", flat=True)
        )
        return response


@login_required
@require_POST
def keepalive(request):
    """The idle warning's “Stay signed in”: any request refreshes the idle clock."""
    return HttpResponse(status=204)
