from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import departments_of
from clinicdesk.demo import LOGINS, build_demo_clinic, demo_counts, is_demo_user
from clinicdesk.roles import ROLES


class Command(BaseCommand):
    help = (
        "Create or refresh the demo clinic (sites, departments, queues, skills, task types, "
        "staff and their logins). Safe to run again: it creates no duplicates."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--tasks",
            type=int,
            default=0,
            metavar="N",
            help="Push N generated tasks through intake and routing (not available yet).",
        )

    def handle(self, *args, tasks: int, **options):
        if tasks < 0:
            raise CommandError("--tasks must be 0 or more.")
        if tasks > 0:
            raise CommandError("task generation arrives with the routing engine")
        if not settings.DEBUG and settings.DEMO_PASSWORD == "clinicdesk-demo":
            raise CommandError(
                "Refusing to create demo logins with the well-known password in production "
                "(DEBUG is false). Set DEMO_PASSWORD to run the demo on this server."
            )

        try:
            result = build_demo_clinic()
        except LookupError as error:
            raise CommandError(str(error)) from error
        for username in result.skipped_users:
            self.stderr.write(
                self.style.WARNING(
                    f"Left {username!r} alone: it exists and is not a demo login "
                    "(its password and groups are unchanged)."
                )
            )

        counts = ", ".join(f"{count} {name}" for name, count in demo_counts().items())
        self.stdout.write(self.style.SUCCESS(f"Demo clinic ready: {counts}."))
        if result.created:
            created = ", ".join(f"{count} {name}" for name, count in sorted(result.created.items()))
            self.stdout.write(f"Created {created}.")
        if result.updated:
            updated = ", ".join(f"{count} {name}" for name, count in sorted(result.updated.items()))
            self.stdout.write(f"Updated {updated}.")
        self._write_logins()

    def _write_logins(self):
        users = get_user_model().objects.filter(username__in=LOGINS).prefetch_related("groups")
        by_name = {user.username: user for user in users if is_demo_user(user)}
        rows = [("login", "name", "role", "departments")]
        for username in LOGINS:
            user = by_name.get(username)
            if user is None:
                continue
            roles = [group.name for group in user.groups.all() if group.name in ROLES]
            rows.append(
                (
                    username,
                    user.get_full_name(),
                    ", ".join(sorted(roles)),
                    ", ".join(d.name for d in departments_of(user)) or "—",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        self.stdout.write("")
        self.stdout.write(f"Logins (password: {settings.DEMO_PASSWORD}):")
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write("  " + "  ".join(cells).rstrip())
