from __future__ import annotations

from django.core.management import BaseCommand

from escalation import services


class Command(BaseCommand):
    help = "Run one escalation sweep now, as the scheduled job does, and say how many fired."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=services.SWEEP_BATCH)

    def handle(self, *args, batch: int, **options):
        fired = services.sweep(batch=batch)
        self.stdout.write(f"{fired} escalation step{'s' if fired != 1 else ''} fired.")
