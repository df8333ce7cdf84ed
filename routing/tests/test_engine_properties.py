"""Properties of the routing engine that must hold for any rules, staff and message."""

from __future__ import annotations

import dataclasses
import json
import re
import types
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.engine import (
    _FOLD,
    CandidatePool,
    CandidateSpec,
    ClassificationRuleSpec,
    QueueSpec,
    RoutingRuleSpec,
    RuleSetSpec,
    TaskFacts,
    TaskTypeSpec,
    _adjacent,
    _bucket,
    _CRule,
    _joined,
    _regex_search,
    _words,
    compile_ruleset,
    decide,
    rollout_bucket,
    trace,
)

property_settings = settings(
    max_examples=100,
    deadline=None,
    # the project's conftest has an autouse tmp_path fixture; these tests do not use it
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(name="settings")
def django_settings_stand_in() -> types.SimpleNamespace:
    """Stands in for pytest-django's fixture, which the project's conftest asks for on every
    test: these tests need no Django, so they also run with `-p no:django`."""
    return types.SimpleNamespace()


QUEUES = {
    1: QueueSpec(1, "Needs review", kind="review"),
    2: QueueSpec(2, "Triage"),
    3: QueueSpec(3, "Front desk", policy="push_round_robin"),
    4: QueueSpec(4, "Records", policy="pull_only"),
    5: QueueSpec(5, "On call"),
}
TASK_TYPES = {
    "refill": TaskTypeSpec("refill", "Refill", 3, 3),
    "billing": TaskTypeSpec("billing", "Billing", 5, 4, capacity_weight=2),
    "triage": TaskTypeSpec("triage", "Triage", 2, 1),
    "orphan": TaskTypeSpec("orphan", "Type whose queue was deleted", 99, 2),
}
PHRASES = ["refill", "bill", "chest pain", "fax", "bed", "urgent", "café", "prior auth", "pain"]
# message words: the phrases themselves (so rules fire often) and near misses
WORDS = [*PHRASES, *PHRASES, "Chest-Pain", "CAN'T BREATHE", "PA", "#", "1234", "555-123-4567",
         "embedded", "RE:", "ab", "c", "beds", "prior"]  # fmt: skip
REGEXES = [r"\bPA\s*#\s*\d{4,}", r"\b\d{3}-\d{3}-\d{4}\b", r"^re:", r"urgent|stat", r"(ab)c",
           r"\bbill\b", r"caf.", r"(?<=prior )auth"]  # fmt: skip
CHANNELS = ["portal", "fax", "email"]
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Nowhere/Unknown"]
NOW = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)

subsets = st.lists
times = st.none() | st.times().map(lambda t: t.replace(second=0, microsecond=0))


@st.composite
def classification_rules(draw: st.DrawFn, rule_id: int) -> ClassificationRuleSpec:
    # half plain phrase rules, as most real ones are; the rest mixes every condition
    plain = draw(st.booleans())
    phrases = tuple(draw(subsets(st.sampled_from(PHRASES), max_size=2, unique=True)))
    regex = "" if plain else draw(st.sampled_from(["", *REGEXES]))
    channels = () if plain else tuple(draw(subsets(st.sampled_from(CHANNELS), max_size=2)))
    request_types = (
        () if plain else tuple(draw(subsets(st.sampled_from(["refill", "x"]), max_size=1)))
    )
    source_systems = () if plain else tuple(draw(subsets(st.just("epic"), max_size=1)))
    if not (phrases or regex or channels or request_types or source_systems):
        phrases = ("refill",)
    set_task_type = draw(st.sampled_from(["", "refill", "billing", "triage", "orphan"]))
    add_tags = tuple(draw(subsets(st.sampled_from(["vip", "spanish"]), max_size=2, unique=True)))
    if not set_task_type and not add_tags:
        add_tags = ("seen",)
    return ClassificationRuleSpec(
        id=rule_id,
        name=f"C{rule_id}",
        order=draw(st.integers(0, 5)),
        mode=draw(st.sampled_from(["active", "active", "active", "shadow", "off"])),
        rollout_percent=draw(st.sampled_from([100, 100, 100, 50, 0])),
        channels=channels,
        phrases=phrases,
        phrase_match="any" if plain else draw(st.sampled_from(["any", "all"])),
        regex=regex,
        request_types=request_types,
        source_systems=source_systems,
        set_task_type=set_task_type,
        set_priority=draw(st.none() | st.integers(1, 4)),
        min_priority=draw(st.none() | st.integers(1, 4)),
        add_tags=add_tags,
        stop=draw(st.sampled_from([False, False, True])),
    )


