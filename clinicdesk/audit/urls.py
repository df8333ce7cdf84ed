from django.urls import path

from clinicdesk.audit import emergency, views

app_name = "audit"

urlpatterns = [
    path("", views.search, name="search"),
    path("export.csv", views.export, name="export"),
    path("tasks/<int:task_id>/", views.task_history, name="task"),
    path("emergency/", emergency.emergency_list, name="emergency"),
    path("people/<int:user_id>/", views.person, name="person"),
    path("rules/<str:kind>/<int:rule_id>/", views.rule_history, name="rule"),
    path("objects/<str:model>/<str:pk>/", views.object_history, name="object"),
]
