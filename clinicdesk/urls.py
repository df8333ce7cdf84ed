from django.contrib import admin
from django.urls import include, path

from accounts.signin import admin_has_permission
from accounts.views import admin_login
from clinicdesk import views

admin.site.site_header = "ClinicDesk administration"
admin.site.site_title = "ClinicDesk admin"
admin.site.index_title = "Rules, staff and queues"
# The admin signs in through ClinicDesk's own page (password, then the second factor) and
# lets in only a session that passed both steps.
admin.site.login = admin_login
admin.site.has_permission = admin_has_permission

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("accounts.urls")),
    path("", include("queues.urls")),
    path("escalations/", include("escalation.urls")),
    path("audit/", include("clinicdesk.audit.urls")),
    path("dashboard/", include("clinicdesk.dashboard.urls")),
    path("api/v1/inbound/", include("queues.api.inbound_urls")),
    path("api/v1/", include("queues.api.urls")),
    path("api/", include("queues.api.docs_urls")),
    path("admin/", admin.site.urls),
]