@st.composite
def routing_rules(draw: st.DrawFn, rule_id: int) -> RoutingRuleSpec:
    pmin = draw(st.integers(1, 4))
    time_from = draw(times)
    time_to = draw(times) if time_from is not None else None
    if time_to is None or time_to == time_from:
        time_from = time_to = None
    skill = draw(st.sampled_from(["", "", "spanish"]))
    return RoutingRuleSpec(
        id=100 + rule_id,
        name=f"R{rule_id}",
        target_queue_id=draw(st.sampled_from(sorted(QUEUES))),
        order=draw(st.integers(0, 5)),
        mode=draw(st.sampled_from(["active", "active", "shadow", "off"])),
        rollout_percent=draw(st.sampled_from([100, 100, 50, 0])),
        task_types=tuple(draw(subsets(st.sampled_from(sorted(TASK_TYPES)), max_size=2))),
        priority_min=pmin,
        priority_max=draw(st.integers(pmin, 4)),
        tags_any=tuple(draw(subsets(st.sampled_from(["vip", "spanish"]), max_size=1))),
        channels=tuple(draw(subsets(st.sampled_from(CHANNELS), max_size=2, unique=True))),
        site_ids=tuple(draw(subsets(st.integers(1, 3), max_size=2))),
        business_hours=draw(st.sampled_from(["any", "any", "open", "closed"])),
        weekdays=tuple(draw(subsets(st.integers(0, 6), max_size=3, unique=True))),
        time_from=time_from,
        time_to=time_to,
        required_skill=skill,
        min_skill_level=draw(st.integers(1, 5)),
        priority_override=draw(st.none() | st.integers(1, 4)),
    )


@st.composite
def rulesets(draw: st.DrawFn) -> RuleSetSpec:
    n_class = draw(st.integers(0, 8))
    n_route = draw(st.integers(0, 6))
    return RuleSetSpec(
        version=draw(st.integers(1, 9)),
        task_types=TASK_TYPES,
        queues=QUEUES,
        review_queue_id=1,
        red_flag_queue_id=2,
        classification_rules=tuple(draw(classification_rules(i)) for i in range(n_class)),
        routing_rules=tuple(draw(routing_rules(i)) for i in range(n_route)),
        red_flag_phrases=tuple(draw(subsets(st.sampled_from(["chest pain", "can't breathe"])))),
        red_flag_task_type="triage",
    )


@st.composite
def candidates(draw: st.DrawFn, staff_id: int) -> CandidateSpec:
    capacity = draw(st.integers(0, 5))
    return CandidateSpec(
        staff_id=staff_id,
        name=f"P{staff_id}",
        queue_ids=frozenset(draw(subsets(st.sampled_from(sorted(QUEUES)), max_size=4))),
        availability=draw(st.sampled_from(["available", "available", "away", "offline"])),
        shift_start=draw(times),
        shift_end=draw(times),
        shift_weekdays=tuple(draw(subsets(st.integers(0, 6), max_size=4, unique=True))),
        time_zone=draw(st.sampled_from(ZONES)),
        active_load=draw(st.integers(0, capacity)),
        capacity=capacity,
        skills=draw(st.dictionaries(st.just("spanish"), st.integers(1, 5))),
        last_assigned_at=draw(
            st.none() | st.integers(0, 600).map(lambda m: NOW - timedelta(minutes=m))
        ),
        open_patient_keys=frozenset(draw(subsets(st.sampled_from(["p1", "p2"]), max_size=2))),
    )


