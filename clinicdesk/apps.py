from django.apps import AppConfig


class ClinicDeskConfig(AppConfig):
    name = "clinicdesk"
    verbose_name = "ClinicDesk"
