import re
from collections import Counter
from datetime import date, datetime
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db.models import Sum

from accounts.models import StaffProfile
from clinicdesk import demo_traffic
from clinicdesk.demo import CLASSIFICATION_RULES, ROUTING_RULES
from clinicdesk.demo_traffic import DemoItem, generate_morning, submit_morning
from queues.models import Queue, Task
from routing import selectors
from routing.models import ClassificationRule, RoutingRule, RuleSet

# A Tuesday, 10:00 in the clinic: everyone on the day shift is at work, whatever the hour CI
# runs at.
DAY = date(2025, 3, 11)
NOW = datetime(2025, 3, 11, 10, 0, tzinfo=ZoneInfo("America/New_York"))


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run_demo(*args) -> str:
    out = StringIO()
    call_command("demo", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture(scope="module")
def morning() -> list[DemoItem]:
    return generate_morning(250)


def routed_morning(seed: int = demo_traffic.DEFAULT_SEED):
    """The demo clinic, and a 250-request morning routed at a fixed weekday 10:00."""
    run_demo()
    return submit_morning(generate_morning(250, seed=seed), day=DAY, now=NOW)


def pairs(run):
    return list(zip(run.items, run.tasks, strict=True))


# --- The generator (no database) --------------------------------------------------------------


def test_the_morning_is_deterministic(morning):
    again = generate_morning(250)
    assert again == morning
    assert [i.metadata for i in again] == [i.metadata for i in morning]
    assert generate_morning(250, seed=7) != morning


def test_a_250_morning_has_the_exact_mix(morning):
    channels = Counter(i.channel for i in morning)
    assert len(morning) == 250
    assert channels["portal"] == 80
    assert channels["phone"] == 60
    labs = [i for i in morning if i.request_type == "lab_result"]
    auths = [i for i in morning if i.request_type == "prior_auth_update"]
    assert len(labs) == 55 and {i.channel for i in labs} == {"fhir"}
    assert len(auths) == 55 and {i.channel for i in auths} == {"fhir", "api"}
    assert 5 <= sum(i.red_flag for i in morning) <= 10
    assert {i.channel for i in morning if i.red_flag} == {"portal", "phone"}
    assert 3 <= sum(i.ambiguous for i in morning) <= 10


def stream(item: DemoItem) -> str:
    if item.channel in ("portal", "phone"):
        return item.channel
    return "lab" if item.request_type == "lab_result" else "prior_auth"


@pytest.mark.parametrize("n", [0, 1, 7, 40, 100, 1000])
def test_the_mix_scales_with_n(n):
    items = generate_morning(n)
    assert len(items) == n
    expected = {name: count for name, count in demo_traffic.mix(n).items() if count}
    assert Counter(stream(i) for i in items) == expected
    assert demo_traffic.mix(250) == {"portal": 80, "phone": 60, "lab": 55, "prior_auth": 55}


def test_the_wording_varies(morning):
    subjects = {i.subject for i in morning}
    bodies = {i.body for i in morning}
    # Varied beyond the numbers and names: strip digits and the patients' names.
    skeletons = {
        re.sub(r"\d+", "#", i.body.replace(i.patient_name, "NAME").lower()) for i in morning
    }
    assert len(subjects) >= 150, len(subjects)
    assert len(bodies) == 250
    assert len(skeletons) >= 200, len(skeletons)
    transcripts = " ".join(i.body for i in morning if i.channel == "phone")
    assert re.search(r"\bum\b", transcripts) and re.search(r"\buh\b", transcripts)
    assert any(i.body == i.body.lower() for i in morning if i.channel == "portal")


def test_items_arrive_over_the_morning_with_unique_ids(morning):
    assert len({i.external_id for i in morning}) == 250
    assert all(i.external_id.startswith(f"demo-{demo_traffic.DEFAULT_SEED}-") for i in morning)
    times = [i.received_at(DAY) for i in morning]
    assert times == sorted(times)
    assert times[0].hour == 8 and times[-1].hour == 11
    assert all(i.patient_name and i.patient_birth_date for i in morning)


# --- Routed through the demo rules ------------------------------------------------------------


def test_the_demo_rules_compile_without_problems(db):
    run_demo()
    snapshot = selectors.routing_snapshot()
    assert snapshot.compiled.problems == ()
    assert len(snapshot.compiled.class_rules) == len(CLASSIFICATION_RULES)
    assert len(snapshot.compiled.routing_rules) == len(ROUTING_RULES)


@pytest.mark.parametrize("seed", [demo_traffic.DEFAULT_SEED, 7])
def test_the_morning_lands_where_it_should(db, seed):
    run = routed_morning(seed)

    hits, total, misses = demo_traffic.accuracy(run)
    detail = "".join(
        f"\n  {item.kind} went to {queue}, expected {item.expected_queue}: {item.body[:120]!r}"
        for item, queue in misses
    )
    assert hits / total >= 0.9, f"routing accuracy {hits}/{total} = {hits / total:.1%}{detail}"

    wrong = [
        (item.kind, task.task_type.code if task.task_type else "", task.priority, item.subject)
        for item, task in pairs(run)
        if (task.task_type.code if task.task_type else "") != item.expected_type
        or (item.expected_priority is not None and task.priority != item.expected_priority)
    ]
    assert len(wrong) <= 0.1 * total, wrong

    triage, review = (Queue.objects.get(code=code).pk for code in ("triage", "needs-review"))
    flagged = [task for item, task in pairs(run) if item.red_flag]
    assert len(flagged) >= 5
    for task in flagged:
        assert (task.queue_id, task.priority) == (triage, 1), task.subject
        assert task.task_type.code == "clinical_triage" and "red-flag" in task.tags
    assert demo_traffic.red_flag_counts(run)[:2] == (len(flagged), len(flagged))

    in_review = {task.external_id for task in run.tasks if task.queue_id == review}
    ambiguous = {item.external_id for item in run.items if item.ambiguous}
    assert ambiguous <= in_review
    assert len(in_review - ambiguous) <= 0.02 * total, in_review - ambiguous


def test_a_routed_morning_respects_capacity_shifts_and_skills(db):
    run = routed_morning()

    for profile in StaffProfile.objects.select_related("user"):
        held = Task.objects.filter(
            assignee=profile.user, status__in=Task.LOADED_STATUSES
        ).aggregate(units=Sum("weight"))["units"]
        assert profile.active_load == (held or 0), profile.user.username
        assert profile.active_load <= profile.capacity, profile.user.username

    counts = {c.code: c for c in demo_traffic.queue_counts(run)}
    assert sum(c.total for c in counts.values()) == 250
    for code in ("front-desk", "billing", "prior-auth", "referrals", "triage", "scheduling"):
        assert counts[code].assigned > 0, f"nobody at work in {code} on a weekday morning"
    for code in ("records", "lab-results", "needs-review"):  # pull only: wait for Next task
        assert counts[code].assigned == 0 and counts[code].waiting == counts[code].total
    assert not Task.objects.filter(assignee__username="nurse3").exists()  # on call: off at 10:00

    skilled = Task.objects.filter(required_skill__isnull=False, assignee__isnull=False)
    assert skilled.exists()
    for task in skilled.select_related("required_skill", "assignee__staff"):
        held = task.assignee.staff.skills.filter(skill=task.required_skill).first()
        assert held is not None and held.level >= task.min_skill_level, task.subject

    spanish = [t for i, t in pairs(run) if i.kind.startswith("spanish_") and not i.ambiguous]
    assert spanish
    for task in spanish:
        assert "spanish" in task.tags and task.required_skill.code == "spanish"
    appeals = [t for i, t in pairs(run) if i.kind == "claim_appeal"]
    assert appeals and all(t.required_skill.code == "payer-appeals" for t in appeals)
    deadlines = [t for i, t in pairs(run) if i.kind in ("pa_denied", "pa_peer_to_peer")]
    assert deadlines and all(t.priority == 2 for t in deadlines)

    again = submit_morning(run.items, day=DAY, now=NOW)
    assert (again.created, again.skipped) == (0, 250)
    assert Task.objects.count() == 250


def test_at_night_only_the_on_call_nurse_is_given_work(db):
    run_demo()
    night = datetime(2025, 3, 11, 22, 0, tzinfo=ZoneInfo("America/New_York"))

    run = submit_morning(generate_morning(60, seed=3), day=DAY, now=night)

    assignees = set(
        Task.objects.filter(assignee__isnull=False).values_list("assignee__username", flat=True)
    )
    assert assignees == {"nurse3"}
    triage = Queue.objects.get(code="triage")
    for item, task in pairs(run):
        if item.red_flag:
            assert (task.queue_id, task.priority) == (triage.pk, 1)


# --- The command ------------------------------------------------------------------------------


def test_demo_tasks_prints_the_queues_and_the_red_flags(db):
    output = run_demo("--tasks", "250", "--date", DAY.isoformat())

    assert Task.objects.count() == 250
    assert "loaded: 250 new tasks" in output
    assert re.search(r"Clinical triage:\s+\d+ tasks, \d+ assigned / \d+ waiting", output)
    assert re.search(r"Needs review:\s+\d+ tasks", output)
    flagged = sum(i.red_flag for i in generate_morning(250))
    assert f"Red flags: {flagged} of {flagged} went to Clinical triage as P1" in output


def test_demo_twice_with_tasks_creates_no_duplicates(db):
    run_demo("--tasks", "30", "--date", DAY.isoformat())
    counts = (
        Task.objects.count(),
        RuleSet.objects.count(),
        ClassificationRule.objects.count(),
        RoutingRule.objects.count(),
    )

    output = run_demo("--tasks", "30", "--date", DAY.isoformat())

    assert (
        Task.objects.count(),
        RuleSet.objects.count(),
        ClassificationRule.objects.count(),
        RoutingRule.objects.count(),
    ) == counts
    assert "30 were loaded by an earlier run" in output


def test_demo_warns_when_the_day_is_not_a_working_day(db):
    output = run_demo("--tasks", "5", "--date", "2025-03-09")

    assert "Sunday is not a working day at Riverside Family Practice" in output
    assert Task.objects.count() == 5