staff = st.integers(0, 6).flatmap(
    lambda n: st.tuples(*(candidates(i) for i in range(1, n + 1))) if n else st.just(())
)


def texts(vocabulary: list[str]) -> st.SearchStrategy[str]:
    separators = st.sampled_from([" ", ", ", "-", "\n", "! "])
    words = st.lists(st.tuples(st.sampled_from(vocabulary), separators), max_size=12)
    joined = words.map(lambda pairs: "".join(w + sep for w, sep in pairs))
    return joined | st.text(alphabet="abcPA#12- \néÉ'", max_size=30)


@st.composite
def cases(draw: st.DrawFn) -> tuple[RuleSetSpec, TaskFacts]:
    """A rule set and a message that often contains its phrases (so rules fire and collide)."""
    spec = draw(rulesets())
    used = [p for r in spec.classification_rules for p in r.phrases]
    vocabulary = WORDS + used * 3
    facts = TaskFacts(
        key=draw(st.text(alphabet="abc123-", min_size=1, max_size=8)),
        channel=draw(st.sampled_from(CHANNELS)),
        subject=draw(texts(vocabulary)),
        body=draw(texts(vocabulary)),
        local_now=draw(st.datetimes(datetime(2024, 1, 1), datetime(2024, 12, 31))),
        request_type=draw(st.sampled_from(["", "refill", "other"])),
        source_system=draw(st.sampled_from(["", "epic"])),
        site_id=draw(st.none() | st.integers(1, 3)),
        patient_key=draw(st.sampled_from(["", "p1", "p2"])),
        urgency_hint=draw(st.none() | st.integers(1, 4)),
        tags=tuple(draw(subsets(st.sampled_from(["vip", "spanish"]), max_size=1))),
        site_business_open=draw(st.booleans()),
    )
    return spec, facts


nows = st.datetimes(datetime(2024, 1, 1), datetime(2024, 12, 31), timezones=st.just(UTC))


def without_shadow_rules(spec: RuleSetSpec) -> RuleSetSpec:
    return dataclasses.replace(
        spec,
        classification_rules=tuple(
            dataclasses.replace(r, mode="off" if r.mode == "shadow" else r.mode)
            for r in spec.classification_rules
        ),
        routing_rules=tuple(
            dataclasses.replace(r, mode="off" if r.mode == "shadow" else r.mode)
            for r in spec.routing_rules
        ),
    )


@property_settings
@given(cases(), staff, nows)
def test_same_inputs_give_the_same_decision_and_explanation(
    case: tuple[RuleSetSpec, TaskFacts], people: tuple[CandidateSpec, ...], now: datetime
) -> None:
    spec, facts = case
    compiled = compile_ruleset(spec)
    pool = CandidatePool(people)
    first = decide(compiled, facts, pool, now)
    assert decide(compiled, facts, pool, now) == first
    assert decide(compile_ruleset(spec), facts, list(people), now) == first
    explanation = first.explanation_dict()
    assert json.loads(json.dumps(explanation)) == explanation
    assert decide(spec, facts, people, now).explanation_dict() == explanation


@property_settings
@given(cases(), staff, nows)
def test_exactly_one_existing_queue_and_never_over_capacity(
    case: tuple[RuleSetSpec, TaskFacts], people: tuple[CandidateSpec, ...], now: datetime
) -> None:
    spec, facts = case
    d = decide(compile_ruleset(spec), facts, people, now)
    assert d.queue_id in QUEUES
    assert 1 <= d.priority <= 4
    assignment = d.explanation_dict()["assignment"]
    eligible = {c["staff_id"] for c in assignment["candidates"] if c["eligible"]}
    if d.assignee_id is not None:
        chosen = next(c for c in people if c.staff_id == d.assignee_id)
        assert chosen.active_load + assignment["weight"] <= chosen.capacity
        assert d.queue_id in chosen.queue_ids and chosen.availability == "available"
        assert chosen.staff_id in eligible
        if d.required_skill:
            assert chosen.skills.get(d.required_skill, 0) >= d.min_skill_level
    elif QUEUES[d.queue_id].policy == "pull_only":
        assert not d.waiting_for_capacity
    else:
        assert d.waiting_for_capacity and not eligible


