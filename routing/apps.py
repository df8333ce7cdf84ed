from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing rules"

    def ready(self) -> None:
        from routing import receivers

        receivers.connect()
