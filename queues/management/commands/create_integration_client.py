"""Create an integration client: another system that may submit requests and read tasks.

    python manage.py create_integration_client ehr --channels fhir,api --departments front-desk

prints the client's API token and its signing secret once: only their hashes are stored.
"""

from __future__ import annotations

from django.core.management import BaseCommand, CommandError
from django.utils.text import slugify

from accounts.models import Department
from queues.access import audit_actor
from queues.intake import store
from queues.intake.draft import IntakeError
from queues.models import Channel


def _names(raw: str) -> list[str]:
    return [part.strip().lower() for part in (raw or "").split(",") if part.strip()]


class Command(BaseCommand):
    help = (
        "Create an integration client and print its API token and signing secret, once. "
        "Its department memberships decide which tasks it may read."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="A short slug naming the system, e.g. ehr or pbx.")
        parser.add_argument(
            "--channels",
            required=True,
            help=f"Comma-separated channels it may submit on: {', '.join(Channel.values)}.",
        )
        parser.add_argument(
            "--departments",
            default="",
            help="Comma-separated department codes whose queues it may read (default: none).",
        )
        parser.add_argument("--description", default="", help="What the system is.")

    def handle(self, *args, name: str, channels: str, departments: str, description: str, **kw):
        if slugify(name) != name or len(name) > 60:
            raise CommandError(
                f"NAME {name!r} must be a slug of at most 60 characters (lower-case letters, "
                f"digits, - and _), e.g. {slugify(name)[:60] or 'ehr'!r}."
            )
        codes = _names(departments)
        found = {d.code: d for d in Department.objects.filter(code__in=codes)}
        missing = [code for code in codes if code not in found]
        if missing:
            known = ", ".join(Department.objects.order_by("code").values_list("code", flat=True))
            raise CommandError(
                f"--departments: no department with code {', '.join(missing)}; "
                f"use one of: {known or '(none yet: create departments in the admin)'}."
            )
        if len(description) > 200:
            raise CommandError("--description: keep it under 200 characters.")
        try:
            with audit_actor("system:create_integration_client"):
                client, issued = store.integration_client_create(
                    name=name,
                    channels=_names(channels),
                    departments=[found[code] for code in codes],
                    description=description,
                )
        except IntakeError as error:
            flags = {"channels": "--channels", "name": "NAME"}
            raise CommandError(
                "; ".join(
                    f"{flags.get(field, field)}: {' '.join(messages)}"
                    for field, messages in error.errors.items()
                )
            ) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Created integration client {client.name!r} "
                f"(channels: {', '.join(client.channels)}; departments: "
                f"{', '.join(codes) or 'none'})."
            )
        )
        self.stdout.write(f"API token:      {issued.token}")
        self.stdout.write(f"Signing secret: {issued.signing_secret}")
        self.stdout.write(
            self.style.WARNING(
                "Copy both now: they are shown only this once and only their hashes are "
                "stored. Send the token as 'Authorization: Token <token>'; sign webhooks with "
                "the secret. If one is lost, create a new client and deactivate this one."
            )
        )
