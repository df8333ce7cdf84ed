"""`python manage.py try_rules`: what a rule set would decide for a message, and why, without
creating a task. See routing/preview.py; the admin's "Try the rules" page shows the same."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import Site
from queues.models import Channel
from routing import engine, preview, selectors
from routing.models import RuleSet

FIELDS = ("channel", "subject", "body", "request_type", "source_system", "site", "patient_mrn")
TEXT_LIMITS = {
    "subject": 300,
    "body": None,
    "request_type": 60,
    "source_system": 80,
    "site": 40,
    "patient_mrn": 40,
}


class MessageError(ValueError):
    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"{field!r} {problem}" if field else problem)
        self.field = field
        self.problem = problem


def parse_message(data: Any, sites: dict[str, int]) -> dict[str, Any]:
    """One message as `preview` takes it; raises MessageError naming the field and the fix."""
    if not isinstance(data, dict):
        raise MessageError(None, 'expected a JSON object such as {"channel": "portal", ...}')
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise MessageError(unknown[0], f"is not a field (expected {', '.join(FIELDS)})")
    channel = data.get("channel")
    if channel not in Channel.values:
        raise MessageError(
            "channel", f"must be one of {', '.join(Channel.values)} (got {channel!r})"
        )
    for name, limit in TEXT_LIMITS.items():
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise MessageError(name, f"must be text (got {type(value).__name__})")
        if limit is not None and len(value or "") > limit:
            raise MessageError(name, f"is longer than {limit} characters")
    if not (data.get("subject") or "").strip():
        raise MessageError("subject", "is required and must not be empty")
    site_code = data.get("site") or ""
    if site_code and site_code not in sites:
        known = ", ".join(sorted(sites)) or "none defined"
        raise MessageError("site", f"{site_code!r} is not a site code (known: {known})")
    return {
        "channel": channel,
        "subject": data["subject"],
        "body": data.get("body") or "",
        "request_type": data.get("request_type") or "",
        "source_system": data.get("source_system") or "",
        "site_id": sites[site_code] if site_code else None,
        "patient_mrn": data.get("patient_mrn") or "",
    }


class Command(BaseCommand):
    help = (
        "Show what a rule set (the active one unless --rule-set) would decide for a message: "
        "type, priority, tags, the rules that matched, the queue and who would get it, and why. "
        "Creates nothing. Give one message with --channel/--subject/--body, or many with "
        "--file (one JSON object a line)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channel", help=f"one of {', '.join(Channel.values)}")
        parser.add_argument("--subject")
        parser.add_argument("--body", default="")
        parser.add_argument("--request-type", default="")
        parser.add_argument("--source-system", default="")
        parser.add_argument("--site", default="", metavar="CODE", help="the site's code")
        parser.add_argument("--patient-mrn", default="", help="for continuity of assignment")
        parser.add_argument(
            "--rule-set",
            type=int,
            metavar="VERSION",
            help="the rule set version to try (default: the active one)",
        )
        parser.add_argument(
            "--at",
            metavar="ISO_DATETIME",
            help="as if the message arrived then, e.g. 2025-03-04T18:30 (default: now)",
        )
        parser.add_argument(
            "--file",
            metavar="PATH",
            help='messages, one JSON object a line: {"channel", "subject", "body", '
            '"request_type"?, "source_system"?, "site"?, "patient_mrn"?}; "-" reads stdin',
        )
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object a line instead of words"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sites = dict(Site.objects.values_list("code", "id"))
        messages = self.messages(options, sites)
        rule_set_id = self.rule_set_id(options["rule_set"])
        now = self.moment(options["at"])
        warned = False
        for line, message in messages:
            try:
                decision = preview.preview(rule_set_id=rule_set_id, now=now, **message)
            except (selectors.NoActiveRuleSet, engine.RuleSetError) as error:
                raise CommandError(str(error)) from error
            if not warned:
                for problem in preview.rule_set_problems(decision):
                    self.stderr.write(f"warning: {problem}")
                warned = True
            if options["json"]:
                summary = preview.decision_summary(decision)
                if line is not None:
                    summary = {"line": line, **summary}
                self.stdout.write(json.dumps(summary, default=str))
            else:
                self.write_text(line, message, decision, several=len(messages) > 1)

    def messages(
        self, options: dict[str, Any], sites: dict[str, int]
    ) -> list[tuple[int | None, dict[str, Any]]]:
        """Every message, checked before any is tried: a bad line stops the run up front."""
        if options["file"]:
            return self.read_file(options["file"], sites)
        if not options["channel"] or not options["subject"]:
            raise CommandError("Give --channel and --subject (and --body), or --file.")
        data = {
            "channel": options["channel"],
            "subject": options["subject"],
            "body": options["body"],
            "request_type": options["request_type"],
            "source_system": options["source_system"],
            "site": options["site"],
            "patient_mrn": options["patient_mrn"],
        }
        try:
            return [(None, parse_message(data, sites))]
        except MessageError as error:
            option = f"--{error.field.replace('_', '-')} " if error.field else ""
            raise CommandError(f"{option}{error.problem}") from error

    def read_file(self, path: str, sites: dict[str, int]) -> list[tuple[int, dict[str, Any]]]:
        try:
            handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}.") from error
        messages = []
        with handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as error:
                    raise CommandError(f"line {number}: not valid JSON ({error.msg})") from error
                try:
                    messages.append((number, parse_message(data, sites)))
                except MessageError as error:
                    raise CommandError(f"line {number}: {error}") from error
        if not messages:
            raise CommandError(f"{path} holds no messages.")
        return messages

    def rule_set_id(self, version: int | None) -> int | None:
        if version is None:
            return None
        found = RuleSet.objects.filter(version=version).values_list("id", flat=True).first()
        if found is None:
            raise CommandError(f"There is no rule set version {version}.")
        return found

    def moment(self, text: str | None) -> datetime | None:
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as error:
            raise CommandError(
                f"--at {text!r} is not a date and time such as 2025-03-04T18:30."
            ) from error
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment

    def write_text(
        self, line: int | None, message: dict[str, Any], decision: engine.Decision, several: bool
    ) -> None:
        if several:
            where = f" (line {line})" if line is not None else ""
            self.stdout.write(self.style.MIGRATE_HEADING(f"{message['subject']}{where}"))
        self.stdout.write(engine.explain_text(decision))
        if several:
            self.stdout.write("")
