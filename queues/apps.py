from django.apps import AppConfig


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "Queues and tasks"

    def ready(self) -> None:
        from queues import lookups

        lookups.register()
