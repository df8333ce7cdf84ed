from django.apps import AppConfig


class ClinicDeskConfig(AppConfig):
    name = "clinicdesk"
    verbose_name = "ClinicDesk"

    def ready(self):
        from clinicdesk import checks  # noqa: F401 (registers the deploy checks)
        from clinicdesk.audit.actor import connect_receiver
        from clinicdesk.audit.records import connect_receivers

        connect_receivers()
        connect_receiver()
