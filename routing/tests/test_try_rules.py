import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from routing.models import RuleSet
from routing.tests.factories import ClassificationRuleFactory, RuleSetFactory
from routing.tests.test_preview import build_clinic, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


def try_rules(*args, **options) -> str:
    out = StringIO()
    call_command("try_rules", *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def test_prints_the_explanation_in_words(clinic):
    before = row_counts()
    out = try_rules(
        "--channel", "portal", "--subject", "Claim denied", "--body", "We want to appeal."
    )
    assert "Classification rule 'Denied claims' matched on phrases \"claim denied\"" in out
    assert "Routed to Appeals (rule 'Appeals need the skill')." in out
    assert "Not assigned: nobody eligible" in out
    assert "Carla Agent (away: availability is away)" in out
    assert "Dan Agent (lacks_skill: needs payer-appeals level 3, has level 1)" in out
    assert row_counts() == before


def test_json_has_the_decision_fields(clinic):
    before = row_counts()
    out = try_rules(
        "--json", "--channel", "email", "--subject", "Claim denied", "--site", "northgate"
    )
    [line] = out.splitlines()
    result = json.loads(line)
    assert result["task_type"] == "claim_denial"
    assert result["priority"] == 3
    assert result["queue"] == "Billing"
    assert result["tags"] == []
    assert result["rule_set_version"] == clinic["rules"].version
    assert result["rules"] == [
        {"kind": "classification", "id": clinic["denied_rule"].pk, "name": "Denied claims"}
    ]
    assert result["needs_review"] is False
    assert result["assignee"] == "Ana Agent"
    assert result["explanation"]["route"]["by"] == "default"
    assert row_counts() == before


def test_file_gives_one_json_line_per_message(clinic, tmp_path):
    messages = tmp_path / "messages.jsonl"
    messages.write_text(
        "\n".join(
            [
                json.dumps({"channel": "portal", "subject": "Claim denied", "body": ""}),
                "",
                json.dumps({"channel": "fax", "subject": "Medical records request", "body": "x"}),
                json.dumps({"channel": "api", "subject": "Parking", "request_type": "other"}),
            ]
        )
    )
    before = row_counts()
    out = try_rules("--file", str(messages), "--json")
    results = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], r["queue"], r["needs_review"]) for r in results] == [
        (1, "Billing", False),
        (3, "Records", False),
        (4, clinic["rules"].review_queue.name, True),
    ]
    assert row_counts() == before


def test_file_in_words_heads_each_message(clinic, tmp_path):
    messages = tmp_path / "messages.jsonl"
    messages.write_text(
        json.dumps({"channel": "portal", "subject": "Claim denied"})
        + "\n"
        + json.dumps({"channel": "portal", "subject": "Hello"})
    )
    out = try_rules("--file", str(messages))
    assert "Claim denied (line 1)" in out
    assert "Hello (line 2)" in out
    assert "Needs review: No rule set a task type." in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"channel": "sms", "subject": "Hi"}, "line 3: 'channel' must be one of portal, email,"),
        ({"channel": "portal"}, "line 3: 'subject' is required"),
        ({"channel": "portal", "subject": "Hi", "body": 7}, "line 3: 'body' must be text"),
        ({"channel": "portal", "subject": "Hi", "urgency": 1}, "line 3: 'urgency' is not a field"),
        ({"channel": "portal", "subject": "Hi", "site": "nowhere"}, "line 3: 'site' 'nowhere'"),
        (["portal", "Hi"], "line 3: expected a JSON object"),
    ],
)
def test_bad_line_names_the_line_and_the_field(clinic, tmp_path, line, message):
    messages = tmp_path / "messages.jsonl"
    good = json.dumps({"channel": "portal", "subject": "Claim denied"})
    messages.write_text(f"{good}\n{good}\n{json.dumps(line)}\n{good}\n")
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        try_rules("--file", str(messages), "--json")


def test_line_that_is_not_json(clinic, tmp_path):
    messages = tmp_path / "messages.jsonl"
    messages.write_text('{"channel": "portal", "subject": "ok"}\n{"channel": portal}\n')
    with pytest.raises(CommandError, match="line 2: not valid JSON"):
        try_rules("--file", str(messages))


def test_bad_options_are_named(clinic):
    with pytest.raises(CommandError, match="--channel must be one of portal"):
        try_rules("--channel", "sms", "--subject", "Hi")
    with pytest.raises(CommandError, match="Give --channel and --subject"):
        try_rules("--channel", "portal")
    with pytest.raises(CommandError, match="--site 'nowhere' is not a site code"):
        try_rules("--channel", "portal", "--subject", "Hi", "--site", "nowhere")
    with pytest.raises(CommandError, match="There is no rule set version 999"):
        try_rules("--channel", "portal", "--subject", "Hi", "--rule-set", "999")
    with pytest.raises(CommandError, match="--at 'soon' is not a date"):
        try_rules("--channel", "portal", "--subject", "Hi", "--at", "soon")


def test_a_draft_is_tried_by_its_version(clinic):
    rules = clinic["rules"]
    draft = RuleSetFactory(
        status=RuleSet.Status.DRAFT,
        review_queue=rules.review_queue,
        red_flag_queue=rules.red_flag_queue,
        red_flag_task_type=rules.red_flag_task_type,
    )
    ClassificationRuleFactory(
        rule_set=draft,
        name="Hello is records",
        phrases="hello",
        set_task_type=clinic["records_request"],
    )
    out = try_rules(
        "--json", "--channel", "portal", "--subject", "Hello", "--rule-set", str(draft.version)
    )
    result = json.loads(out)
    assert result["rule_set_version"] == draft.version
    assert result["queue"] == "Records"
    assert result["rules"][0]["name"] == "Hello is records"


def test_without_an_active_rule_set_it_says_so(clinic):
    RuleSet.objects.update(status=RuleSet.Status.RETIRED)
    with pytest.raises(CommandError, match="No rule set is active"):
        try_rules("--channel", "portal", "--subject", "Hi")
