"""The routing engine: classify, route and assign one task. Pure.

Frozen specs in, a `Decision` with its explanation out. No Django, no database, no clock (the
caller passes `now` and the site's local time), no randomness (rollout buckets are a hash of
the rule id and the task key), so a decision can be replayed and tested without a database.

Use on the hot path::

    compiled = compile_ruleset(spec)        # once per rule-set version: phrases, regexes, indexes
    pool = CandidatePool(candidates)        # once per staff snapshot: per-queue orderings
    decision = decide(compiled, facts, pool, now)
    decision.explanation_dict()             # built only when asked for, JSON-serialisable

`decide` also accepts a plain `RuleSetSpec` (compiled on every call) and a plain sequence of
`CandidateSpec` (indexed on every call): correct, just slower.

How `decide` stays fast (about 10 µs for 200 rules and 50 candidates; `routing/benchmarks.py`):
the text is cut into words once (ASCII: one `bytes.translate` and `split`), and one set
intersection with the rule set's word index finds the phrases' key words. Sets of
classification rules are bit masks by rule position, so the rules a word satisfies join with
one `|`; a longer phrase is confirmed with one precompiled regex over the folded text. What
the exact-match conditions (channel, request type, source system) leave is a mask per
combination; only rules with a regex, a rollout or "stop" are then visited one by one. What a
set of applied rules decides (ids, type, priority actions, tags) is memoised per mask, the
routing rules per (task type, priority, channel), and the pool keeps each queue's candidates
in choice order (`CandidatePool.rows`), so assigning is a short scan that stops at the first
eligible person. Shadow rules and rules at 0% rollout never change a decision, so `decide`
skips them; `trace`, the plain reference evaluation behind every explanation, evaluates all.
Nothing is cached by message text or task key.

Matching rules, for whoever edits rules:

- A phrase matches whole words, case-insensitively: text and phrase are both cut into words
  (runs of letters, digits and "_"); the phrase's words must appear next to each other.
  "bed" does not match "embedded"; "chest pain" matches "Chest-pain!".
- A regex is searched case-insensitively in subject + "\\n" + body.
- Every condition a rule has must hold; an empty tuple means "any".
- Priority: start from the task type's default, or the sender's urgency hint when it is more
  urgent. A rule's `set_priority` replaces that start (several: the most urgent wins), a rule's
  `min_priority` raises it to at least that level. A routing rule's `priority_override` has the
  last word. Red flags are always P1.
- A rule in rollout (`rollout_percent` < 100) applies to a stable share of tasks: bucket =
  sha256("<rule id>:<task key>")[:8] as an integer, modulo 100, applies when < rollout_percent.
- Shadow rules are evaluated and reported ("would have...") but never change the decision,
  and never stop evaluation. Off rules are skipped and only counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, time
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

__all__ = [
    "Assignment",
    "CandidatePool",
    "CandidateSpec",
    "ClassificationRuleSpec",
    "CompiledRuleSet",
    "Decision",
    "Explanation",
    "QueueSpec",
    "Route",
    "RoutingRuleSpec",
    "RuleSetError",
    "RuleSetSpec",
    "TaskFacts",
    "TaskTypeSpec",
    "Trace",
    "choose_assignee",
    "compile_ruleset",
    "decide",
    "explain_text",
    "rollout_bucket",
    "route_classified",
    "trace",
    "validate_classification_rule",
    "validate_routing_rule",
]

MODES = ("active", "shadow", "off")
PHRASE_MATCHES = ("any", "all")
BUSINESS_HOURS = ("any", "open", "closed")
POLICIES = ("push_least_loaded", "push_round_robin", "pull_only")
DEFAULT_PRIORITY = 3  # for a task whose type is unknown (it goes to review)
RED_FLAG_TAG = "red-flag"
NON_FIELD = "__all__"  # Django's NON_FIELD_ERRORS key, so form.add_error(None, ...) lines up

REASONS = ("not_in_queue", "excluded", "away", "offline", "off_shift", "at_capacity", "lacks_skill")
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# --- Inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassificationRuleSpec:
    id: int
    name: str
    order: int = 0
    mode: str = "active"
    rollout_percent: int = 100
    # conditions (all that are set must hold)
    channels: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    phrase_match: str = "any"
    regex: str = ""
    request_types: tuple[str, ...] = ()
    source_systems: tuple[str, ...] = ()
    # actions
    set_task_type: str = ""
    set_priority: int | None = None
    min_priority: int | None = None
    add_tags: tuple[str, ...] = ()
    stop: bool = False


@dataclass(frozen=True, slots=True)
class RoutingRuleSpec:
    id: int
    name: str
    target_queue_id: int
    order: int = 0
    mode: str = "active"
    rollout_percent: int = 100
    # conditions
    task_types: tuple[str, ...] = ()
    priority_min: int = 1
    priority_max: int = 4
    tags_any: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    site_ids: tuple[int, ...] = ()
    business_hours: str = "any"
    weekdays: tuple[int, ...] = ()  # 0 = Monday
    time_from: time | None = None  # local; time_from > time_to wraps midnight
    time_to: time | None = None
    # actions
    required_skill: str = ""
    min_skill_level: int = 1
    priority_override: int | None = None


@dataclass(frozen=True, slots=True)
class TaskTypeSpec:
    code: str
    name: str
    default_queue_id: int
    default_priority: int = DEFAULT_PRIORITY
    capacity_weight: int = 1


@dataclass(frozen=True, slots=True)
class QueueSpec:
    id: int
    name: str
    department_id: int = 0
    kind: str = "work"  # work / holding / review / escalation
    policy: str = "push_least_loaded"


@dataclass(frozen=True, slots=True)
class RuleSetSpec:
    version: int
    task_types: Mapping[str, TaskTypeSpec]
    queues: Mapping[int, QueueSpec]
    review_queue_id: int
    red_flag_queue_id: int
    classification_rules: tuple[ClassificationRuleSpec, ...] = ()
    routing_rules: tuple[RoutingRuleSpec, ...] = ()
    red_flag_phrases: tuple[str, ...] = ()
    red_flag_task_type: str = "clinical_triage"


@dataclass(frozen=True, slots=True)
class TaskFacts:
    key: str  # stable per task: rollout buckets hash it
    channel: str
    subject: str
    body: str
    local_now: datetime  # the site's local time, for weekday and time-of-day windows
    request_type: str = ""
    source_system: str = ""
    site_id: int | None = None
    patient_key: str = ""
    urgency_hint: int | None = None
    tags: tuple[str, ...] = ()
    site_business_open: bool = True


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    staff_id: int
    name: str
    queue_ids: frozenset[int]
    availability: str = "available"  # available / away / offline
    shift_start: time | None = None  # local to time_zone; start > end wraps midnight
    shift_end: time | None = None
    shift_weekdays: tuple[int, ...] = ()  # the day a shift starts on; empty = every day
    time_zone: str = "UTC"
    active_load: int = 0
    capacity: int = 1
    skills: Mapping[str, int] = field(default_factory=dict)
    last_assigned_at: datetime | None = None  # aware
    open_patient_keys: frozenset[str] = frozenset()


class RuleSetError(ValueError):
    """The rule set cannot route anything (a queue every decision may need is missing)."""


# --- Text matching --------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")
# ASCII fast path of `\w+` over lower-cased text: one bytes.translate lower-cases A-Z and turns
# every other non-word byte into a space; split() then yields the same words as the regex.
_FOLD = bytes(
    c + 32
    if 65 <= c <= 90
    else c
    if (48 <= c <= 57 or 97 <= c <= 122 or c == 95 or c >= 128)
    else 32
    for c in range(256)
)


_FOLD_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # the bytes _FOLD keeps as they are


def _words(text: str) -> list[bytes]:
    if text.isascii():
        return text.encode().translate(_FOLD).split()
    return [w.encode() for w in _WORD_RE.findall(text.lower())]


def _joined(words: Sequence[bytes]) -> bytes:
    return b" " + b" ".join(words) + b" "


def _compile_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


class _Literals(NamedTuple):
    """What a regex needs from a text, found by reading its parsed form (lower-cased ASCII).

    A substring test is ~20x cheaper than a regex search, so the engine runs the regex only
    when every `required` literal occurs; and when every match has `anchor` at a fixed
    `offset` from its start, it tries `match` only there (`find` the anchor, step back by the
    offset) instead of `search`, which a leading `\b` makes try every position. ASCII texts
    only: there lower-casing keeps positions, and IGNORECASE equals comparing lower-cased.
    """

    anchor: str
    offset: int
    required: tuple[str, ...]


_NO_LITERALS = _Literals("", 0, ())


def _required_literals(pattern: str) -> _Literals:
    try:
        from re import _constants, _parser  # private, so any surprise disables the filter

        items = _parser.parse(pattern, re.IGNORECASE)
    except Exception:
        return _NO_LITERALS
    literal, repeats = _constants.LITERAL, (_constants.MAX_REPEAT, _constants.MIN_REPEAT)
    subpattern, zero_width = _constants.SUBPATTERN, _constants.AT
    runs: list[str] = []

    def walk(seq: Any) -> None:
        run: list[str] = []
        for op, av in seq:
            if op is literal:
                run.append(chr(av))
                continue
            if op is zero_width:  # \b, ^: consume nothing, so the run stays contiguous
                continue
            runs.append("".join(run))
            run = []
            if op is subpattern:
                walk(av[-1])
            elif op in repeats and av[0] >= 1:
                walk(av[2])
        runs.append("".join(run))

    try:
        walk(items)
        anchor, offset = "", 0
        for op, av in items:  # the first literal run, if a fixed width precedes it
            if op is literal:
                anchor += chr(av)
                continue
            if anchor:
                break
            low, high = _parser.SubPattern(items.state, [(op, av)]).getwidth()
            if low != high:
                break
            offset += low
    except Exception:
        return _NO_LITERALS
    found = {run.lower() for run in runs if run and run.isascii()}
    # One letter or digit filters little (keep it if alone); one punctuation character, rare
    # in prose, filters well ("#" of "PA\s*#\s*\d+" where "pa" starts many words), so it
    # comes first, as the literal a rule set's bulk filter tests (see `_View`).
    useful = {run for run in found if len(run) > 1 or not run.isalnum()}
    required = tuple(sorted(useful or found, key=lambda run: (run.isalnum(), -len(run), run)))
    if not anchor.isascii():
        anchor, offset = "", 0
    return _Literals(anchor.lower(), offset, required)


def _regex_search(r: _CRule, text: str, lower_text: str | None) -> re.Match[str] | None:
    """`r.regex.search(text)`, cheaper: pass `text.lower()` for an ASCII text (else None) and
    the required literals are checked first and the anchor literal located (`_Literals`)."""
    regex = r.regex
    assert regex is not None
    if lower_text is None or not r.literals:
        return regex.search(text)
    for literal in r.literals:
        if literal not in lower_text:
            return None
    if not r.anchor:
        return regex.search(text)
    anchor, offset = r.anchor, r.offset
    at = lower_text.find(anchor)
    while at >= 0:
        if at >= offset:
            m = regex.match(text, at - offset)
            if m is not None:
                return m
        at = lower_text.find(anchor, at + 1)
    return None


def rollout_bucket(rule_id: int, task_key: str) -> int:
    """0-99, stable for a (rule, task) pair; a rule applies when bucket < rollout_percent."""
    return int(hashlib.sha256(f"{rule_id}:{task_key}".encode()).hexdigest()[:8], 16) % 100


def _bucket(prefix: bytes, task_key: str, _sha256: Any = hashlib.sha256) -> int:
    """`rollout_bucket` with the rule's b"<id>:" prepared: the first 8 hex digits of the digest
    are its first 4 bytes, big-endian."""
    return int.from_bytes(_sha256(prefix + task_key.encode()).digest()[:4], "big") % 100


def _in_window(start: time, end: time, t: time) -> bool:
    if start < end:
        return start <= t < end
    if start > end:  # wraps midnight, e.g. 16:00 -> 08:00
        return t >= start or t < end
    return True  # start == end: all day


# --- Validation (the admin and compile_ruleset use the same functions) -----------------------


def _str_tuple(value: Any) -> tuple[str, ...]:
    """A tuple of strings from a tuple/list, or from text with one entry per line."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(line.strip() for line in value.splitlines() if line.strip())
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(
    errors: dict[str, list[str]],
    name: str,
    value: Any,
    low: int,
    high: int,
    message: str,
    *,
    optional: bool = False,
) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or not low <= value <= high:
        errors.setdefault(name, []).append(message)


def _check_choice(
    errors: dict[str, list[str]], name: str, value: Any, choices: Sequence[str]
) -> None:
    if value not in choices:
        options = ", ".join(f'"{c}"' for c in choices)
        errors.setdefault(name, []).append(f"Choose one of {options} (got {value!r}).")


def _check_strings(errors: dict[str, list[str]], name: str, values: tuple[Any, ...]) -> None:
    for i, value in enumerate(values, start=1):
        if not isinstance(value, str) or not value.strip():
            errors.setdefault(name, []).append(f"Entry {i} is empty: remove it or fill it in.")


def _check_common(errors: dict[str, list[str]], fields: Mapping[str, Any]) -> None:
    if not str(fields.get("name") or "").strip():
        errors.setdefault("name", []).append("Give the rule a name people will recognise.")
    _check_choice(errors, "mode", fields.get("mode", "active"), MODES)
    _check_int(
        errors,
        "rollout_percent",
        fields.get("rollout_percent", 100),
        0,
        100,
        "Rollout must be a whole number from 0 to 100 (100 = every task).",
    )


def validate_classification_rule(
    fields: Mapping[str, Any], *, task_type_codes: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Field name -> messages a manager can act on; empty when the rule is usable.

    `fields` uses the names of `ClassificationRuleSpec`; missing keys take its defaults. List
    fields may be tuples/lists or text with one entry per line. Pass `task_type_codes` to check
    that `set_task_type` exists.
    """
    errors: dict[str, list[str]] = {}
    _check_common(errors, fields)

    channels = _str_tuple(fields.get("channels"))
    request_types = _str_tuple(fields.get("request_types"))
    source_systems = _str_tuple(fields.get("source_systems"))
    for name, values in (
        ("channels", channels),
        ("request_types", request_types),
        ("source_systems", source_systems),
    ):
        _check_strings(errors, name, values)

    phrases = _str_tuple(fields.get("phrases"))
    for i, phrase in enumerate(phrases, start=1):
        if not isinstance(phrase, str) or not phrase.strip():
            errors.setdefault("phrases", []).append(
                f"Phrase {i} is empty: remove it or type the words to look for."
            )
        elif not _WORD_RE.search(phrase):
            errors.setdefault("phrases", []).append(
                f"Phrase {i} ({phrase!r}) has no letters or digits, so it can never match."
            )
    _check_choice(errors, "phrase_match", fields.get("phrase_match", "any"), PHRASE_MATCHES)

    regex = fields.get("regex") or ""
    if not isinstance(regex, str):
        errors.setdefault("regex", []).append("The pattern must be text.")
        regex = ""
    elif regex:
        try:
            compiled = _compile_regex(regex)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            errors.setdefault("regex", []).append(
                f"Not a valid regular expression: {exc.msg}{where}."
            )
        else:
            if compiled.search("") is not None:
                errors.setdefault("regex", []).append(
                    "This pattern matches an empty text, so it would match every message; "
                    "make it require at least one character."
                )

    if not (channels or phrases or regex or request_types or source_systems):
        errors.setdefault(NON_FIELD, []).append(
            "Add at least one condition (channel, phrase, pattern, request type or source "
            "system): a rule without conditions matches nothing."
        )

    set_task_type = fields.get("set_task_type") or ""
    if not isinstance(set_task_type, str):
        errors.setdefault("set_task_type", []).append("The task type must be a type code.")
    elif set_task_type and task_type_codes is not None and set_task_type not in task_type_codes:
        errors.setdefault("set_task_type", []).append(
            f"There is no task type {set_task_type!r}: pick one from the catalog."
        )
    for name in ("set_priority", "min_priority"):
        _check_int(
            errors,
            name,
            fields.get(name),
            1,
            4,
            "Priority must be 1 (most urgent) to 4, or empty.",
            optional=True,
        )
    add_tags = _str_tuple(fields.get("add_tags"))
    _check_strings(errors, "add_tags", add_tags)

    stop = bool(fields.get("stop", False))
    if not (
        set_task_type
        or fields.get("set_priority") is not None
        or fields.get("min_priority") is not None
        or add_tags
        or stop
    ):
        errors.setdefault(NON_FIELD, []).append(
            "The rule does nothing: set a task type, a priority, a tag, or 'stop'."
        )
    return errors


def _as_time(value: Any) -> tuple[time | None, bool]:
    if value is None or value == "":
        return None, True
    if isinstance(value, time):
        return value, True
    if isinstance(value, str):
        try:
            return time.fromisoformat(value), True
        except ValueError:
            return None, False
    return None, False


def validate_routing_rule(
    fields: Mapping[str, Any],
    *,
    queue_ids: Collection[int] | None = None,
    task_type_codes: Collection[str] | None = None,
) -> dict[str, list[str]]:
    """Field name -> messages a manager can act on; empty when the rule is usable.

    `fields` uses the names of `RoutingRuleSpec`; missing keys take its defaults. A routing rule
    without conditions is allowed: it catches everything that reaches it.
    """
    errors: dict[str, list[str]] = {}
    _check_common(errors, fields)

    task_types = _str_tuple(fields.get("task_types"))
    _check_strings(errors, "task_types", task_types)
    if task_type_codes is not None:
        unknown = [t for t in task_types if isinstance(t, str) and t not in task_type_codes]
        if unknown:
            errors.setdefault("task_types", []).append(f"Unknown task types: {', '.join(unknown)}.")
    _check_strings(errors, "tags_any", _str_tuple(fields.get("tags_any")))
    _check_strings(errors, "channels", _str_tuple(fields.get("channels")))

    pmin = fields.get("priority_min", 1)
    pmax = fields.get("priority_max", 4)
    message = "Priority must be 1 (most urgent) to 4."
    _check_int(errors, "priority_min", pmin, 1, 4, message)
    _check_int(errors, "priority_max", pmax, 1, 4, message)
    if "priority_min" not in errors and "priority_max" not in errors and pmin > pmax:
        errors.setdefault("priority_max", []).append(
            f"P{pmin} to P{pmax} is an empty range: the first priority must not be above the "
            "second, so no task could match."
        )

    for site_id in fields.get("site_ids") or ():
        if not _is_int(site_id):
            errors.setdefault("site_ids", []).append(f"{site_id!r} is not a site id.")
    _check_choice(errors, "business_hours", fields.get("business_hours", "any"), BUSINESS_HOURS)
    for day in fields.get("weekdays") or ():
        if not _is_int(day) or not 0 <= day <= 6:
            errors.setdefault("weekdays", []).append(
                f"{day!r} is not a weekday: use 0 (Monday) to 6 (Sunday)."
            )

    time_from, ok_from = _as_time(fields.get("time_from"))
    time_to, ok_to = _as_time(fields.get("time_to"))
    if not ok_from:
        errors.setdefault("time_from", []).append("Enter a time as HH:MM.")
    if not ok_to:
        errors.setdefault("time_to", []).append("Enter a time as HH:MM.")
    if ok_from and ok_to:
        if time_from is not None and time_to is None:
            errors.setdefault("time_to", []).append("Set an end time too, or clear the start time.")
        elif time_to is not None and time_from is None:
            errors.setdefault("time_from", []).append(
                "Set a start time too, or clear the end time."
            )
        elif time_from is not None and time_from == time_to:
            errors.setdefault("time_to", []).append(
                "Start and end are the same: leave both empty for the whole day. "
                "(An end before the start wraps past midnight, e.g. 16:00 to 08:00.)"
            )

    target = fields.get("target_queue_id")
    if not _is_int(target) or target <= 0:
        errors.setdefault("target_queue_id", []).append("Choose the queue to route to.")
    elif queue_ids is not None and target not in queue_ids:
        errors.setdefault("target_queue_id", []).append(f"Queue {target} does not exist.")
    required_skill = fields.get("required_skill") or ""
    if not isinstance(required_skill, str):
        errors.setdefault("required_skill", []).append("The skill must be a skill code.")
    _check_int(
        errors,
        "min_skill_level",
        fields.get("min_skill_level", 1),
        1,
        5,
        "Skill level must be 1 to 5.",
    )
    _check_int(
        errors,
        "priority_override",
        fields.get("priority_override"),
        1,
        4,
        "Priority must be 1 (most urgent) to 4, or empty.",
        optional=True,
    )
    return errors


def _spec_fields(spec: Any) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in fields(spec)}


def _problem(kind: str, rule_id: int, name: str, errors: Mapping[str, list[str]]) -> str:
    detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
    return f"{kind} rule {rule_id} ({name}) is disabled: {detail}"


# --- Compiled rule set ----------------------------------------------------------------------

_NO_PRIORITY = 5  # sentinel: "no priority set" compares above every real priority
_MEMO_LIMIT = 10_000  # memo keys include caller-supplied strings, so keep them bounded


class _CRule:
    """A compiled classification rule: sets for membership tests, the regex compiled once,
    and flags that let the hot loop skip what a rule does not use."""

    __slots__ = (
        "anchor",
        "bucket_prefix",
        "channels",
        "gated",
        "id",
        "literals",
        "live",
        "min_priority",
        "n_phrases",
        "needles",
        "offset",
        "phrase_all",
        "phrases",
        "pos",
        "prio",
        "regex",
        "request_types",
        "rollout",
        "set_priority",
        "set_type",
        "shadow",
        "simple",
        "source_systems",
        "spec",
        "stop",
        "tags",
    )

    def __init__(self, pos: int, spec: ClassificationRuleSpec) -> None:
        self.pos = pos
        self.spec = spec
        self.id = spec.id
        self.shadow = spec.mode == "shadow"
        self.rollout = spec.rollout_percent
        self.gated = self.shadow or self.rollout < 100
        self.channels = frozenset(spec.channels)
        self.request_types = frozenset(spec.request_types)
        self.source_systems = frozenset(spec.source_systems)
        self.regex = _compile_regex(spec.regex) if spec.regex else None
        self.anchor, self.offset, self.literals = (
            _required_literals(spec.regex) if spec.regex else _NO_LITERALS
        )
        # distinct phrases as word tuples, in the order written
        self.phrases = tuple(dict.fromkeys(tuple(_words(p)) for p in _str_tuple(spec.phrases)))
        self.needles = tuple(_joined(p) for p in self.phrases)
        self.n_phrases = len(self.phrases)
        self.phrase_all = spec.phrase_match == "all"
        self.set_type = spec.set_task_type
        self.set_priority = spec.set_priority or _NO_PRIORITY
        self.min_priority = spec.min_priority or _NO_PRIORITY
        self.prio = spec.set_priority is not None or spec.min_priority is not None
        self.tags = tuple(spec.add_tags)
        self.stop = spec.stop
        # Applies whenever its phrase occurs and its exact-match conditions (channel, request
        # type, source system) hold: evaluated in bulk, by set operations.
        self.simple = not (self.regex or self.gated or self.stop or self.phrase_all)
        # Can change a decision: shadow rules and a 0% rollout never do, so `decide` skips them.
        self.live = not self.shadow and self.rollout > 0
        self.bucket_prefix = f"{self.id}:".encode()

    def matches(
        self, facts: TaskFacts, text: str, joined: bytes, lower_text: str | None
    ) -> dict[str, Any] | None:
        """What made the conditions hold, or None. The plain version of the hot loop's test;
        `lower_text` as for `_regex_search`."""
        what: dict[str, Any] = {}
        if self.phrases:
            found = [
                p for p, needle in zip(self.phrases, self.needles, strict=True) if needle in joined
            ]
            if not found or (self.phrase_all and len(found) < self.n_phrases):
                return None
            what["phrases"] = [_words_text(p) for p in found]
        if self.channels:
            if facts.channel not in self.channels:
                return None
            what["channel"] = facts.channel
        if self.request_types:
            if facts.request_type not in self.request_types:
                return None
            what["request_type"] = facts.request_type
        if self.source_systems:
            if facts.source_system not in self.source_systems:
                return None
            what["source_system"] = facts.source_system
        if self.regex is not None:
            m = _regex_search(self, text, lower_text)
            if m is None:
                return None
            what["regex"] = m.group(0)[:80]
        return what


class _RRule:
    __slots__ = (
        "bucket_prefix",
        "channels",
        "dynamic",
        "hours",
        "id",
        "level",
        "live",
        "override",
        "pos",
        "prio_max",
        "prio_min",
        "queue_id",
        "rollout",
        "shadow",
        "site_ids",
        "skill",
        "spec",
        "tags_any",
        "task_types",
        "weekdays",
        "window",
    )

    def __init__(self, pos: int, spec: RoutingRuleSpec) -> None:
        self.pos = pos
        self.spec = spec
        self.id = spec.id
        self.shadow = spec.mode == "shadow"
        self.rollout = spec.rollout_percent
        self.task_types = frozenset(spec.task_types)
        self.prio_min = spec.priority_min
        self.prio_max = spec.priority_max
        self.channels = frozenset(spec.channels)
        self.tags_any = frozenset(spec.tags_any)
        self.site_ids = frozenset(spec.site_ids)
        self.hours = BUSINESS_HOURS.index(spec.business_hours)  # 0 any, 1 open, 2 closed
        self.weekdays = frozenset(spec.weekdays)
        self.window = (  # local; from > to wraps midnight
            (spec.time_from, spec.time_to)
            if spec.time_from is not None and spec.time_to is not None
            else None
        )
        # conditions left after the (type, priority, channel) pre-selection
        self.dynamic = bool(
            self.tags_any or self.site_ids or self.hours or self.weekdays or self.window
        )
        self.live = not self.shadow and self.rollout > 0  # can win (see `_CRule.live`)
        self.bucket_prefix = f"{self.id}:".encode()
        self.queue_id = spec.target_queue_id
        self.skill = spec.required_skill
        self.level = spec.min_skill_level if spec.required_skill else 0
        self.override = spec.priority_override or 0

    def selected(self, task_type: str, priority: int, channel: str) -> bool:
        return (
            (not self.task_types or task_type in self.task_types)
            and self.prio_min <= priority <= self.prio_max
            and (not self.channels or channel in self.channels)
        )

    def matches(self, tags: Collection[str], facts: TaskFacts) -> bool:
        local_now = facts.local_now
        return (
            (not self.tags_any or not self.tags_any.isdisjoint(tags))
            and (not self.site_ids or facts.site_id in self.site_ids)
            and (not self.hours or (self.hours == 1) == facts.site_business_open)
            and (not self.weekdays or local_now.weekday() in self.weekdays)
            and (self.window is None or _in_window(*self.window, local_now.time()))
        )


def _key_word(words: tuple[bytes, ...]) -> bytes:
    """The word a phrase is indexed by: its longest, as a rule rarer than short ones ("of",
    "my", "out"), so a text without it never looks at the phrase. Every word of a phrase must
    occur for it to match, so any of them would be correct."""
    return max(words, key=len)


def _adjacent(words: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """A bytes pattern finding `words` as adjacent whole words in an ASCII text folded by
    `_FOLD` (which turns each run of separators into a run of spaces) or in words joined by
    single spaces. It starts with the first word's literal so `search` can skip ahead to it; a
    look-behind after it (no non-space before the word) and a look-ahead at the end (no
    non-space after the last) make the words whole."""
    first = re.escape(words[0])
    rest = b"".join(b" +" + re.escape(w) for w in words[1:])
    return re.compile(first + b"(?<![^ ]" + first + b")" + rest + b"(?![^ ])")


class _Check(NamedTuple):
    """What a key word needs beyond its mask (see `CompiledRuleSet`): the word itself as a red
    flag or as a phrase of "all" rules, or a longer phrase keyed by it."""

    # a longer phrase: its `_adjacent` pattern's bound `search`; None: the word itself
    search: Callable[[bytes], re.Match[bytes] | None] | None
    red_flag: bool
    mask: int  # packed mask of the "any" rules using the phrase (see `CompiledRuleSet`)
    all_rules: tuple[tuple[int, int], ...]  # (position, bit of the phrase) of "all" rules


class _View(NamedTuple):
    """What the exact-match conditions (channel, request type, source system) leave of the
    classification rules for one combination of values: small, as it is memoised per
    combination, while the word index is shared (`CompiledRuleSet`). Packed masks: see
    `CompiledRuleSet`."""

    ok: int  # the live rules whose exact-match conditions hold, in both halves
    base: int  # ...those without phrases: the simple ones (they apply), the others (checked)
    # ...of those, the ones whose test left is a regex with a required literal, by literal, so
    # an ASCII text skips them with one substring test: (literal, mask), a literal of
    # lower-case letters, digits and "_" looked for in the folded bytes, one without cased
    # letters in the text as is, any other in the lower-cased text
    in_folded: tuple[tuple[bytes, int], ...]
    in_text: tuple[tuple[str, int], ...]
    in_lower: tuple[tuple[str, int], ...]
    regex_all: int  # the same rules, all of them (for non-ASCII texts)


_new_tuple = tuple.__new__  # builds a NamedTuple without the Python call of its own __new__


class _Outcome(NamedTuple):
    """What a set of applied classification rules decides (`CompiledRuleSet.outcome`)."""

    ids: tuple[int, ...]  # in order
    task_type: str  # "" when no rule set one, or rules disagree
    needs_review: bool  # ...for that reason
    start: int  # the type's default priority; needing review: the most urgent proposed one's
    weight: int  # capacity units (1 when needing review)
    set_priority: int  # the most urgent `set_priority` (_NO_PRIORITY: none)
    min_priority: int  # the most urgent `min_priority` (_NO_PRIORITY: none)
    tags: tuple[str, ...]  # added, in rule order, each once


class CompiledRuleSet:
    """A `RuleSetSpec` with its phrases, regexes and indexes built once. Immutable by use
    (bounded memos fill as traffic arrives; they never change a result).

    `problems` lists rules that failed validation: they are disabled rather than allowed to
    break routing for every task; the admin should show them.

    For `decide`, sets of classification rules are bit masks by position: a union is one `|`,
    and visiting the bits lowest first visits the rules in order. A packed mask holds two
    sets: the simple rules (phrase only, no gate, no stop: they apply) in the low `_width`
    bits, the rules to check one by one above them; so one `|` per word found unites both.
    Only live rules (`_CRule.live`) are in them.
    """

    __slots__ = (
        "_index",
        "_keys",
        "_low_mask",
        "_outcomes",
        "_phrase_rules",
        "_queue_info",
        "_routing_memo",
        "_rule_of",
        "_type_info",
        "_type_queue",
        "_values",
        "_views",
        "_width",
        "class_rules",
        "disabled_rule_ids",
        "off_count",
        "problems",
        "queues",
        "red_flags",
        "routing_rules",
        "spec",
        "task_types",
        "version",
    )

    def __init__(self, spec: RuleSetSpec) -> None:
        self.spec = spec
        self.version = spec.version
        self.task_types = spec.task_types
        self.queues = spec.queues
        if spec.review_queue_id not in spec.queues:
            raise RuleSetError(f"The review queue {spec.review_queue_id} does not exist.")
        if spec.red_flag_queue_id not in spec.queues:
            raise RuleSetError(f"The red-flag queue {spec.red_flag_queue_id} does not exist.")

        problems: list[str] = []
        disabled: list[int] = []
        type_codes = spec.task_types.keys()
        queue_ids = spec.queues.keys()
        off = 0

        class_specs: list[ClassificationRuleSpec] = []
        for rule in sorted(spec.classification_rules, key=lambda r: (r.order, r.id)):
            errors = validate_classification_rule(_spec_fields(rule), task_type_codes=type_codes)
            if errors:
                problems.append(_problem("Classification", rule.id, rule.name, errors))
                disabled.append(rule.id)
            elif rule.mode == "off":
                off += 1
            else:
                class_specs.append(rule)
        self.class_rules = tuple(_CRule(pos, r) for pos, r in enumerate(class_specs))

        routing_specs: list[RoutingRuleSpec] = []
        for rule in sorted(spec.routing_rules, key=lambda r: (r.order, r.id)):
            errors = validate_routing_rule(
                _spec_fields(rule), queue_ids=queue_ids, task_type_codes=type_codes
            )
            if errors:
                problems.append(_problem("Routing", rule.id, rule.name, errors))
                disabled.append(rule.id)
            elif rule.mode == "off":
                off += 1
            else:
                routing_specs.append(rule)
        self.routing_rules = tuple(_RRule(pos, r) for pos, r in enumerate(routing_specs))
        self.off_count = off

        red_flags: list[tuple[bytes, ...]] = []
        for phrase in spec.red_flag_phrases:
            words = tuple(_words(phrase))
            if words:
                red_flags.append(words)
            else:
                problems.append(f"Red-flag phrase {phrase!r} has no words and is ignored.")
        self.red_flags = tuple(dict.fromkeys(red_flags))
        self.problems = tuple(problems)
        self.disabled_rule_ids = tuple(disabled)

        # For `trace`: key word -> positions of the rules (shadow ones too) with such a phrase.
        phrase_rules: dict[bytes, set[int]] = {}
        for rule in self.class_rules:
            for words in rule.phrases:
                phrase_rules.setdefault(_key_word(words), set()).add(rule.pos)
        self._phrase_rules = {word: frozenset(ps) for word, ps in phrase_rules.items()}
        self._build_index()
        # Values the exact-match conditions name: any other value behaves like None.
        live = [r for r in self.class_rules if r.live]
        self._values = tuple(
            frozenset(v for r in live for v in getattr(r, name))
            for name in ("channels", "request_types", "source_systems")
        )
        # (channel, request type, source system) -> `_View`, built on first use.
        self._views: dict[tuple[str | None, str | None, str | None], _View] = {}
        # By bit (1 << position): the rule.
        self._rule_of = {1 << r.pos: r for r in self.class_rules}
        # What the applied rules decide, memoised per mask (`outcome`).
        self._outcomes: dict[int, _Outcome] = {}
        # Routing rules pre-selected by (task type, priority, channel), memoised likewise.
        self._routing_memo: dict[tuple[str, int, str], tuple[_RRule, ...]] = {}
        self._queue_info = {
            queue_id: (queue, (queue.id, queue.policy), queue.policy == "pull_only")
            for queue_id, queue in spec.queues.items()
        }
        self._type_info = {
            code: (tt.default_priority, tt.capacity_weight) for code, tt in spec.task_types.items()
        }
        self._type_queue = {
            code: (tt.default_queue_id if tt.default_queue_id in spec.queues else None)
            for code, tt in spec.task_types.items()
        }

    def view(self, channel: str, request_type: str, source_system: str) -> _View:
        """The rules `decide` evaluates for a task with these exact-match fields (`_View`),
        memoised per combination."""
        key = (channel, request_type, source_system)
        found = self._views.get(key)
        if found is None:
            channels, request_types, source_systems = self._values
            shared = (  # every value no rule names gets the same view
                channel if channel in channels else None,
                request_type if request_type in request_types else None,
                source_system if source_system in source_systems else None,
            )
            found = self._views.get(shared)
            if found is None:
                found = self._views[shared] = self._build_view(*shared)
            if len(self._views) < _MEMO_LIMIT:
                self._views[key] = found
        return found

    def _build_index(self) -> None:
        """The word index: the key word (`_key_word`) of every live rule's phrase and red flag
        -> (a packed mask of the rules the word alone satisfies as a one-word phrase, None or
        what it needs beyond that: red flags, "all" rules, longer phrases, see `_Check`)."""
        width = self._width = len(self.class_rules)
        self._low_mask = (1 << width) - 1
        # phrase -> [red flag?, packed mask, "all" rules]
        groups: dict[tuple[bytes, ...], list[Any]]
        groups = {words: [True, 0, []] for words in self.red_flags}
        for r in self.class_rules:
            if not r.live:
                continue
            for pidx, words in enumerate(r.phrases):
                group = groups.setdefault(words, [False, 0, []])
                if r.phrase_all:
                    group[2].append((r.pos, 1 << pidx))
                else:
                    group[1] |= 1 << r.pos if r.simple else 1 << (r.pos + width)
        masks: dict[bytes, int] = {}
        checks: dict[bytes, list[_Check]] = {}
        for words, (red, mask, all_rules) in groups.items():
            key = _key_word(words)
            if len(words) == 1:
                masks[key] = mask
                if red or all_rules:  # first, so a red flag returns before any regex runs
                    checks.setdefault(key, []).insert(0, _Check(None, red, 0, tuple(all_rules)))
                continue
            masks.setdefault(key, 0)
            search = _adjacent(words).search
            checks.setdefault(key, []).append(_Check(search, red, mask, tuple(all_rules)))
        self._keys = frozenset(masks)
        self._index = {
            word: (mask, tuple(checks[word]) if word in checks else None)
            for word, mask in masks.items()
        }

    def _build_view(
        self, channel: str | None, request_type: str | None, source_system: str | None
    ) -> _View:
        width = self._width
        ok = base = regex_all = 0
        by_literal: dict[str, int] = {}
        for r in self.class_rules:
            if not (
                r.live
                and (not r.channels or channel in r.channels)
                and (not r.request_types or request_type in r.request_types)
                and (not r.source_systems or source_system in r.source_systems)
            ):
                continue
            bit = 1 << r.pos
            ok |= bit | bit << width
            if r.phrases:
                continue
            if r.simple:
                base |= bit
            elif r.regex is not None and r.literals:
                by_literal[r.literals[0]] = by_literal.get(r.literals[0], 0) | bit
                regex_all |= bit
            else:
                base |= bit << width
        in_folded: list[tuple[bytes, int]] = []
        in_text: list[tuple[str, int]] = []
        in_lower: list[tuple[str, int]] = []
        for literal, mask in by_literal.items():
            if _FOLD_OK.issuperset(literal):
                in_folded.append((literal.encode(), mask))
            elif literal == literal.upper():
                in_text.append((literal, mask))
            else:
                in_lower.append((literal, mask))
        return _View(ok, base, tuple(in_folded), tuple(in_text), tuple(in_lower), regex_all)

    def outcome(self, applied: int) -> _Outcome:
        """What the classification rules in the mask `applied` decide together. A pure
        function of the rule set, kept per mask (bounded) where `decide` looks first: the same
        combinations of rules recur across tasks."""
        ids: list[int] = []
        type_code = ""
        disagree = False
        review_start = set_p = raise_p = _NO_PRIORITY
        added: tuple[str, ...] = ()
        rule_of, type_info = self._rule_of, self._type_info
        m = applied
        while m:  # the bits, lowest first: the rules in order
            low = m & -m
            m ^= low
            r = rule_of[low]
            ids.append(r.id)
            t = r.set_type
            if t and t != type_code:
                if not type_code:
                    type_code = t
                else:  # rules disagree: review, at the most urgent proposed type's priority
                    disagree = True
                    review_start = min(review_start, type_info[t][0])
            if r.prio:
                set_p = min(set_p, r.set_priority)
                raise_p = min(raise_p, r.min_priority)
            if r.tags:
                added += r.tags
        if added:
            added = tuple(dict.fromkeys(added))
        if disagree:
            start = min(review_start, type_info[type_code][0])
            found = (tuple(ids), "", True, start, 1, set_p, raise_p, added)
        elif not type_code:
            found = (tuple(ids), "", True, DEFAULT_PRIORITY, 1, set_p, raise_p, added)
        else:
            start, weight = type_info[type_code]
            found = (tuple(ids), type_code, False, start, weight, set_p, raise_p, added)
        outcome = _new_tuple(_Outcome, found)
        if len(self._outcomes) < _MEMO_LIMIT:
            self._outcomes[applied] = outcome
        return outcome

    def routing_candidates(self, task_type: str, priority: int, channel: str) -> tuple[_RRule, ...]:
        """Routing rules, in order, that can win (not shadow, not at 0% rollout) and whose type,
        priority and channel conditions hold."""
        key = (task_type, priority, channel)
        found = self._routing_memo.get(key)
        if found is None:
            found = tuple(
                r for r in self.routing_rules if r.live and r.selected(task_type, priority, channel)
            )
            if len(self._routing_memo) < _MEMO_LIMIT:
                self._routing_memo[key] = found
        return found

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompiledRuleSet):
            return NotImplemented
        return self is other or self.spec == other.spec

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<CompiledRuleSet v{self.version}: {len(self.class_rules)} classification, "
            f"{len(self.routing_rules)} routing rules, {len(self.problems)} problems>"
        )


def compile_ruleset(spec: RuleSetSpec) -> CompiledRuleSet:
    """Validate and index a rule set once; pass the result to `decide` for every task.

    Rules that fail validation are disabled and listed in `problems`. Raises `RuleSetError`
    when the review or red-flag queue does not exist, since no task could then be routed safely.
    """
    return CompiledRuleSet(spec)


# --- Candidates -----------------------------------------------------------------------------

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_INF = float("inf")
# (candidate, staff_id, free units, shift or None, skills); shift = (start, end, days, zone)
_Row = tuple[CandidateSpec, int, int, Any, Mapping[str, int]]
_UNKNOWN_ZONE = object()


def _wait_key(c: CandidateSpec) -> tuple[bool, datetime, int]:
    # never assigned counts as waiting longest
    last = c.last_assigned_at
    return (last is not None, last or _EARLIEST, c.staff_id)


def _order_key(c: CandidateSpec, policy: str) -> tuple[Any, ...]:
    if policy == "push_round_robin":
        return _wait_key(c)
    share = c.active_load / c.capacity if c.capacity > 0 else _INF
    return (share, *_wait_key(c))


def _zone(name: str) -> Any:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return _UNKNOWN_ZONE


class CandidatePool:
    """Candidates indexed per queue, each queue's list pre-sorted in its policy's order.

    Build it once per staff snapshot (loads, availability) and reuse it for many decisions;
    the per-queue orderings are computed on first use and kept. The pool is pure: its result
    depends only on the candidates it was built from.
    """

    __slots__ = ("_by_queue", "_zones", "candidates")

    def __init__(self, candidates: Iterable[CandidateSpec]) -> None:
        self.candidates = tuple(candidates)
        self._by_queue: dict[tuple[int, str], tuple[tuple[_Row, ...], dict[str, tuple[_Row, ...]]]]
        self._by_queue = {}
        self._zones: dict[str, Any] = {}

    def zone(self, name: str) -> Any:
        z = self._zones.get(name)
        if z is None:
            z = self._zones[name] = _zone(name)
        return z

    def rows(
        self, queue_id: int, policy: str
    ) -> tuple[tuple[_Row, ...], dict[str, tuple[_Row, ...]]]:
        """Available people of a queue in choice order, and the same per open patient key."""
        cached = self._by_queue.get((queue_id, policy))
        if cached is not None:
            return cached
        members = sorted(
            (
                c
                for c in self.candidates
                if queue_id in c.queue_ids and c.availability == "available"
            ),
            key=lambda c: _order_key(c, policy),
        )
        rows: list[_Row] = []
        by_patient: dict[str, list[_Row]] = {}
        for c in members:
            limited = c.shift_start is not None and c.shift_end is not None
            shift = (
                (c.shift_start, c.shift_end, frozenset(c.shift_weekdays), self.zone(c.time_zone))
                if limited or c.shift_weekdays
                else None
            )
            row = (c, c.staff_id, c.capacity - c.active_load, shift, c.skills)
            rows.append(row)
            for key in c.open_patient_keys:
                by_patient.setdefault(key, []).append(row)
        result = (tuple(rows), {k: tuple(v) for k, v in by_patient.items()})
        self._by_queue[(queue_id, policy)] = result
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CandidatePool):
            return NotImplemented
        return self is other or self.candidates == other.candidates

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<CandidatePool of {len(self.candidates)}>"


def _on_shift(shift: Any, now: datetime, local: dict[Any, tuple[time, int]]) -> bool:
    start, end, days, zone = shift
    if zone is _UNKNOWN_ZONE:
        return False
    lt = local.get(zone)
    if lt is None:
        d = now.astimezone(zone)
        lt = local[zone] = (d.time(), d.weekday())
    t, day = lt
    if start is not None and end is not None:
        if start < end:
            if not start <= t < end:
                return False
        elif start > end:
            if t < end:
                day = (day - 1) % 7  # after midnight: the shift started the day before
            elif t < start:
                return False
    return not days or day in days


def _candidate_reason(
    c: CandidateSpec,
    queue_id: int,
    skill: str,
    min_level: int,
    weight: int,
    now: datetime,
    exclude: Collection[int],
    pool: CandidatePool,
    local: dict[Any, tuple[time, int]],
) -> tuple[str, str]:
    """('', '') when eligible, else (reason code, detail). The rules `_first_eligible` applies;
    `local` caches local times per zone across calls with the same `now`."""
    if queue_id not in c.queue_ids:
        return "not_in_queue", "does not work this queue"
    if c.staff_id in exclude:
        return "excluded", "excluded by the caller (e.g. lost a capacity race)"
    if c.availability != "available":
        reason = c.availability if c.availability in ("away", "offline") else "offline"
        return reason, f"availability is {c.availability}"
    limited = c.shift_start is not None and c.shift_end is not None
    if limited or c.shift_weekdays:
        shift = (c.shift_start, c.shift_end, frozenset(c.shift_weekdays), pool.zone(c.time_zone))
        if not _on_shift(shift, now, local):
            return "off_shift", _shift_text(c, now, shift[3])
    if c.active_load + weight > c.capacity:
        return "at_capacity", f"{c.active_load}+{weight} units would exceed capacity {c.capacity}"
    if skill:
        level = c.skills.get(skill, 0)
        if level < min_level:
            held = f"level {level}" if level else "not held"
            return "lacks_skill", f"needs {skill} level {min_level}, has {held}"
    return "", ""


def _shift_text(c: CandidateSpec, now: datetime, zone: Any) -> str:
    if zone is _UNKNOWN_ZONE:
        return f"unknown time zone {c.time_zone!r}"
    d = now.astimezone(zone)
    hours = (
        f"{c.shift_start:%H:%M}-{c.shift_end:%H:%M}"
        if c.shift_start is not None and c.shift_end is not None
        else "any time"
    )
    days = ",".join(WEEKDAY_NAMES[i] for i in sorted(c.shift_weekdays)) or "every day"
    return (
        f"shift {hours} {days} ({c.time_zone}); local time {WEEKDAY_NAMES[d.weekday()]} {d:%H:%M}"
    )


def _first_eligible(
    rows: Sequence[_Row],
    skill: str,
    min_level: int,
    weight: int,
    now: datetime,
    exclude: Collection[int],
    local: dict[Any, tuple[time, int]],
) -> CandidateSpec | None:
    for c, staff_id, free, shift, skills in rows:
        if weight > free:
            continue
        if skill and skills.get(skill, 0) < min_level:
            continue
        if shift is not None and not _on_shift(shift, now, local):
            continue
        if exclude and staff_id in exclude:
            continue
        return c
    return None


class Assignment(NamedTuple):
    """Who gets the task (or why nobody does). The explanation is built on request."""

    queue_id: int
    assignee_id: int | None
    waiting_for_capacity: bool
    pull_only: bool
    continuity: bool
    # inputs kept for the lazy explanation
    queue: QueueSpec
    required_skill: str
    min_level: int
    weight: int
    pool: CandidatePool
    patient_key: str
    now: datetime
    exclude: Collection[int]

    def explanation_dict(self) -> dict[str, Any]:
        return _assignment_dict(self)


def choose_assignee(
    queue: QueueSpec,
    required_skill: str,
    min_level: int,
    weight: int,
    candidates: Sequence[CandidateSpec] | CandidatePool,
    patient_key: str,
    now: datetime,
    *,
    exclude: Collection[int] = frozenset(),
) -> Assignment:
    """Pick the person to push a task to, never anyone ineligible.

    Eligible: works the queue, available, on shift (in their own time zone), has room for
    `weight` more units, holds `required_skill` at `min_level` or better, not in `exclude`.
    Among them someone already holding an open task for the patient comes first; then the
    queue's policy: least loaded share (ties: longest since last assignment, then lowest staff
    id) or round robin (longest since last assignment, then lowest staff id). A pull-only queue
    assigns nobody: the task waits for Next task.
    """
    pool = candidates if isinstance(candidates, CandidatePool) else CandidatePool(candidates)
    level = min_level if required_skill else 0
    pull_only = queue.policy == "pull_only"
    chosen, continuity = (
        (None, False)
        if pull_only
        else _pick(pool, queue, required_skill, level, weight, patient_key, now, exclude)
    )
    return Assignment(
        queue.id,
        None if chosen is None else chosen.staff_id,
        chosen is None and not pull_only,
        pull_only,
        continuity,
        queue,
        required_skill,
        level,
        weight,
        pool,
        patient_key,
        now,
        exclude,
    )


def _pick(
    pool: CandidatePool,
    queue: QueueSpec,
    skill: str,
    level: int,
    weight: int,
    patient_key: str,
    now: datetime,
    exclude: Collection[int],
) -> tuple[CandidateSpec | None, bool]:
    """(the chosen person or None, chosen for continuity?) for a push queue."""
    cached = pool._by_queue.get((queue.id, queue.policy))
    rows, by_patient = cached if cached is not None else pool.rows(queue.id, queue.policy)
    local: dict[Any, tuple[time, int]] = {}
    if patient_key:
        held = by_patient.get(patient_key)
        if held:
            chosen = _first_eligible(held, skill, level, weight, now, exclude, local)
            if chosen is not None:
                return chosen, True
    return _first_eligible(rows, skill, level, weight, now, exclude, local), False


# --- Decide ---------------------------------------------------------------------------------


class Explanation(NamedTuple):
    """What a decision was made from. `Decision.explanation_dict()` expands it on request by
    re-running the rules with `trace` (the plain reference evaluation) and the candidates'
    checks, so the hot path records nothing but these references."""

    ruleset: CompiledRuleSet
    facts: TaskFacts
    pool: CandidatePool
    now: datetime
    queue: QueueSpec
    required_skill: str
    min_level: int
    weight: int  # capacity units the task takes
    assignee_id: int | None
    continuity: bool  # the assignee was chosen because they hold the patient

    @property
    def assignment(self) -> Assignment:
        """The assignment step as `choose_assignee` returns it (to retry it, or explain it)."""
        pull_only = self.queue.policy == "pull_only"
        return Assignment(
            self.queue.id,
            self.assignee_id,
            self.assignee_id is None and not pull_only,
            pull_only,
            self.continuity,
            self.queue,
            self.required_skill,
            self.min_level,
            self.weight,
            self.pool,
            self.facts.patient_key,
            self.now,
            frozenset(),
        )


class Decision(NamedTuple):
    """The outcome for one task. Immutable; a NamedTuple rather than a frozen dataclass because
    it is built on the hot path and is four times cheaper to construct."""

    task_type: str  # "" when it needs review without an agreed type
    priority: int
    tags: tuple[str, ...]
    needs_review: bool
    queue_id: int
    required_skill: str
    min_skill_level: int  # 0 when no skill is required
    assignee_id: int | None
    waiting_for_capacity: bool
    rule_set_version: int
    classification_rule_ids: tuple[int, ...]
    routing_rule_id: int | None
    explanation: Explanation

    def outcome(self) -> tuple[Any, ...]:
        """Everything but the explanation: what services persist and tests compare."""
        return tuple(self[:-1])

    def explanation_dict(self) -> dict[str, Any]:
        return _explanation_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.explanation_dict(), sort_keys=True)


def decide(
    ruleset: CompiledRuleSet | RuleSetSpec,
    facts: TaskFacts,
    candidates: Sequence[CandidateSpec] | CandidatePool,
    now: datetime,
) -> Decision:
    """Classify, route and assign one task.

    Pass a `CompiledRuleSet` and a `CandidatePool` on the hot path; a `RuleSetSpec` is compiled
    and a candidate sequence indexed on every call.
    """
    rs = ruleset if isinstance(ruleset, CompiledRuleSet) else CompiledRuleSet(ruleset)
    pool = candidates if isinstance(candidates, CandidatePool) else CandidatePool(candidates)
    channel = facts.channel
    view = rs._views.get((channel, facts.request_type, facts.source_system))
    if view is None:
        view = rs.view(channel, facts.request_type, facts.source_system)
    text = facts.subject + "\n" + facts.body
    ascii_text = text.isascii()
    if ascii_text:  # _words(), inlined
        folded = text.encode().translate(_FOLD)
        words = folded.split()
    else:
        words = [w.encode() for w in _WORD_RE.findall(text.lower())]

    # 1. Phrases: red flags, and the rules whose phrase condition holds. Simple rules apply
    # in bulk; the others are checked one by one (step 2). Sets of rules are packed bit masks
    # (see `CompiledRuleSet`).
    hits = rs._keys.intersection(words)
    packed = 0
    if hits:
        index = rs._index
        haystack = folded if ascii_text else None
        partial: dict[int, int] | None = None
        for word in hits:
            mask, todo = index[word]
            packed |= mask
            if todo is None:
                continue
            for search, red_flag, phrase_mask, all_rules in todo:
                if search is not None:
                    if haystack is None:
                        haystack = _joined(words)
                    if search(haystack) is None:
                        continue
                if red_flag:
                    return _red_flag_decision(rs, facts, pool, now)
                packed |= phrase_mask
                if all_rules:
                    if partial is None:
                        partial = {}
                    for pos, bit in all_rules:
                        partial[pos] = partial.get(pos, 0) | bit
        if partial:
            for pos, seen in partial.items():
                if seen == (1 << rs.class_rules[pos].n_phrases) - 1:
                    packed |= 1 << (pos + rs._width)
    packed = packed & view.ok | view.base
    applied = packed & rs._low_mask
    other = packed >> rs._width

    # 2. Classification rules left to check one by one (regex, rollout, stop), in order,
    # until one stops evaluation.
    lower_text = None
    if view.regex_all:
        if ascii_text:
            for literal, mask in view.in_folded:
                if literal in folded:
                    other |= mask
            for literal, mask in view.in_text:
                if literal in text:
                    other |= mask
            if view.in_lower:
                lower_text = text.lower()
                for literal, mask in view.in_lower:
                    if literal in lower_text:
                        other |= mask
        else:
            other |= view.regex_all
    key = facts.key
    rule_of = rs._rule_of
    while other:
        low = other & -other
        other ^= low
        r = rule_of[low]
        if r.regex is not None:
            if lower_text is None and ascii_text:
                lower_text = text.lower()
            if _regex_search(r, text, lower_text) is None:
                continue
        if r.rollout < 100 and _bucket(r.bucket_prefix, key) >= r.rollout:
            continue
        if r.stop:
            applied = (applied & (low - 1)) | low  # the rules after it do not apply
            break
        applied |= low

    # The outcome of the applied rules (`CompiledRuleSet.outcome`).
    found = rs._outcomes.get(applied)
    if found is None:
        found = rs.outcome(applied)
    ids, type_code, needs_review, start, weight, set_p, raise_p, added = found
    hint = facts.urgency_hint
    if hint is not None and 1 <= hint < start:
        start = hint
    priority = set_p if set_p != _NO_PRIORITY else start
    if raise_p < priority:
        priority = raise_p
    tags = facts.tags
    if added:
        tags = tuple(dict.fromkeys((*tags, *added))) if tags else added

    # 3. Route (`route_classified`, inlined).
    winner: _RRule | None = None
    if needs_review:
        queue_id = rs.spec.review_queue_id
    else:
        selected = rs._routing_memo.get((type_code, priority, channel))
        if selected is None:
            selected = rs.routing_candidates(type_code, priority, channel)
        day = clock = None
        for rr in selected:
            if rr.dynamic:  # `_RRule.matches`, inlined
                if rr.tags_any and rr.tags_any.isdisjoint(tags):
                    continue
                if rr.site_ids and facts.site_id not in rr.site_ids:
                    continue
                if rr.hours and (rr.hours == 1) != facts.site_business_open:
                    continue
                if rr.weekdays:
                    if day is None:
                        day = facts.local_now.weekday()
                    if day not in rr.weekdays:
                        continue
                if rr.window is not None:
                    if clock is None:
                        clock = facts.local_now.time()
                    start_t, end_t = rr.window  # `_in_window`, inlined
                    if start_t < end_t:
                        if not start_t <= clock < end_t:
                            continue
                    elif end_t <= clock < start_t:  # wraps midnight (or all day: never)
                        continue
            if rr.rollout < 100 and _bucket(rr.bucket_prefix, key) >= rr.rollout:
                continue
            winner = rr
            break
        if winner is not None:
            queue_id = winner.queue_id
            if winner.override:
                priority = winner.override
        else:
            default_queue = rs._type_queue[type_code]
            if default_queue is None:
                needs_review = True
                queue_id = rs.spec.review_queue_id
            else:
                queue_id = default_queue

    # 4. Assign (`choose_assignee`, inlined).
    if winner is None:
        skill, level, rule_id = "", 0, None
    else:
        skill, level, rule_id = winner.skill, winner.level, winner.id
    queue, rows_key, pull_only = rs._queue_info[queue_id]
    chosen = None
    continuity = False
    if not pull_only:
        cached = pool._by_queue.get(rows_key)
        rows, by_patient = cached if cached is not None else pool.rows(*rows_key)
        local: dict[Any, tuple[time, int]] = {}
        if by_patient and facts.patient_key:
            held = by_patient.get(facts.patient_key)
            if held:
                chosen = _first_eligible(held, skill, level, weight, now, (), local)
                continuity = chosen is not None
        if chosen is None:
            for c, _staff_id, free, shift, skills in rows:  # `_first_eligible`, inlined
                if weight > free:
                    continue
                if skill and skills.get(skill, 0) < level:
                    continue
                if shift is not None:  # `_on_shift`, inlined
                    start_t, end_t, days, zone = shift
                    if zone is _UNKNOWN_ZONE:
                        continue
                    lt = local.get(zone)
                    if lt is None:
                        d = now.astimezone(zone)
                        lt = local[zone] = (d.time(), d.weekday())
                    at, day = lt
                    if start_t is not None and end_t is not None:
                        if start_t < end_t:
                            if not start_t <= at < end_t:
                                continue
                        elif start_t > end_t:
                            if at < end_t:
                                day = (day - 1) % 7  # after midnight: started the day before
                            elif at < start_t:
                                continue
                    if days and day not in days:
                        continue
                chosen = c
                break
    assignee_id = None if chosen is None else chosen.staff_id
    return _new_tuple(
        Decision,
        (
            type_code,
            priority,
            tags,
            needs_review,
            queue_id,
            skill,
            level,
            assignee_id,
            chosen is None and not pull_only,
            rs.version,
            ids,
            rule_id,
            _new_tuple(
                Explanation,
                (rs, facts, pool, now, queue, skill, level, weight, assignee_id, continuity),
            ),
        ),
    )


class Route(NamedTuple):
    queue_id: int
    required_skill: str
    min_skill_level: int
    routing_rule_id: int | None
    routing_rule_name: str
    priority: int


def route_classified(
    ruleset: CompiledRuleSet, facts: TaskFacts, task_type: str, priority: int, tags: tuple[str, ...]
) -> Route:
    """Route a task whose classification a person chose (a correction from Needs review): the
    routing rules run as they would for that type, priority and tags; classification rules
    do not run. Same semantics as step 3 of `decide`."""
    rs = ruleset
    if task_type not in rs.task_types:
        raise RuleSetError(f"unknown task type {task_type!r}")
    selected = rs.routing_candidates(task_type, priority, facts.channel)
    for r in selected:
        if r.dynamic and not r.matches(tags, facts):
            continue
        if r.rollout < 100 and _bucket(r.bucket_prefix, facts.key) >= r.rollout:
            continue
        return Route(r.queue_id, r.skill, r.level, r.id, r.spec.name, r.override or priority)
    default_queue = rs._type_queue[task_type]
    if default_queue is None:
        return Route(rs.spec.review_queue_id, "", 0, None, "", priority)
    return Route(default_queue, "", 0, None, "", priority)


def _red_flag_decision(
    rs: CompiledRuleSet, facts: TaskFacts, pool: CandidatePool, now: datetime
) -> Decision:
    spec = rs.spec
    tt = rs.task_types.get(spec.red_flag_task_type)
    weight = tt.capacity_weight if tt is not None else 1
    tags = facts.tags if RED_FLAG_TAG in facts.tags else (*facts.tags, RED_FLAG_TAG)
    queue = rs.queues[spec.red_flag_queue_id]
    a = choose_assignee(queue, "", 0, weight, pool, facts.patient_key, now)
    explanation = Explanation(
        rs, facts, pool, now, queue, "", 0, weight, a.assignee_id, a.continuity
    )
    return Decision(
        spec.red_flag_task_type,
        1,
        tags,
        False,
        queue.id,
        "",
        0,
        a.assignee_id,
        a.waiting_for_capacity,
        rs.version,
        (),
        None,
        explanation,
    )


# --- Trace: the plain reference evaluation behind every explanation -------------------------


class Trace(NamedTuple):
    """Every rule's verdict for one task, evaluated the slow, obvious way.

    `decide` must agree with it on the outcome (the property tests check this); explanations
    are built from it, so the hot path never pays for them.
    """

    red_flag: str  # the phrase, "" when none
    matched: tuple[tuple[_CRule, str, dict[str, Any]], ...]  # (rule, status, what matched)
    applied: tuple[_CRule, ...]
    stopped_at: _CRule | None
    classification_evaluated: int
    task_type: str
    review_reason: str  # "" | no_type | types_disagree | no_default_queue
    type_default: int | None
    priority_before_route: int
    routing_matched: tuple[tuple[_RRule, str], ...]
    routing_evaluated: int
    winner: _RRule | None
    route_by: str  # red_flag | needs_review | rule | default
    priority: int
    queue_id: int


def _status(rule: _CRule | _RRule, key: str) -> str:
    in_rollout = rule.rollout >= 100 or rollout_bucket(rule.id, key) < rule.rollout
    if rule.shadow:
        return "shadow" if in_rollout else "shadow_outside_rollout"
    return "applied" if in_rollout else "outside_rollout"


def trace(ruleset: CompiledRuleSet, facts: TaskFacts) -> Trace:
    """Evaluate every rule for `facts` plainly and record each verdict (see `Trace`)."""
    rs, spec = ruleset, ruleset.spec
    text = facts.subject + "\n" + facts.body
    words = _words(text)
    joined = _joined(words)
    lower_text = text.lower() if text.isascii() else None
    # A rule with phrases can only match if one of its phrases' key words occurs.
    phrase_rules = rs._phrase_rules
    possible = {pos for word in phrase_rules.keys() & set(words) for pos in phrase_rules[word]}
    for words in rs.red_flags:
        if _joined(words) in joined:
            tt = rs.task_types.get(spec.red_flag_task_type)
            return Trace(
                _words_text(words), (), (), None, 0, spec.red_flag_task_type, "",
                tt.default_priority if tt is not None else None, 1, (), 0, None, "red_flag",
                1, spec.red_flag_queue_id,
            )  # fmt: skip

    matched: list[tuple[_CRule, str, dict[str, Any]]] = []
    applied: list[_CRule] = []
    stopped_at = None
    evaluated = 0
    for rule in rs.class_rules:
        evaluated += 1
        if rule.phrases and rule.pos not in possible:
            continue
        what = rule.matches(facts, text, joined, lower_text)
        if what is None:
            continue
        status = _status(rule, facts.key)
        matched.append((rule, status, what))
        if status == "applied":
            applied.append(rule)
            if rule.stop:
                stopped_at = rule
                break

    proposed = [r.set_type for r in applied if r.set_type]
    review_reason = ""
    if len(set(proposed)) > 1:
        review_reason, task_type = "types_disagree", ""
    elif not proposed:
        review_reason, task_type = "no_type", ""
    else:
        task_type = proposed[0]
    tt = rs.task_types.get(task_type)
    if tt is not None:
        start = type_default = tt.default_priority
    else:
        type_default = None
        start = min((rs.task_types[c].default_priority for c in proposed), default=DEFAULT_PRIORITY)
    if facts.urgency_hint is not None and 1 <= facts.urgency_hint <= 4:
        start = min(start, facts.urgency_hint)
    sets = [r.spec.set_priority for r in applied if r.spec.set_priority is not None]
    raises = [r.spec.min_priority for r in applied if r.spec.min_priority is not None]
    priority = min(sets) if sets else start
    priority = min([priority, *raises])
    tags = tuple(dict.fromkeys(facts.tags + tuple(t for r in applied for t in r.tags)))

    routing_matched: list[tuple[_RRule, str]] = []
    routing_evaluated = 0
    winner = None
    final_priority = priority
    if review_reason:
        route_by, queue_id = "needs_review", spec.review_queue_id
    else:
        for rule in rs.routing_rules:
            if rule.task_types and task_type not in rule.task_types:
                continue
            routing_evaluated += 1
            if not (
                rule.selected(task_type, priority, facts.channel) and rule.matches(tags, facts)
            ):
                continue
            status = _status(rule, facts.key)
            routing_matched.append((rule, status))
            if status == "applied":
                winner = rule
                break
        if winner is not None:
            route_by, queue_id = "rule", winner.queue_id
            final_priority = winner.override or priority
        elif rs._type_queue.get(task_type) is None:
            review_reason = "no_default_queue"
            route_by, queue_id = "needs_review", spec.review_queue_id
        else:
            route_by, queue_id = "default", rs._type_queue[task_type]
    return Trace(
        "", tuple(matched), tuple(applied), stopped_at, evaluated, task_type, review_reason,
        type_default, priority, tuple(routing_matched), routing_evaluated, winner, route_by,
        final_priority, queue_id,
    )  # fmt: skip


# --- Explanation (built only on request) ----------------------------------------------------


def _words_text(words: Sequence[bytes]) -> str:
    return " ".join(w.decode() for w in words)


def _class_rule_would(r: _CRule) -> dict[str, Any]:
    spec = r.spec
    would: dict[str, Any] = {}
    if spec.set_task_type:
        would["set_task_type"] = spec.set_task_type
    if spec.set_priority is not None:
        would["set_priority"] = spec.set_priority
    if spec.min_priority is not None:
        would["min_priority"] = spec.min_priority
    if spec.add_tags:
        would["add_tags"] = list(spec.add_tags)
    if spec.stop:
        would["stop"] = True
    return would


def _queue_name(rs: CompiledRuleSet, queue_id: int) -> str:
    queue = rs.queues.get(queue_id)
    return queue.name if queue is not None else f"queue {queue_id}"


def _explanation_dict(d: Decision) -> dict[str, Any]:
    e = d.explanation
    rs, facts = e.ruleset, e.facts
    t = trace(rs, facts)
    out: dict[str, Any] = {
        "rule_set_version": rs.version,
        "rules_evaluated": t.classification_evaluated + t.routing_evaluated,
        "classification_rules_evaluated": t.classification_evaluated,
        "routing_rules_evaluated": t.routing_evaluated,
        "rules_off": rs.off_count,
        "red_flag": {"phrase": t.red_flag} if t.red_flag else None,
    }
    matched: list[dict[str, Any]] = []
    shadow: list[dict[str, Any]] = []
    for rule, status, what in t.matched:
        matched.append(
            {
                "kind": "classification",
                "id": rule.id,
                "name": rule.spec.name,
                "status": status,
                "matched": what,
            }
        )
        if status == "shadow":
            shadow.append(
                {
                    "kind": "classification",
                    "id": rule.id,
                    "name": rule.spec.name,
                    "would": _class_rule_would(rule),
                }
            )
    for rr, status in t.routing_matched:
        matched.append({"kind": "routing", "id": rr.id, "name": rr.spec.name, "status": status})
        if status == "shadow":
            would: dict[str, Any] = {"queue_id": rr.queue_id, "queue": _queue_name(rs, rr.queue_id)}
            if rr.skill:
                would["required_skill"] = rr.skill
                would["min_skill_level"] = rr.level
            if rr.override:
                would["priority_override"] = rr.override
            shadow.append({"kind": "routing", "id": rr.id, "name": rr.spec.name, "would": would})
    out["matched"] = matched
    out["applied"] = [r.id for r in t.applied] + ([t.winner.id] if t.winner else [])
    out["stopped_at"] = t.stopped_at.id if t.stopped_at is not None else None
    out["shadow"] = shadow
    out["task_type"] = d.task_type
    out["tags"] = list(d.tags)
    out["priority"] = _priority_dict(d, t)
    out["needs_review"] = _review_dict(t) if t.review_reason else None
    out["route"] = _route_dict(d, t)
    out["assignment"] = _assignment_dict(e.assignment)
    return out


def _priority_dict(d: Decision, t: Trace) -> dict[str, Any]:
    if t.red_flag:
        return {"final": 1, "why": "red flag: always P1"}
    out: dict[str, Any] = {
        "type_default": t.type_default,
        "urgency_hint": d.explanation.facts.urgency_hint,
        "set_by": [
            {"id": r.id, "priority": r.spec.set_priority}
            for r in t.applied
            if r.spec.set_priority is not None
        ],
        "raised_by": [
            {"id": r.id, "priority": r.spec.min_priority}
            for r in t.applied
            if r.spec.min_priority is not None
        ],
        "after_classification": t.priority_before_route,
        "final": d.priority,
    }
    if t.winner is not None and t.winner.override:
        out["routing_override"] = t.winner.override
    return out


def _review_dict(t: Trace) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": t.review_reason}
    if t.review_reason == "types_disagree":
        proposals = [
            {"rule_id": r.id, "name": r.spec.name, "task_type": r.set_type}
            for r in t.applied
            if r.set_type
        ]
        out["proposals"] = proposals
        out["message"] = "Rules disagree on the task type: " + "; ".join(
            f"{p['name']} (rule {p['rule_id']}) says {p['task_type']}" for p in proposals
        )
    elif t.review_reason == "no_type":
        out["message"] = "No rule set a task type."
    else:
        out["message"] = (
            f"Task type {t.task_type} has no existing default queue and no rule routed it."
        )
    return out


def _route_dict(d: Decision, t: Trace) -> dict[str, Any]:
    rs = d.explanation.ruleset
    out: dict[str, Any] = {
        "by": t.route_by,
        "queue_id": d.queue_id,
        "queue": _queue_name(rs, d.queue_id),
        "rule_id": d.routing_rule_id,
    }
    if t.winner is not None:
        out["rule_name"] = t.winner.spec.name
        out["text"] = f"rule {t.winner.spec.name!r}"
    elif t.route_by == "default":
        out["text"] = f"default queue of type {rs.task_types[d.task_type].name}"
    elif t.route_by == "red_flag":
        out["text"] = "red flag"
    else:
        out["text"] = "needs review"
    if d.required_skill:
        out["required_skill"] = d.required_skill
        out["min_skill_level"] = d.min_skill_level
    return out


def _assignment_dict(a: Assignment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "queue_id": a.queue_id,
        "policy": a.queue.policy,
        "weight": a.weight,
        "required_skill": a.required_skill or None,
        "min_skill_level": a.min_level if a.required_skill else None,
    }
    if a.pull_only:
        out.update(
            candidates=[],
            eligible=0,
            chosen=None,
            why="pull-only queue: waits for someone to press Next task",
            waiting_for_capacity=False,
        )
        return out
    candidates: list[dict[str, Any]] = []
    eligible: list[CandidateSpec] = []
    local: dict[Any, tuple[time, int]] = {}
    outside = 0
    for c in a.pool.candidates:
        if a.queue_id not in c.queue_ids:
            # People of other teams are not candidates; listing them on every timeline
            # would bury the ones that matter.
            outside += 1
            continue
        reason, detail = _candidate_reason(
            c,
            a.queue_id,
            a.required_skill,
            a.min_level,
            a.weight,
            a.now,
            a.exclude,
            a.pool,
            local,
        )
        if not reason:
            eligible.append(c)
        candidates.append(
            {
                "staff_id": c.staff_id,
                "name": c.name,
                "eligible": not reason,
                "reason": reason or None,
                "detail": detail or None,
                "load": c.active_load,
                "capacity": c.capacity,
                "level": c.skills.get(a.required_skill, 0) if a.required_skill else None,
            }
        )
    out["candidates"] = candidates
    out["not_in_queue"] = outside
    out["eligible"] = len(eligible)
    out["waiting_for_capacity"] = a.waiting_for_capacity
    chosen = next((c for c in eligible if c.staff_id == a.assignee_id), None)
    if chosen is None:
        out["chosen"] = None
        out["why"] = "nobody eligible: the task waits for capacity"
        return out
    out["chosen"] = {"staff_id": chosen.staff_id, "name": chosen.name}
    out["why"] = _why(a, chosen, eligible)
    return out


def _why(a: Assignment, chosen: CandidateSpec, eligible: list[CandidateSpec]) -> str:
    n = len(eligible)
    prefix = ""
    pool = eligible
    if a.continuity:
        pool = [c for c in eligible if a.patient_key in c.open_patient_keys]
        prefix = "continuity: already holds an open task for this patient; "
        if len(pool) == 1:
            return prefix.rstrip("; ")
    last = (
        f"last assigned {chosen.last_assigned_at.isoformat()}"
        if chosen.last_assigned_at is not None
        else "never assigned yet"
    )
    if a.queue.policy == "push_round_robin":
        return (
            f"{prefix}round robin: longest since last assignment ({last}) of {len(pool)} eligible"
        )
    share = _order_key(chosen, a.queue.policy)[0]
    tied = sum(1 for c in pool if _order_key(c, a.queue.policy)[0] == share) - 1
    text = (
        f"{prefix}least loaded: {chosen.active_load}/{chosen.capacity} units, "
        f"lowest share of {len(pool) if a.continuity else n} eligible"
    )
    if tied:
        text += f"; tied with {tied} on load, longest since last assignment ({last})"
    return text


def _quoted(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return ", ".join(f'"{v}"' for v in values)


def explain_text(decision: Decision) -> str:
    """A few plain sentences for the task timeline."""
    x = decision.explanation_dict()
    lines: list[str] = []
    if x["red_flag"]:
        lines.append(f'Red flag "{x["red_flag"]["phrase"]}": {x["task_type"]} at P1.')
    else:
        lines.append(
            f"Evaluated {x['rules_evaluated']} rules of rule set v{x['rule_set_version']}."
        )
        for m in x["matched"]:
            what = m.get("matched") or {}
            details = "; ".join(f"{k.replace('_', ' ')} {_quoted(v)}" for k, v in what.items())
            on = f" on {details}" if details else ""
            status = m["status"].replace("_", " ")
            lines.append(f"{m['kind'].capitalize()} rule {m['name']!r} matched{on}: {status}.")
        if x["needs_review"]:
            lines.append(f"Needs review: {x['needs_review']['message'].rstrip('.')}.")
        else:
            lines.append(f"Type {x['task_type']}, priority P{x['priority']['final']}.")
    lines.append(f"Routed to {x['route']['queue']} ({x['route']['text']}).")
    a = x["assignment"]
    if a["chosen"]:
        lines.append(f"Assigned to {a['chosen']['name']}: {a['why']}.")
    else:
        lines.append(f"Not assigned: {a['why']}.")
    passed = [c for c in a["candidates"] if not c["eligible"] and c["reason"] != "not_in_queue"]
    if passed:
        lines.append(
            "Passed over: "
            + "; ".join(f"{c['name']} ({c['reason']}: {c['detail']})" for c in passed)
            + "."
        )
    return "\n".join(lines)
