from django.urls import path

from escalation import views

app_name = "escalation"

urlpatterns = [
    path("", views.escalation_list, name="list"),
    path("<int:escalation_id>/acknowledge/", views.escalation_acknowledge, name="acknowledge"),
]
