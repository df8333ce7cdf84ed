"""Replay of a rule set on past and generated traffic (routing/replay.py) and its admin pages."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import UserFactory
from routing import engine, replay, services
from routing.models import ClassificationRule, ReplayRun, RoutingRule
from routing.tests.test_preview import build_clinic

pytestmark = pytest.mark.django_db

ACTOR = "client:test"


@pytest.fixture
def clinic():
    return build_clinic()


def submit(subject: str, body: str = ""):
    return services.task_submit(actor=ACTOR, channel="portal", subject=subject, body=body)


@pytest.fixture
def traffic(clinic):
    """Six tasks routed live by the active set: two denials (one an appeal), one records
    request, three that no rule classifies (Needs review), two of which mention a chart."""
    start = timezone.now() - timedelta(seconds=1)
    tasks = {
        "denial": submit("Claim denied for March"),
        "appeal": submit("Claim denied", "We want to appeal this decision."),
        "records": submit("Please send my medical records"),
        "chart": submit("Copy of my chart"),
        "chart2": submit("Need my chart for the new doctor"),
        "hello": submit("Hello there"),
    }
    return tasks, start


def period(start):
    return replay.load_period(start, timezone.now() + timedelta(seconds=1))


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds"}


def test_an_identical_draft_changes_nothing(clinic, traffic):
    _, start = traffic
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk)
    report = replay.replay(rule_set=draft, traffic=period(start))
    assert report["tasks"] == 6
    assert (report["changed_queue"], report["changed_type"], report["changed_priority"]) == (
        0,
        0,
        0,
    )
    assert report["moves"] == []
    assert report["needs_review"]["baseline"] == report["needs_review"]["draft"] == 3
    # The appeal kept its "appeal" tag from the rule, not as an input: it still goes to Appeals.
    appeals = next(q for q in report["queues"] if q["queue"] == "Appeals")
    assert appeals["draft"]["tasks"] == appeals["baseline"]["tasks"] == 1
    # Against the active rules replayed, too.
    again = replay.replay(rule_set=draft, traffic=period(start), baseline=replay.ACTIVE)
    assert again["changed_queue"] == 0
    assert again["baseline"]["versions"] == [clinic["rules"].version]


def test_replay_is_deterministic(clinic, traffic):
    _, start = traffic
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk)
    ClassificationRule.objects.filter(rule_set=draft, name="Records").update(
        phrases="medical records\nrecords request\nchart"
    )
    services.rule_set_touch(draft.pk)
    end = timezone.now() + timedelta(seconds=1)
    first = replay.replay(rule_set=draft, traffic=replay.load_period(start, end))
    second = replay.replay(rule_set=draft, traffic=replay.load_period(start, end))
    assert first["changed_queue"] == 2
    assert without_timing(first) == without_timing(second)


def test_a_changed_rule_moves_exactly_the_tasks_it_matches(clinic, traffic):
    tasks, start = traffic
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk)
    ClassificationRule.objects.filter(rule_set=draft, name="Records").update(
        phrases="medical records\nrecords request\nchart"
    )
    services.rule_set_touch(draft.pk)
    report = replay.replay(rule_set=draft, traffic=period(start))
    assert report["changed_queue"] == 2
    assert report["changed_type"] == 2
    assert report["moves"] == [
        {
            "from": "Needs review",
            "to": "Records",
            "count": 2,
            "examples": [
                {"task": tasks["chart"].pk, "from_type": "", "to_type": "records_request"},
                {"task": tasks["chart2"].pk, "from_type": "", "to_type": "records_request"},
            ],
        }
    ]
    matrix = report["matrix"]
    assert matrix["queues"] == ["Appeals", "Billing", "Needs review", "Records"]
    rows = {row["from"]: row["cells"] for row in matrix["rows"]}
    assert rows == {
        "Appeals": [1, 0, 0, 0],
        "Billing": [0, 1, 0, 0],
        "Needs review": [0, 0, 1, 2],
        "Records": [0, 0, 0, 1],
    }
    assert matrix["totals"] == [1, 1, 1, 3]
    assert report["needs_review"] == {"baseline": 3, "draft": 1, "examples": []}


def test_a_changed_routing_rule_moves_its_tasks(clinic, traffic):
    tasks, start = traffic
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk)
    RoutingRule.objects.filter(rule_set=draft).update(target_queue=clinic["billing_queue"])
    services.rule_set_touch(draft.pk)
    report = replay.replay(rule_set=draft, traffic=period(start))
    assert [(m["from"], m["to"], m["count"]) for m in report["moves"]] == [
        ("Appeals", "Billing", 1)
    ]
    assert report["moves"][0]["examples"] == [
        {"task": tasks["appeal"].pk, "from_type": "claim_denial", "to_type": "claim_denial"}
    ]
    assert report["changed_type"] == 0


def test_agreement_counts_what_people_corrected_as_right(clinic, traffic):
    tasks, start = traffic
    person = UserFactory(username="rita")
    # A person classifies a chart request from Needs review, and moves a denial to Appeals.
    services.task_reclassify(
        task_id=tasks["chart"].pk, actor=person, task_type_code="records_request"
    )
    services.task_reroute(
        task_id=tasks["denial"].pk,
        actor=person,
        to_queue=clinic["appeals_queue"],
        reason="An appeal in all but name",
    )
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk)
    ClassificationRule.objects.filter(rule_set=draft, name="Records").update(
        phrases="medical records\nrecords request\nchart"
    )
    services.rule_set_touch(draft.pk)
    agreement = replay.replay(rule_set=draft, traffic=period(start))["agreement"]
    assert agreement["judged"] == 6
    assert agreement["corrected"] == 2
    # The recorded routing had both corrected tasks wrong; the draft gets the chart right,
    # but sends the second chart message (which nobody corrected) away from Needs review.
    assert agreement["corrected_queue"] == {"baseline": 0, "draft": 1}
    assert agreement["queue"] == {"baseline": round(4 / 6, 4), "draft": round(4 / 6, 4)}
    assert agreement["type"]["baseline"] == round(5 / 6, 4)
    assert agreement["type"]["draft"] == round(5 / 6, 4)


def test_duplicates_and_unrouted_tasks_are_counted_not_replayed(clinic, traffic):
    _, start = traffic
    from queues.services import task_create

    task_create(actor=ACTOR, channel="portal", subject="Never routed")
    report = replay.replay(rule_set=clinic["rules"], traffic=period(start))
    assert (report["tasks"], report["skipped"]) == (6, 1)


def test_too_many_tasks_is_refused(clinic, traffic):
    _, start = traffic
    with pytest.raises(replay.ReplayError, match="shorter"):
        replay.load_period(start, timezone.now() + timedelta(seconds=1), limit=5)


# --- the simulation ------------------------------------------------------------------------


def job(number: int, minute: int, queue: engine.QueueSpec, minutes: float = 30) -> replay.Job:
    return replay.Job(
        number=number,
        at=datetime(2025, 3, 3, 9, 0, tzinfo=UTC) + timedelta(minutes=minute),
        queue=queue,
        required_skill="",
        min_level=0,
        weight=1,
        priority=3,
        minutes=minutes,
    )


def test_simulated_queue_age_follows_capacity():
    """One person with room for one task, three 30-minute tasks at 9:00, 9:05 and 9:10: they
    are taken at 9:00, 9:30 and 10:00, so they wait 0, 25 and 50 minutes."""
    queue = engine.QueueSpec(1, "Billing")
    ana = engine.CandidateSpec(staff_id=7, name="Ana", queue_ids=frozenset({1}), capacity=1)
    sims = replay.simulate([job(1, 0, queue), job(2, 5, queue), job(3, 10, queue)], [ana])
    assert sorted(sims[1].ages) == [0, 25, 50]
    assert (sims[1].tasks, sims[1].waited, sims[1].not_reached, sims[1].peak_units) == (3, 2, 0, 1)
    assert replay.percentile(sims[1].ages, 50) == 25
    assert replay.percentile(sims[1].ages, 90) == 50


def test_simulation_respects_shifts_and_counts_work_nobody_reaches():
    queue = engine.QueueSpec(1, "Billing")
    # Off shift all morning (her shift starts at 10:00 UTC): the 9:00 task waits for her.
    late = engine.CandidateSpec(
        staff_id=8,
        name="Late",
        queue_ids=frozenset({1}),
        capacity=2,
        shift_start=time(10, 0),
        shift_end=time(18, 0),
    )
    nobody = engine.QueueSpec(2, "Empty queue")
    sims = replay.simulate([job(1, 0, queue), job(2, 0, nobody)], [late])
    assert sims[1].ages == [60]
    assert sims[2].not_reached == 1
    assert sims[2].ages == [24 * 60]


# --- generated traffic ---------------------------------------------------------------------


def test_a_generated_morning_is_compared_with_the_active_rules_and_the_expected_queues():
    from clinicdesk.demo import build_demo_clinic
    from routing.models import RuleSet

    build_demo_clinic()
    active = RuleSet.objects.get(status=RuleSet.Status.ACTIVE)
    draft = services.rule_set_copy(rule_set_id=active.pk)
    traffic = replay.load_generated(
        n=60, seed=7, day=datetime(2025, 3, 4).date(), review_queue_id=active.review_queue_id
    )
    report = replay.replay(rule_set=draft, traffic=traffic)
    assert report["tasks"] == 60
    assert report["baseline"]["kind"] == replay.ACTIVE
    assert report["changed_queue"] == 0
    assert report["agreement"]["judged"] == 60
    assert report["agreement"]["queue"]["draft"] == report["agreement"]["queue"]["baseline"] > 0.8
    assert sum(q["draft"]["tasks"] for q in report["queues"]) == 60


# --- the admin pages -----------------------------------------------------------------------


@pytest.fixture
def manager(client):
    user = UserFactory(username="maria", roles=["Manager"], is_staff=True)
    client.force_login(user)
    return user


def test_manager_replays_a_draft_and_reads_the_report(client, manager, clinic, traffic):
    tasks, start = traffic
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk, actor=manager)
    ClassificationRule.objects.filter(rule_set=draft, name="Records").update(
        phrases="medical records\nrecords request\nchart"
    )
    services.rule_set_touch(draft.pk)
    local = timezone.localtime
    response = client.post(
        reverse("admin:routing_ruleset_replay", args=[draft.pk]),
        {
            "source": "period",
            "start": local(start).strftime("%Y-%m-%dT%H:%M"),
            "end": (local() + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M"),
            "baseline": "recorded",
        },
    )
    run = ReplayRun.objects.get(rule_set=draft)
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:routing_ruleset_replay_report", args=[draft.pk, run.pk]
    )
    assert (run.task_count, run.changed_queue, run.created_by) == (6, 2, manager)
    page = client.get(response["Location"]).content.decode()
    assert 'id="replay-matrix"' in page
    assert f"#{tasks['chart'].pk}:" in page
    # Task numbers and types only: no subject or body of any task.
    assert "Copy of my chart" not in page
    # And the draft's page lists the replay.
    change = client.get(reverse("admin:routing_ruleset_change", args=[draft.pk])).content.decode()
    assert "Replay against past traffic" in change


def test_replay_action_opens_the_form(client, manager, clinic):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    response = client.post(
        reverse("admin:routing_ruleset_changelist"),
        {"action": "replay", ACTION_CHECKBOX_NAME: [clinic["rules"].pk]},
    )
    assert response["Location"] == reverse(
        "admin:routing_ruleset_replay", args=[clinic["rules"].pk]
    )


def test_replay_of_a_generated_morning_needs_no_period(client, manager, clinic):
    response = client.post(
        reverse("admin:routing_ruleset_replay", args=[clinic["rules"].pk]),
        {"source": "generated", "baseline": "recorded", "n": 20, "seed": 3, "day": "2025-03-04"},
    )
    assert response.status_code == 302
    run = ReplayRun.objects.get()
    assert run.source == {"kind": "generated", "n": 20, "seed": 3, "day": "2025-03-04"}
    assert run.report["baseline"]["kind"] == "active"


def test_only_managers_replay(client, clinic):
    supervisor = UserFactory(username="sam", roles=["Supervisor"], is_staff=True)
    client.force_login(supervisor)
    url = reverse("admin:routing_ruleset_replay", args=[clinic["rules"].pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"source": "generated", "n": 5}).status_code == 403
    assert not ReplayRun.objects.exists()
