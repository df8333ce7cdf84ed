"""Seal the new rows of the audit and timeline tables into the hash chain, then walk the
whole chain and report the first broken link of each table (exit status 1 when broken)."""

from __future__ import annotations

from django.core.management import BaseCommand, CommandError

from clinicdesk.audit.chain import SOURCE_NAMES, audit_verify


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and report the first broken link."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-seal",
            action="store_true",
            help="Check only what is sealed already; do not seal new rows first.",
        )

    def handle(self, *args, **options):
        result = audit_verify(seal=not options["no_seal"])
        for sealed in result.sealed:
            if sealed.rows:
                name = SOURCE_NAMES[sealed.source]
                self.stdout.write(f"Sealed {sealed.rows} new rows of the {name}.")
        for source, count in result.checked.items():
            self.stdout.write(f"Checked {count} sealed rows of the {SOURCE_NAMES[source]}.")
        if not result.ok:
            for problem in result.breaks:
                self.stderr.write(f"BROKEN: {problem}")
            raise CommandError("The audit trail does not verify: see the broken links above.")
        self.stdout.write(self.style.SUCCESS(f"The audit trail verifies. Head {result.head.hex()}"))