@property_settings
@given(cases(), staff, nows)
def test_shadow_rules_never_change_the_outcome(
    case: tuple[RuleSetSpec, TaskFacts], people: tuple[CandidateSpec, ...], now: datetime
) -> None:
    spec, facts = case
    with_shadow = decide(compile_ruleset(spec), facts, people, now)
    without = decide(compile_ruleset(without_shadow_rules(spec)), facts, people, now)
    assert with_shadow.outcome() == without.outcome()


@property_settings
@given(cases(), staff, nows)
def test_a_zero_percent_rollout_rule_never_applies(
    case: tuple[RuleSetSpec, TaskFacts], people: tuple[CandidateSpec, ...], now: datetime
) -> None:
    spec, facts = case
    d = decide(compile_ruleset(spec), facts, people, now)
    zero = {
        r.id for r in (*spec.classification_rules, *spec.routing_rules) if r.rollout_percent == 0
    }
    assert not zero & set(d.classification_rule_ids)
    assert d.routing_rule_id not in zero
    assert not zero & set(d.explanation_dict()["applied"])


@property_settings
@given(cases(), staff, nows)
def test_the_fast_path_agrees_with_the_plain_reference_evaluation(
    case: tuple[RuleSetSpec, TaskFacts], people: tuple[CandidateSpec, ...], now: datetime
) -> None:
    spec, facts = case
    compiled = compile_ruleset(spec)
    d = decide(compiled, facts, people, now)
    t = trace(compiled, facts)
    assert d.classification_rule_ids == tuple(r.id for r in t.applied)
    assert d.routing_rule_id == (t.winner.id if t.winner is not None else None)
    assert (d.queue_id, d.priority) == (t.queue_id, t.priority)
    assert d.needs_review == bool(t.review_reason)
    if t.review_reason in ("", "no_default_queue"):
        assert d.task_type == t.task_type


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*REGEXES, r"x?y", r"(?:ab)+c", r"\d+-\d", r"^\bPA", r"a\bb", r"[a-c]{2}#"]),
    st.text(alphabet="abcxyPA#12-_ \nre:", max_size=40),
)
def test_the_regex_shortcuts_find_what_a_plain_search_finds(pattern: str, text: str) -> None:
    rule = _CRule(0, ClassificationRuleSpec(id=1, name="r", regex=pattern, add_tags=("t",)))
    expected = re.search(pattern, text, re.IGNORECASE)
    found = _regex_search(rule, text, text.lower())
    assert (found and found.span()) == (expected and expected.span())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["new", "patient", "of", "info", "x"]), min_size=1, max_size=3),
    st.lists(
        st.tuples(
            st.sampled_from(["new", "patient", "of", "info", "x", "renew", "patients", "é"]),
            st.sampled_from([" ", ", ", "-", "\n", "!! ", "_"]),
        ),
        max_size=8,
    ),
)
def test_the_phrase_pattern_finds_what_joined_words_find(
    phrase: list[str], pairs: list[tuple[str, str]]
) -> None:
    # `decide` looks for a phrase of several words with one pattern over the folded text (or,
    # for a non-ASCII text, over its words joined); the plain way joins the words of both
    text = "".join(w + sep for w, sep in pairs)
    words, phrase_words = _words(text), tuple(_words(" ".join(phrase)))
    expected = _joined(phrase_words) in _joined(words)
    haystack = text.encode().translate(_FOLD) if text.isascii() else _joined(words)
    assert (_adjacent(phrase_words).search(haystack) is not None) is expected


@given(st.integers(0, 10**9), st.text(max_size=20))
def test_the_prepared_rollout_bucket_is_the_documented_one(rule_id: int, key: str) -> None:
    assert _bucket(f"{rule_id}:".encode(), key) == rollout_bucket(rule_id, key)
