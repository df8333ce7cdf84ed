from django.contrib import admin
from django.urls import include, path

from clinicdesk import views

admin.site.site_header = "ClinicDesk administration"
admin.site.site_title = "ClinicDesk admin"
admin.site.index_title = "Rules, staff and queues"

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
