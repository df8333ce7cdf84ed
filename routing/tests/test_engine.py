"""Behaviour of the pure routing engine, as a manager would notice it. No database, no Django."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime, time, timedelta

import pytest

from routing.engine import (
    CandidatePool,
    CandidateSpec,
    ClassificationRuleSpec,
    QueueSpec,
    RoutingRuleSpec,
    RuleSetError,
    RuleSetSpec,
    TaskFacts,
    TaskTypeSpec,
    choose_assignee,
    compile_ruleset,
    decide,
    explain_text,
    rollout_bucket,
    trace,
    validate_classification_rule,
    validate_routing_rule,
)


@pytest.fixture
def settings() -> types.SimpleNamespace:
    """Stands in for pytest-django's fixture, which the project's conftest asks for on every
    test: these tests need no Django, so they also run with `-p no:django`."""
    return types.SimpleNamespace()


REVIEW, TRIAGE, FRONT_DESK, BILLING, ON_CALL, RECORDS, AUTH = 1, 2, 3, 4, 5, 6, 7
QUEUES = {
    REVIEW: QueueSpec(REVIEW, "Needs review", kind="review"),
    TRIAGE: QueueSpec(TRIAGE, "Clinical triage"),
    FRONT_DESK: QueueSpec(FRONT_DESK, "Front desk"),
    BILLING: QueueSpec(BILLING, "Billing", policy="push_round_robin"),
    ON_CALL: QueueSpec(ON_CALL, "After-hours on call", kind="escalation"),
    RECORDS: QueueSpec(RECORDS, "Records", policy="pull_only"),
    AUTH: QueueSpec(AUTH, "Authorizations"),
}
TASK_TYPES = {
    "refill": TaskTypeSpec("refill", "Medication refill", FRONT_DESK, 3),
    "billing": TaskTypeSpec("billing", "Billing question", BILLING, 4),
    "prior_auth": TaskTypeSpec("prior_auth", "Prior authorization", AUTH, 2, capacity_weight=2),
    "records": TaskTypeSpec("records", "Records request", RECORDS, 4),
    "clinical_triage": TaskTypeSpec("clinical_triage", "Clinical triage", TRIAGE, 1),
}
# Monday 6 May 2024, 10:00 in New York
NOW = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)
MONDAY_10AM = datetime(2024, 5, 6, 10, 0)


def ruleset(
    classification: tuple[ClassificationRuleSpec, ...] = (),
    routing: tuple[RoutingRuleSpec, ...] = (),
    **kwargs: object,
) -> RuleSetSpec:
    defaults: dict[str, object] = dict(
        version=7,
        task_types=TASK_TYPES,
        queues=QUEUES,
        review_queue_id=REVIEW,
        red_flag_queue_id=TRIAGE,
        red_flag_phrases=("chest pain", "can't breathe", "suicidal"),
        red_flag_task_type="clinical_triage",
    )
    defaults.update(kwargs)
    return RuleSetSpec(
        classification_rules=classification,
        routing_rules=routing,
        **defaults,  # type: ignore[arg-type]
    )


def rule(rule_id: int, **kwargs: object) -> ClassificationRuleSpec:
    kwargs.setdefault("name", f"Rule {rule_id}")
    kwargs.setdefault("order", rule_id)
    return ClassificationRuleSpec(id=rule_id, **kwargs)  # type: ignore[arg-type]


def route(rule_id: int, queue: int, **kwargs: object) -> RoutingRuleSpec:
    kwargs.setdefault("name", f"Route {rule_id}")
    kwargs.setdefault("order", rule_id)
    return RoutingRuleSpec(id=rule_id, target_queue_id=queue, **kwargs)  # type: ignore[arg-type]


def facts(body: str = "", **kwargs: object) -> TaskFacts:
    kwargs.setdefault("key", "task-1")
    kwargs.setdefault("channel", "portal")
    kwargs.setdefault("subject", "")
    kwargs.setdefault("local_now", MONDAY_10AM)
    return TaskFacts(body=body, **kwargs)  # type: ignore[arg-type]


def person(staff_id: int, **kwargs: object) -> CandidateSpec:
    kwargs.setdefault("name", f"Person {staff_id}")
    kwargs.setdefault("queue_ids", frozenset(QUEUES))
    kwargs.setdefault("capacity", 5)
    return CandidateSpec(staff_id=staff_id, **kwargs)  # type: ignore[arg-type]


REFILL = rule(1, name="Refills", phrases=("refill", "prescription"), set_task_type="refill")
BILLING_RULE = rule(2, name="Billing", phrases=("bill", "invoice"), set_task_type="billing")


# --- Classification -------------------------------------------------------------------------


def test_red_flag_goes_to_triage_at_p1_whatever_the_other_rules_say() -> None:
    rules = ruleset(
        (REFILL, rule(3, phrases=("chest",), set_task_type="billing", set_priority=4)),
        (route(50, FRONT_DESK),),
    )
    d = decide(compile_ruleset(rules), facts("Need a refill, also Chest-Pain since noon"), [], NOW)
    assert (d.task_type, d.priority, d.queue_id) == ("clinical_triage", 1, TRIAGE)
    assert "red-flag" in d.tags
    assert not d.needs_review
    assert d.classification_rule_ids == ()
    assert d.routing_rule_id is None
    assert d.explanation_dict()["red_flag"] == {"phrase": "chest pain"}


def test_red_flag_phrase_with_apostrophe_matches() -> None:
    d = decide(compile_ruleset(ruleset()), facts("I CAN'T BREATHE well"), [], NOW)
    assert d.queue_id == TRIAGE


def test_phrases_match_whole_words_only() -> None:
    rules = compile_ruleset(ruleset((rule(1, phrases=("bed",), set_task_type="refill"),)))
    assert decide(rules, facts("The device is embedded"), [], NOW).needs_review
    assert decide(rules, facts("beds"), [], NOW).needs_review
    assert decide(rules, facts("Need a new BED."), [], NOW).task_type == "refill"


def test_multi_word_phrase_matches_across_case_and_punctuation_but_in_order() -> None:
    rules = compile_ruleset(
        ruleset((rule(1, phrases=("prior authorization",), set_task_type="prior_auth"),))
    )
    assert decide(rules, facts("PRIOR-Authorization needed"), [], NOW).task_type == "prior_auth"
    assert decide(rules, facts("authorization prior"), [], NOW).needs_review
    assert decide(rules, facts("prior   authorizations"), [], NOW).needs_review


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Release of information form", True),
        ("release, of: information", True),  # any run of separators between the words
        ("release\nof\ninformation", True),
        ("information release of", False),
        ("prerelease of information", False),  # whole words only, at either end
        ("release of informational", False),
        ("release of  the information", False),
        ("release of information", True),  # the whole text
    ],
)
def test_phrase_of_several_words_needs_them_adjacent_and_whole(text: str, expected: bool) -> None:
    rules = compile_ruleset(
        ruleset((rule(1, phrases=("release of information",), set_task_type="records"),))
    )
    assert (decide(rules, facts(text), [], NOW).task_type == "records") is expected
    assert (trace(rules, facts(text)).task_type == "records") is expected


def test_phrases_sharing_words_each_need_their_own_words() -> None:
    rules = compile_ruleset(
        ruleset(
            (
                rule(1, phrases=("auth number",), set_task_type="prior_auth"),
                rule(2, phrases=("policy number",), add_tags=("policy",)),
                rule(3, phrases=("number",), add_tags=("number",)),
            )
        )
    )
    d = decide(rules, facts("my policy number is 12"), [], NOW)
    assert (d.classification_rule_ids, d.tags) == ((2, 3), ("policy", "number"))
    d = decide(rules, facts("the auth number, then policy"), [], NOW)
    assert (d.classification_rule_ids, d.task_type) == ((1, 3), "prior_auth")


def test_phrase_in_subject_counts() -> None:
    rules = compile_ruleset(ruleset((REFILL,)))
    assert decide(rules, facts("see subject", subject="Refill please"), [], NOW).task_type == (
        "refill"
    )


def test_non_ascii_text_matches_like_ascii() -> None:
    rules = compile_ruleset(ruleset((rule(1, phrases=("café au lait",), set_task_type="refill"),)))
    assert decide(rules, facts("Ünïcode: CAFÉ au lait!"), [], NOW).task_type == "refill"
    assert decide(rules, facts("cafés au lait"), [], NOW).needs_review


def test_any_phrase_is_enough_but_all_needs_every_phrase() -> None:
    any_rule = rule(1, phrases=("refill", "pharmacy"), set_task_type="refill")
    all_rule = rule(1, phrases=("refill", "pharmacy"), phrase_match="all", set_task_type="refill")
    only_one = facts("refill please")
    both = facts("pharmacy says refill")
    assert decide(compile_ruleset(ruleset((any_rule,))), only_one, [], NOW).task_type == "refill"
    assert decide(compile_ruleset(ruleset((all_rule,))), only_one, [], NOW).needs_review
    assert decide(compile_ruleset(ruleset((all_rule,))), both, [], NOW).task_type == "refill"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Auth PA #12345 denied", True),
        ("pa#1234", True),
        ("patient pa # 99", False),
        ("patient called\nPA # 4567", True),
        ("spa # 12345", False),
    ],
)
def test_regex_condition_searches_case_insensitively(text: str, expected: bool) -> None:
    rules = compile_ruleset(
        ruleset((rule(1, regex=r"\bPA\s*#\s*\d{4,}", set_task_type="prior_auth"),))
    )
    assert (decide(rules, facts(text), [], NOW).task_type == "prior_auth") is expected


def test_regex_with_fixed_width_before_its_literal_is_found_anywhere() -> None:
    rules = compile_ruleset(
        ruleset((rule(1, regex=r"\b\d{3}-\d{3}-\d{4}\b", add_tags=("phone",)),))
    )
    assert "phone" in decide(rules, facts("call 555-123-4567 or 12-3"), [], NOW).tags
    assert "phone" not in decide(rules, facts("call 5555-123-4567"), [], NOW).tags
    assert "phone" in decide(rules, facts("x1-2 then 555-123-4567"), [], NOW).tags


def test_regex_searches_subject_and_body() -> None:
    rules = compile_ruleset(ruleset((rule(1, regex=r"^re:", set_task_type="billing"),)))
    assert decide(rules, facts("body", subject="RE: invoice"), [], NOW).task_type == "billing"


def test_channel_request_type_and_source_system_conditions() -> None:
    rules = compile_ruleset(
        ruleset(
            (
                rule(1, channels=("fax",), request_types=("records",), set_task_type="records"),
                rule(2, source_systems=("epic",), add_tags=("ehr",)),
            )
        )
    )
    d = decide(rules, facts("x", channel="fax", request_type="records"), [], NOW)
    assert d.task_type == "records"
    assert decide(rules, facts("x", channel="email", request_type="records"), [], NOW).needs_review
    assert decide(rules, facts("x", source_system="epic"), [], NOW).tags == ("ehr",)


def test_min_priority_raises_to_at_least_that_level_and_never_lowers() -> None:
    raise_p2 = rule(9, phrases=("asap",), min_priority=2)
    rules = compile_ruleset(ruleset((REFILL, raise_p2)))
    assert decide(rules, facts("refill asap"), [], NOW).priority == 2
    assert decide(rules, facts("refill asap", urgency_hint=1), [], NOW).priority == 1
    assert decide(rules, facts("refill"), [], NOW).priority == 3


def test_most_urgent_priority_wins_among_rules() -> None:
    rules = compile_ruleset(
        ruleset(
            (
                rule(1, phrases=("refill",), set_task_type="refill", set_priority=3),
                rule(2, phrases=("today",), set_priority=2),
                rule(3, phrases=("late",), min_priority=1),
            )
        )
    )
    assert decide(rules, facts("refill today"), [], NOW).priority == 2
    assert decide(rules, facts("refill today, late"), [], NOW).priority == 1


def test_set_priority_replaces_the_type_default() -> None:
    rules = compile_ruleset(
        ruleset((rule(1, phrases=("newsletter",), set_task_type="prior_auth", set_priority=4),))
    )
    assert decide(rules, facts("newsletter"), [], NOW).priority == 4


def test_senders_urgency_is_kept_when_more_urgent_than_the_type_default() -> None:
    rules = compile_ruleset(ruleset((REFILL,)))
    assert decide(rules, facts("refill", urgency_hint=2), [], NOW).priority == 2
    assert decide(rules, facts("refill", urgency_hint=4), [], NOW).priority == 3


def test_same_rules_applied_to_different_tasks_keep_each_tasks_own_facts() -> None:
    # what a combination of rules decides is worked out once per rule set and reused; the
    # task's own urgency hint and tags still count each time
    rules = compile_ruleset(ruleset((REFILL, rule(2, phrases=("pharmacy",), add_tags=("rx",)))))
    first = decide(rules, facts("pharmacy refill"), [], NOW)
    second = decide(rules, facts("refill at the pharmacy", urgency_hint=1, tags=("vip",)), [], NOW)
    assert (first.priority, first.tags) == (3, ("rx",))
    assert (second.priority, second.tags) == (1, ("vip", "rx"))
    assert first.classification_rule_ids == second.classification_rule_ids == (1, 2)


def test_a_channel_no_rule_names_is_matched_by_rules_without_a_channel_only() -> None:
    rules = compile_ruleset(
        ruleset(
            (
                rule(1, phrases=("refill",), channels=("fax",), set_task_type="billing"),
                rule(2, phrases=("refill",), set_task_type="refill"),
                rule(3, request_types=("refill",), add_tags=("form",)),
            )
        )
    )
    for channel in ("sms", "carrier pigeon"):
        d = decide(rules, facts("refill", channel=channel, request_type="other"), [], NOW)
        assert (d.task_type, d.classification_rule_ids) == ("refill", (2,))
    d = decide(rules, facts("refill", channel="fax", request_type="refill"), [], NOW)
    assert d.needs_review and d.classification_rule_ids == (1, 2, 3)


def test_a_regex_is_tried_only_where_its_literals_occur_but_then_anywhere() -> None:
    rules = compile_ruleset(
        ruleset(
            (
                rule(1, regex=r"\bclaim\s*(no|number|#)", set_task_type="billing"),
                rule(2, regex=r"\bMRN[:#]?\s*\d{6,}", add_tags=("mrn",)),
            )
        )
    )
    assert decide(rules, facts("Claim #4 and MRN: 1234567"), [], NOW).tags == ("mrn",)
    assert decide(rules, facts("CLAIMNO 5"), [], NOW).task_type == "billing"
    assert decide(rules, facts("claims pending, mrn 12345"), [], NOW).needs_review


def test_rules_disagreeing_on_the_type_send_the_task_to_review() -> None:
    rules = compile_ruleset(ruleset((REFILL, BILLING_RULE)))
    d = decide(rules, facts("refill and a bill"), [], NOW)
    assert d.needs_review and d.task_type == "" and d.queue_id == REVIEW
    assert d.classification_rule_ids == (1, 2)
    review = d.explanation_dict()["needs_review"]
    assert review["reason"] == "types_disagree"
    assert {(p["rule_id"], p["task_type"]) for p in review["proposals"]} == {
        (1, "refill"),
        (2, "billing"),
    }
    assert "Refills" in review["message"] and "Billing" in review["message"]


def test_rules_agreeing_on_the_type_are_fine() -> None:
    rules = compile_ruleset(
        ruleset((REFILL, rule(3, phrases=("pharmacy",), set_task_type="refill")))
    )
    d = decide(rules, facts("pharmacy refill"), [], NOW)
    assert (d.task_type, d.needs_review, d.classification_rule_ids) == ("refill", False, (1, 3))


def test_nothing_matched_goes_to_review() -> None:
    d = decide(compile_ruleset(ruleset((REFILL,))), facts("hello there"), [], NOW)
    assert d.needs_review and d.queue_id == REVIEW
    assert d.explanation_dict()["needs_review"]["reason"] == "no_type"


def test_stop_ends_evaluation() -> None:
    stop = rule(1, phrases=("refill",), set_task_type="refill", stop=True)
    later = rule(2, phrases=("refill",), set_task_type="billing", add_tags=("late",))
    earlier_simple = rule(0, phrases=("please",), add_tags=("polite",))
    d = decide(
        compile_ruleset(ruleset((later, stop, earlier_simple))), facts("refill please"), [], NOW
    )
    assert d.task_type == "refill"
    assert d.classification_rule_ids == (0, 1)
    assert d.tags == ("polite",)
    x = d.explanation_dict()
    assert x["stopped_at"] == 1
    assert x["classification_rules_evaluated"] == 2


def test_shadow_rule_is_recorded_but_never_applied() -> None:
    shadow = rule(
        2, name="Try billing", phrases=("refill",), set_task_type="billing", mode="shadow"
    )
    d = decide(compile_ruleset(ruleset((REFILL, shadow))), facts("refill"), [], NOW)
    assert d.task_type == "refill" and d.classification_rule_ids == (1,)
    x = d.explanation_dict()
    assert x["shadow"] == [
        {
            "kind": "classification",
            "id": 2,
            "name": "Try billing",
            "would": {"set_task_type": "billing"},
        }
    ]
    assert 2 not in x["applied"]


def test_shadow_stop_rule_does_not_stop_evaluation() -> None:
    shadow_stop = rule(0, phrases=("refill",), add_tags=("x",), stop=True, mode="shadow")
    d = decide(compile_ruleset(ruleset((shadow_stop, REFILL))), facts("refill"), [], NOW)
    assert d.task_type == "refill" and d.tags == ()


def test_off_rule_is_ignored_and_only_counted() -> None:
    off = rule(2, phrases=("refill",), set_task_type="billing", mode="off")
    d = decide(compile_ruleset(ruleset((REFILL, off))), facts("refill"), [], NOW)
    assert d.task_type == "refill"
    x = d.explanation_dict()
    assert x["rules_off"] == 1
    assert all(m["id"] != 2 for m in x["matched"])


def test_rule_at_zero_rollout_never_applies_but_is_reported() -> None:
    zero = rule(2, phrases=("refill",), set_task_type="billing", rollout_percent=0, stop=True)
    d = decide(compile_ruleset(ruleset((zero, REFILL))), facts("refill"), [], NOW)
    assert (d.task_type, d.classification_rule_ids) == ("refill", (1,))
    statuses = {m["id"]: m["status"] for m in d.explanation_dict()["matched"]}
    assert statuses == {2: "outside_rollout", 1: "applied"}


def test_rollout_is_stable_per_task_and_roughly_proportional() -> None:
    half = rule(5, phrases=("refill",), set_task_type="refill", rollout_percent=30)
    rules = compile_ruleset(ruleset((half,)))
    applied = [
        not decide(rules, facts("refill", key=f"task-{i}"), [], NOW).needs_review
        for i in range(2000)
    ]
    assert 0.25 < sum(applied) / len(applied) < 0.35
    again = [
        not decide(rules, facts("refill", key=f"task-{i}"), [], NOW).needs_review
        for i in range(2000)
    ]
    assert applied == again
    assert applied[7] is (rollout_bucket(5, "task-7") < 30)


def test_rule_outside_its_rollout_is_reported_as_such() -> None:
    key = next(f"t{i}" for i in range(100) if rollout_bucket(5, f"t{i}") >= 50)
    half = rule(5, phrases=("refill",), set_task_type="refill", rollout_percent=50)
    d = decide(compile_ruleset(ruleset((half,))), facts("refill", key=key), [], NOW)
    assert d.needs_review
    assert d.explanation_dict()["matched"][0]["status"] == "outside_rollout"


# --- Routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "matching", "other"),
    [
        ({"task_types": ("refill",)}, {}, {"body": "bill"}),
        ({"priority_min": 1, "priority_max": 2}, {"urgency_hint": 2}, {}),
        ({"tags_any": ("spanish", "vip")}, {"tags": ("vip",)}, {"tags": ("new",)}),
        ({"channels": ("fax",)}, {"channel": "fax"}, {"channel": "email"}),
        ({"site_ids": (3,)}, {"site_id": 3}, {"site_id": 4}),
        ({"weekdays": (0,)}, {}, {"local_now": MONDAY_10AM + timedelta(days=1)}),
    ],
)
def test_routing_rule_conditions(
    condition: dict[str, object], matching: dict[str, object], other: dict[str, object]
) -> None:
    rules = compile_ruleset(ruleset((REFILL, BILLING_RULE), (route(50, AUTH, **condition),)))
    body = "refill"
    d = decide(rules, facts(**{"body": body, **matching}), [], NOW)  # type: ignore[arg-type]
    assert (d.queue_id, d.routing_rule_id) == (AUTH, 50)
    d = decide(rules, facts(**{"body": body, **other}), [], NOW)  # type: ignore[arg-type]
    assert d.queue_id != AUTH and d.routing_rule_id is None


@pytest.mark.parametrize(
    ("local", "on_call"),
    [(time(16, 0), True), (time(23, 30), True), (time(3, 0), True), (time(7, 59), True),
     (time(8, 0), False), (time(12, 0), False), (time(15, 59), False)],
)  # fmt: skip
def test_after_hours_window_wrapping_midnight_goes_to_on_call(local: time, on_call: bool) -> None:
    night = route(50, ON_CALL, name="Nights", time_from=time(16, 0), time_to=time(8, 0))
    rules = compile_ruleset(ruleset((REFILL,), (night,)))
    d = decide(rules, facts("refill", local_now=datetime.combine(MONDAY_10AM, local)), [], NOW)
    assert (d.queue_id == ON_CALL) is on_call


def test_closed_site_goes_to_on_call() -> None:
    closed = route(50, ON_CALL, business_hours="closed")
    open_only = route(51, AUTH, business_hours="open")
    rules = compile_ruleset(ruleset((REFILL,), (closed, open_only)))
    assert decide(rules, facts("refill", site_business_open=False), [], NOW).queue_id == ON_CALL
    assert decide(rules, facts("refill", site_business_open=True), [], NOW).queue_id == AUTH


def test_default_queue_of_the_type_when_no_routing_rule_matches() -> None:
    rules = compile_ruleset(ruleset((REFILL,), (route(50, AUTH, channels=("fax",)),)))
    d = decide(rules, facts("refill"), [], NOW)
    assert (d.queue_id, d.routing_rule_id) == (FRONT_DESK, None)
    assert d.explanation_dict()["route"]["text"] == "default queue of type Medication refill"


def test_first_matching_routing_rule_wins_and_sets_skill_and_priority() -> None:
    first = route(50, AUTH, required_skill="spanish", min_skill_level=3, priority_override=2)
    second = route(51, ON_CALL)
    d = decide(compile_ruleset(ruleset((REFILL,), (second, first))), facts("refill"), [], NOW)
    assert (d.queue_id, d.routing_rule_id, d.priority) == (AUTH, 50, 2)
    assert (d.required_skill, d.min_skill_level) == ("spanish", 3)
    assert d.explanation_dict()["priority"]["routing_override"] == 2


def test_shadow_routing_rule_is_reported_but_not_followed() -> None:
    shadow = route(50, ON_CALL, mode="shadow")
    d = decide(compile_ruleset(ruleset((REFILL,), (shadow,))), facts("refill"), [], NOW)
    assert d.queue_id == FRONT_DESK
    x = d.explanation_dict()
    assert x["shadow"][0]["would"]["queue"] == "After-hours on call"


def test_needs_review_skips_routing_rules() -> None:
    d = decide(compile_ruleset(ruleset((), (route(50, AUTH),))), facts("hello"), [], NOW)
    assert (d.queue_id, d.routing_rule_id) == (REVIEW, None)


# --- Assignment -----------------------------------------------------------------------------


def assign(
    candidates: list[CandidateSpec],
    queue: int = FRONT_DESK,
    skill: str = "",
    level: int = 0,
    weight: int = 1,
    patient: str = "",
    now: datetime = NOW,
) -> tuple[int | None, dict[int, str], dict[str, object]]:
    a = choose_assignee(QUEUES[queue], skill, level, weight, candidates, patient, now)
    x = a.explanation_dict()
    reasons = {c["staff_id"]: c["reason"] for c in x["candidates"]}
    return a.assignee_id, reasons, x


def test_each_passed_over_person_gets_a_reason() -> None:
    people = [
        person(1, queue_ids=frozenset({AUTH})),
        person(2, availability="away"),
        person(3, availability="offline"),
        person(4, shift_start=time(6, 0), shift_end=time(9, 0), time_zone="America/New_York"),
        person(5, active_load=5, capacity=5),
        person(6, skills={"spanish": 2}),
        person(7, skills={"spanish": 4}, active_load=3),
    ]
    chosen, reasons, x = assign(people, skill="spanish", level=3)
    assert chosen == 7
    # People who do not work the queue are counted, not listed on the timeline.
    assert x["not_in_queue"] == 1
    assert reasons == {
        2: "away",
        3: "offline",
        4: "off_shift",
        5: "at_capacity",
        6: "lacks_skill",
        7: None,
    }
    lacking = next(c for c in x["candidates"] if c["staff_id"] == 6)  # type: ignore[union-attr]
    assert lacking["level"] == 2 and "spanish level 3" in lacking["detail"]


def test_shift_is_read_in_the_persons_own_time_zone() -> None:
    # 14:00 UTC is 10:00 in New York and 07:00 in Los Angeles
    ny = person(1, shift_start=time(9, 0), shift_end=time(17, 0), time_zone="America/New_York")
    la = person(2, shift_start=time(9, 0), shift_end=time(17, 0), time_zone="America/Los_Angeles")
    assert assign([ny, la])[1] == {1: None, 2: "off_shift"}


def test_night_shift_after_midnight_belongs_to_the_day_it_started() -> None:
    night = person(1, shift_start=time(22, 0), shift_end=time(6, 0), shift_weekdays=(4,))
    saturday_2am = datetime(2024, 5, 11, 2, 0, tzinfo=UTC)  # the Friday night shift
    sunday_2am = datetime(2024, 5, 12, 2, 0, tzinfo=UTC)
    friday_noon = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert assign([night], now=saturday_2am)[0] == 1
    assert assign([night], now=sunday_2am)[0] is None
    assert assign([night], now=friday_noon)[0] is None


def test_unknown_time_zone_is_off_shift_not_a_guess() -> None:
    p = person(1, shift_start=time(0, 0), shift_end=time(23, 59), time_zone="Mars/Base")
    _, reasons, x = assign([p])
    assert reasons == {1: "off_shift"}
    assert "unknown time zone" in x["candidates"][0]["detail"]  # type: ignore[index]


def test_capacity_counts_the_weight_of_the_task() -> None:
    almost_full = person(1, active_load=4, capacity=5)
    assert assign([almost_full], weight=1)[0] == 1
    assert assign([almost_full], weight=2)[0] is None


def test_continuity_prefers_the_person_already_holding_the_patient() -> None:
    busy_but_knows = person(1, active_load=4, open_patient_keys=frozenset({"p-9"}))
    idle = person(2, active_load=0)
    chosen, _, x = assign([busy_but_knows, idle], patient="p-9")
    assert chosen == 1
    assert "continuity" in x["why"]  # type: ignore[operator]
    assert assign([busy_but_knows, idle], patient="p-other")[0] == 2


def test_continuity_never_overrides_eligibility() -> None:
    full_but_knows = person(1, active_load=5, open_patient_keys=frozenset({"p-9"}))
    assert assign([full_but_knows, person(2)], patient="p-9")[0] == 2


def test_least_loaded_by_share_of_capacity() -> None:
    # 2 of 10 (20%) is less loaded than 1 of 3 (33%)
    people = [person(1, active_load=1, capacity=3), person(2, active_load=2, capacity=10)]
    chosen, _, x = assign(people)
    assert chosen == 2
    assert "least loaded: 2/10" in x["why"]  # type: ignore[operator]


def test_least_loaded_tie_goes_to_the_person_waiting_longest() -> None:
    recent = person(1, active_load=1, last_assigned_at=NOW - timedelta(minutes=5))
    waiting = person(2, active_load=1, last_assigned_at=NOW - timedelta(hours=2))
    never = person(3, active_load=1)
    assert assign([recent, waiting])[0] == 2
    chosen, _, x = assign([recent, waiting, never])
    assert chosen == 3
    assert "tied with 2" in x["why"]  # type: ignore[operator]
    same = [person(9, active_load=1), person(8, active_load=1)]
    assert assign(same)[0] == 8


def test_round_robin_picks_the_longest_since_last_assignment() -> None:
    people = [
        person(1, active_load=0, last_assigned_at=NOW - timedelta(minutes=1)),
        person(2, active_load=4, last_assigned_at=NOW - timedelta(minutes=30)),
    ]
    chosen, _, x = assign(people, queue=BILLING)
    assert chosen == 2
    assert "round robin" in x["why"]  # type: ignore[operator]


def test_pull_only_queue_assigns_nobody_and_waits_for_next_task() -> None:
    a = choose_assignee(QUEUES[RECORDS], "", 0, 1, [person(1)], "", NOW)
    assert (a.assignee_id, a.waiting_for_capacity, a.pull_only) == (None, False, True)
    assert "Next task" in a.explanation_dict()["why"]


def test_nobody_eligible_waits_for_capacity_and_never_falls_back() -> None:
    people = [person(1, availability="away"), person(2, active_load=5, capacity=5)]
    rules = compile_ruleset(ruleset((REFILL,)))
    d = decide(rules, facts("refill"), people, NOW)
    assert d.assignee_id is None and d.waiting_for_capacity
    assert d.explanation_dict()["assignment"]["why"] == (
        "nobody eligible: the task waits for capacity"
    )


def test_excluded_person_is_skipped_after_a_lost_capacity_race() -> None:
    people = [person(1), person(2, active_load=1)]
    first = choose_assignee(QUEUES[FRONT_DESK], "", 0, 1, people, "", NOW)
    retry = choose_assignee(QUEUES[FRONT_DESK], "", 0, 1, people, "", NOW, exclude={1})
    assert (first.assignee_id, retry.assignee_id) == (1, 2)
    reasons = {c["staff_id"]: c["reason"] for c in retry.explanation_dict()["candidates"]}
    assert reasons[1] == "excluded"


def test_a_reused_pool_decides_like_a_fresh_list() -> None:
    people = [person(i, active_load=i % 3, capacity=4) for i in range(1, 8)]
    rules = compile_ruleset(ruleset((REFILL, BILLING_RULE)))
    pool = CandidatePool(people)
    for body in ("refill", "bill", "refill bill", "nothing"):
        assert decide(rules, facts(body), pool, NOW) == decide(rules, facts(body), people, NOW)


def test_required_skill_from_the_routing_rule_filters_candidates() -> None:
    rules = compile_ruleset(
        ruleset((REFILL,), (route(50, FRONT_DESK, required_skill="spanish", min_skill_level=2),))
    )
    people = [person(1), person(2, skills={"spanish": 2}, active_load=3)]
    assert decide(rules, facts("refill"), people, NOW).assignee_id == 2


# --- Explanation ----------------------------------------------------------------------------


def test_explanation_is_json_and_names_rules_and_candidates() -> None:
    rules = compile_ruleset(ruleset((REFILL,), (route(50, FRONT_DESK, name="Front desk"),)))
    people = [person(1, name="Alice", active_load=2), person(2, name="Bob", availability="away")]
    d = decide(rules, facts("Refill of lisinopril", patient_key="p1"), people, NOW)
    x = json.loads(d.to_json())
    assert x == d.explanation_dict()
    assert x["rule_set_version"] == 7
    assert x["rules_evaluated"] == 2
    assert x["matched"][0] == {
        "kind": "classification",
        "id": 1,
        "name": "Refills",
        "status": "applied",
        "matched": {"phrases": ["refill"]},
    }
    assert x["route"]["rule_name"] == "Front desk"
    names = {c["name"]: c for c in x["assignment"]["candidates"]}
    assert names["Alice"]["eligible"] and names["Alice"]["load"] == 2
    assert names["Bob"]["reason"] == "away"
    assert x["assignment"]["chosen"] == {"staff_id": 1, "name": "Alice"}
    assert "least loaded" in x["assignment"]["why"]


def test_explanation_of_a_regex_rule_shows_what_matched() -> None:
    rules = compile_ruleset(ruleset((rule(1, regex=r"MRN\s*\d+", set_task_type="records"),)))
    x = decide(rules, facts("Patient MRN 123456 wants records"), [], NOW).explanation_dict()
    assert x["matched"][0]["matched"] == {"regex": "MRN 123456"}


def test_explain_text_reads_as_sentences() -> None:
    rules = compile_ruleset(ruleset((REFILL,)))
    d = decide(
        rules,
        facts("refill"),
        [person(1, name="Alice"), person(2, name="Bob", availability="away")],
        NOW,
    )
    text = explain_text(d)
    assert "Classification rule 'Refills' matched on phrases \"refill\": applied." in text
    assert "Assigned to Alice" in text
    assert "Bob (away" in text


def test_trace_agrees_with_the_decision() -> None:
    rules = compile_ruleset(ruleset((REFILL, BILLING_RULE), (route(50, AUTH, channels=("fax",)),)))
    f = facts("refill", channel="fax")
    t = trace(rules, f)
    d = decide(rules, f, [], NOW)
    assert (t.task_type, t.queue_id, t.winner.id if t.winner else None) == (
        d.task_type,
        d.queue_id,
        d.routing_rule_id,
    )


# --- Compiling and validating -----------------------------------------------------------


def test_invalid_rule_is_disabled_and_reported_not_fatal() -> None:
    broken = rule(3, name="Broken", regex="(unclosed", set_task_type="refill")
    rules = compile_ruleset(ruleset((REFILL, broken)))
    assert rules.disabled_rule_ids == (3,)
    assert "Broken" in rules.problems[0] and "regex" in rules.problems[0]
    assert decide(rules, facts("refill"), [], NOW).task_type == "refill"


def test_rule_for_an_unknown_task_type_or_queue_is_disabled() -> None:
    rules = compile_ruleset(
        ruleset((rule(1, phrases=("x",), set_task_type="nope"),), (route(2, 999),))
    )
    assert rules.disabled_rule_ids == (1, 2)


def test_missing_review_queue_is_refused() -> None:
    with pytest.raises(RuleSetError, match="review queue"):
        compile_ruleset(ruleset(review_queue_id=99))


def test_decide_accepts_an_uncompiled_rule_set() -> None:
    spec = ruleset((REFILL,))
    assert decide(spec, facts("refill"), [], NOW) == decide(
        compile_ruleset(spec), facts("refill"), [], NOW
    )


VALID_CLASSIFICATION = {"name": "Refills", "phrases": ["refill"], "set_task_type": "refill"}


def test_valid_classification_rule_has_no_errors() -> None:
    assert validate_classification_rule(VALID_CLASSIFICATION, task_type_codes={"refill"}) == {}
    assert validate_classification_rule({**VALID_CLASSIFICATION, "phrases": "refill\nrx\n"}) == {}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"regex": "(unclosed"}, "regex", "missing ), unterminated subpattern"),
        ({"regex": "a*"}, "regex", "matches an empty text"),
        ({"phrases": ["refill", ""]}, "phrases", "Phrase 2 is empty"),
        ({"phrases": ["!!!"]}, "phrases", "no letters or digits"),
        ({"phrases": [], "channels": []}, "__all__", "Add at least one condition"),
        ({"set_priority": 5}, "set_priority", "1 (most urgent) to 4"),
        ({"min_priority": 0}, "min_priority", "1 (most urgent) to 4"),
        ({"rollout_percent": 101}, "rollout_percent", "0 to 100"),
        ({"rollout_percent": -1}, "rollout_percent", "0 to 100"),
        ({"mode": "sometimes"}, "mode", '"active", "shadow", "off"'),
        ({"phrase_match": "most"}, "phrase_match", '"any", "all"'),
        ({"set_task_type": "nope"}, "set_task_type", "no task type 'nope'"),
        ({"set_task_type": ""}, "__all__", "The rule does nothing"),
        ({"name": " "}, "name", "Give the rule a name"),
        ({"add_tags": ["vip", " "]}, "add_tags", "Entry 2 is empty"),
    ],
)
def test_classification_rule_errors_name_the_field(
    change: dict[str, object], field: str, words: str
) -> None:
    errors = validate_classification_rule(
        {**VALID_CLASSIFICATION, **change}, task_type_codes={"refill"}
    )
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors


VALID_ROUTING = {"name": "Nights", "target_queue_id": ON_CALL, "time_from": time(16, 0)}


def test_valid_routing_rule_has_no_errors() -> None:
    valid = {**VALID_ROUTING, "time_to": time(8, 0)}
    assert validate_routing_rule(valid, queue_ids=set(QUEUES)) == {}
    assert validate_routing_rule({"name": "Catch-all", "target_queue_id": 3}) == {}
    assert validate_routing_rule({**valid, "time_from": "16:00", "time_to": "08:00"}) == {}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({}, "time_to", "Set an end time too"),
        ({"time_from": None, "time_to": time(8, 0)}, "time_from", "Set a start time too"),
        ({"time_to": time(16, 0)}, "time_to", "Start and end are the same"),
        ({"time_to": "8 o'clock"}, "time_to", "HH:MM"),
        ({"priority_min": 3, "priority_max": 2}, "priority_max", "P3 to P2 is an empty range"),
        ({"priority_min": 0}, "priority_min", "1 (most urgent) to 4"),
        ({"priority_override": 9}, "priority_override", "1 (most urgent) to 4"),
        ({"min_skill_level": 6}, "min_skill_level", "1 to 5"),
        ({"weekdays": (0, 7)}, "weekdays", "0 (Monday) to 6 (Sunday)"),
        ({"business_hours": "sometimes"}, "business_hours", '"any", "open", "closed"'),
        ({"target_queue_id": None}, "target_queue_id", "Choose the queue"),
        ({"target_queue_id": 99}, "target_queue_id", "Queue 99 does not exist"),
        ({"rollout_percent": 250}, "rollout_percent", "0 to 100"),
        ({"site_ids": ("three",)}, "site_ids", "not a site id"),
        ({"task_types": ("nope",)}, "task_types", "Unknown task types: nope"),
    ],
)
def test_routing_rule_errors_name_the_field(
    change: dict[str, object], field: str, words: str
) -> None:
    errors = validate_routing_rule(
        {**VALID_ROUTING, **change}, queue_ids=set(QUEUES), task_type_codes=set(TASK_TYPES)
    )
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors
