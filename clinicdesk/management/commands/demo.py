from datetime import date

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import departments_of
from clinicdesk import demo_traffic
from clinicdesk.demo import LOGINS, build_demo_clinic, demo_counts, is_demo_user
from clinicdesk.roles import ROLES
from queues.access import audit_actor


class Command(BaseCommand):
    help = (
        "Create or refresh the demo clinic (sites, departments, queues, skills, task types, "
        "staff and their logins, the routing rules). Safe to run again: it creates no "
        "duplicates. With --tasks N it also pushes a generated morning of N requests through "
        "intake and routing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--tasks",
            type=int,
            default=0,
            metavar="N",
            help=(
                "Push a generated morning of N requests (portal messages, voicemails, lab "
                "results, prior-authorization updates) through intake and routing."
            ),
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=demo_traffic.DEFAULT_SEED,
            help="Seed of the generated morning; the same seed gives the same requests, and "
            "a re-run with it adds nothing (default %(default)s).",
        )
        parser.add_argument(
            "--date",
            dest="day",
            type=date.fromisoformat,
            default=None,
            metavar="YYYY-MM-DD",
            help="The day of the morning (default: today in the clinic's time zone).",
        )

    def handle(self, *args, tasks: int, seed: int, day: date | None, **options):
        if tasks < 0:
            raise CommandError("--tasks must be 0 or more.")
        if not settings.DEBUG and settings.DEMO_PASSWORD == "clinicdesk-demo":
            raise CommandError(
                "Refusing to create demo logins with the well-known password in production "
                "(DEBUG is false). Set DEMO_PASSWORD to run the demo on this server."
            )

        try:
            with audit_actor("system:demo"):
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
        if tasks:
            self._load_morning(tasks, seed, day)

    def _load_morning(self, n: int, seed: int, day: date | None):
        items = demo_traffic.generate_morning(n, seed=seed)
        run = demo_traffic.submit_morning(items, day=day)
        self.stdout.write("")
        closed = demo_traffic.closed_note(run.day)
        if closed:
            self.stdout.write(self.style.WARNING(closed))
        mix = ", ".join(
            f"{count} {demo_traffic.STREAM_LABELS[stream]}"
            for stream, count in demo_traffic.mix(n).items()
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Morning of {run.day:%a %d %b %Y} loaded: {run.created} new tasks ({mix}) "
                f"in {run.seconds:.1f} s."
            )
        )
        if run.skipped:
            self.stdout.write(
                f"{run.skipped} were loaded by an earlier run (same seed) and were not "
                "submitted again; use --seed for a new morning."
            )
        counts = demo_traffic.queue_counts(run)
        width = max((len(c.name) for c in counts), default=0) + 1
        for c in counts:
            self.stdout.write(
                f"  {(c.name + ':').ljust(width)} {c.total:>3} tasks, "
                f"{c.assigned} assigned / {c.waiting} waiting"
            )
        flagged, in_triage, assigned = demo_traffic.red_flag_counts(run)
        self.stdout.write(
            f"Red flags: {in_triage} of {flagged} went to Clinical triage as P1 "
            f"({assigned} assigned to a nurse at once, {in_triage - assigned} first in line "
            "for the next free nurse)."
        )
        hits, total, _ = demo_traffic.accuracy(run)
        if total:
            self.stdout.write(
                f"Routed to the expected queue: {hits} of {total} ({hits / total:.1%})."
            )

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
