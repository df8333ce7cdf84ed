"""Read email into tasks: .eml files, a Maildir, an mbox file, or the IMAP mailbox.

    python manage.py ingest_email --eml referral.eml reply.eml
    python manage.py ingest_email --maildir /var/mail/intake --mbox archive.mbox
    python manage.py ingest_email --imap          # settings IMAP_HOST, IMAP_USER, …

Every message goes through the same intake as the API's (stored raw first; a resend, by
Message-ID, answers with its task; a reply joins the task it answers). Running it twice over
the same files is safe. The summary names the stored messages by InboundMessage id; the
failed ones wait on the Failed intake page.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management import BaseCommand, CommandError, CommandParser

from queues.intake import mailbox
from queues.jobs import IMAP_BATCH, IngestSummary, email_ingest


class Command(BaseCommand):
    help = "Read email (.eml files, a Maildir, an mbox, or the IMAP mailbox) into tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--eml", nargs="+", action="extend", default=[], metavar="FILE", help=".eml files"
        )
        parser.add_argument(
            "--maildir", action="append", default=[], metavar="DIR", help="a Maildir folder"
        )
        parser.add_argument(
            "--mbox", action="append", default=[], metavar="FILE", help="an mbox file"
        )
        parser.add_argument(
            "--imap",
            action="store_true",
            help="the unseen messages of the IMAP mailbox in the settings (IMAP_HOST, …)",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=IMAP_BATCH,
            help=f"IMAP: at most this many messages (default {IMAP_BATCH})",
        )

    def handle(self, *args, **options):
        sources = []
        for path in options["eml"]:
            if not Path(path).is_file():
                raise CommandError(f"No such file: {path}")
        if options["eml"]:
            sources.append(mailbox.eml_items(options["eml"]))
        for path in options["maildir"]:
            if not (Path(path) / "cur").is_dir() or not (Path(path) / "new").is_dir():
                raise CommandError(f"{path} is not a Maildir (it needs cur/ and new/).")
            sources.append(mailbox.maildir_items(path))
        for path in options["mbox"]:
            if not Path(path).is_file():
                raise CommandError(f"No such mbox file: {path}")
            sources.append(mailbox.mbox_items(path))
        if not sources and not options["imap"]:
            raise CommandError(
                "Say what to read: --eml FILE…, --maildir DIR, --mbox FILE or --imap."
            )

        summary = IngestSummary()
        for source in sources:
            self._merge(summary, email_ingest(source))
        if options["imap"]:
            if not settings.IMAP_HOST:
                raise CommandError("--imap needs IMAP_HOST (and IMAP_USER, IMAP_PASSWORD) set.")
            config = mailbox.ImapConfig.from_settings()
            try:
                with mailbox.imap_session(config) as connection:
                    items = mailbox.imap_items(connection, config, options["limit"])
                    self._merge(summary, email_ingest(items))
            except mailbox.ImapError as error:
                raise CommandError(str(error)) from None
        self._report(summary)
        if summary.errors:
            raise CommandError(
                f"{len(summary.errors)} message(s) could not be taken in (see the log): "
                + ", ".join(summary.errors)
            )

    @staticmethod
    def _merge(into: IngestSummary, part: IngestSummary) -> None:
        for field in ("created", "resent", "replies", "duplicates", "failed", "errors"):
            getattr(into, field).extend(getattr(part, field))

    def _report(self, summary: IngestSummary) -> None:
        lines = [
            ("created", "new tasks"),
            ("resent", "seen before (same Message-ID): their tasks"),
            ("replies", "replies added to their tasks"),
            ("duplicates", "linked to an open task as duplicates"),
            ("failed", "failed, on the Failed intake page"),
        ]
        for field, meaning in lines:
            ids = getattr(summary, field)
            shown = f" (inbound {', '.join(map(str, ids))})" if ids else ""
            self.stdout.write(f"{len(ids):>5} {meaning}{shown}")
