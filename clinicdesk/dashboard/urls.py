from django.urls import path

from clinicdesk.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard, name="index"),
    path("rules/", views.rules, name="rules"),
    path("export/<slug:table>.csv", views.export, name="export"),
]
