"""Publishing a rule set with four eyes, at a chosen time, and rolling back (routing.services
rule-set functions, routing.jobs.publish_due_rule_sets and the admin pages)."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import UserFactory
from routing import jobs, services
from routing.models import ClassificationRule, RuleSet, RuleSetEvent
from routing.tests.test_preview import build_clinic

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


def manager_named(username: str):
    return UserFactory(username=username, roles=["Manager"], is_staff=True)


@pytest.fixture
def alice():
    return manager_named("alice")


@pytest.fixture
def bob():
    return manager_named("bob")


@pytest.fixture
def carol():
    return manager_named("carol")


@pytest.fixture
def draft(clinic, alice):
    """Alice's draft: a copy of the live set where a chart request is a records request."""
    draft = services.rule_set_copy(rule_set_id=clinic["rules"].pk, actor=alice)
    ClassificationRule.objects.filter(rule_set=draft, name="Records").update(
        phrases="medical records\nrecords request\nchart"
    )
    services.rule_set_touch(draft.pk)
    return RuleSet.objects.get(pk=draft.pk)


def status(rule_set: RuleSet) -> str:
    return RuleSet.objects.values_list("status", flat=True).get(pk=rule_set.pk)


def kinds(rule_set: RuleSet) -> list[tuple[str, str]]:
    return [(e.kind, e.actor_label) for e in RuleSetEvent.objects.filter(rule_set=rule_set)]


def test_the_author_cannot_approve_and_a_second_manager_can(clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice, note="Charts")
    with pytest.raises(ValidationError, match="Four eyes"):
        services.rule_set_approve_publication(rule_set_id=draft.pk, actor=alice)
    assert status(draft) == "draft"

    rule_set, live = services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    assert live is True
    assert status(draft) == "active"
    assert status(clinic["rules"]) == "retired"
    assert (rule_set.publish_requested_by, rule_set.publish_approved_by) == (alice, carol)
    assert kinds(draft) == [
        ("created", "alice"),
        ("requested", "alice"),
        ("approved", "carol"),
        ("published", "carol"),
    ]
    assert kinds(clinic["rules"]) == [("retired", "carol")]
    # Routing follows at once, and the task records the version that routed it.
    task = services.task_submit(actor="client:test", channel="portal", subject="Copy of my chart")
    assert (task.rule_set_version, task.queue_id) == (draft.version, clinic["records_queue"].pk)


def test_neither_the_requester_nor_an_editor_may_approve(clinic, draft, alice, bob, carol):
    dave = manager_named("dave")
    services.rule_set_record_edit(rule_set_id=draft.pk, actor=dave)  # dave edited a rule
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=bob)
    for person in (alice, bob, dave):
        with pytest.raises(ValidationError, match="Four eyes"):
            services.rule_set_approve_publication(rule_set_id=draft.pk, actor=person)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    assert status(draft) == "active"


def test_an_approved_draft_goes_live_at_its_time(clinic, draft, alice, carol):
    at = timezone.now() + timedelta(hours=2)
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice, publish_at=at)
    _, live = services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    assert live is False
    assert jobs.publish_due_rule_sets(now=at - timedelta(minutes=1)) == 0
    assert status(draft) == "draft"
    assert jobs.publish_due_rule_sets(now=at) == 1
    assert (status(draft), status(clinic["rules"])) == ("active", "retired")
    assert kinds(draft)[-1] == ("published", services.PUBLISHER)
    # A second run (or a second cluster) publishes nothing again.
    assert jobs.publish_due_rule_sets(now=at + timedelta(minutes=1)) == 0


def test_a_request_is_not_approved_nor_published_after_an_edit(clinic, draft, alice, carol):
    at = timezone.now() + timedelta(hours=1)
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice, publish_at=at)
    services.rule_set_touch(draft.pk)
    with pytest.raises(ValidationError, match="changed after"):
        services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)

    services.rule_set_withdraw_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice, publish_at=at)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    services.rule_set_touch(draft.pk)  # changed after approval
    assert jobs.publish_due_rule_sets(now=at) == 0
    assert status(draft) == "draft"
    draft.refresh_from_db()
    assert draft.publication_state == ""
    assert kinds(draft)[-1] == ("withdrawn", services.PUBLISHER)


def test_rollback_restores_the_previous_set_and_records_who_and_why(clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    with pytest.raises(ValidationError):
        services.rule_set_roll_back(rule_set_id=clinic["rules"].pk, actor=alice, reason=" ")

    target, previous = services.rule_set_roll_back(
        rule_set_id=clinic["rules"].pk, actor=alice, reason="Charts flooded Records"
    )
    assert (target, previous) == (clinic["rules"], draft)
    assert (status(clinic["rules"]), status(draft)) == ("active", "retired")
    event = RuleSetEvent.objects.get(rule_set=clinic["rules"], kind="rolled_back")
    assert (event.actor, event.note, event.other_version) == (
        alice,
        "Charts flooded Records",
        draft.version,
    )
    task = services.task_submit(actor="client:test", channel="portal", subject="Copy of my chart")
    assert task.rule_set_version == clinic["rules"].version


def test_rollback_withdraws_a_scheduled_publication(clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    later = services.rule_set_copy(rule_set_id=draft.pk, actor=alice)
    at = timezone.now() + timedelta(hours=1)
    services.rule_set_request_publication(rule_set_id=later.pk, actor=alice, publish_at=at)
    services.rule_set_approve_publication(rule_set_id=later.pk, actor=carol)
    services.rule_set_roll_back(rule_set_id=clinic["rules"].pk, actor=carol, reason="Revert")
    assert jobs.publish_due_rule_sets(now=at) == 0
    assert status(clinic["rules"]) == "active"


def test_only_a_set_that_was_live_is_rolled_back_to(clinic, draft, alice):
    with pytest.raises(ValidationError, match="never live"):
        services.rule_set_roll_back(rule_set_id=draft.pk, actor=alice, reason="Try")


def test_batch_intake_records_the_published_version(clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    tasks = services.task_submit_batch(
        actor="client:test",
        drafts=[
            {"channel": "portal", "subject": "Copy of my chart"},
            {"channel": "portal", "subject": "Claim denied"},
        ],
    )
    assert {t.rule_set_version for t in tasks} == {draft.version}


# --- the admin -----------------------------------------------------------------------------


def test_request_and_approve_in_the_admin(client, clinic, draft, alice, carol):
    url = reverse("admin:routing_ruleset_publish", args=[draft.pk])
    client.force_login(alice)
    page = client.get(url).content.decode()
    assert "Request publication" in page
    client.post(url, {"request": "1", "publish_at": "", "note": "Charts are records"})
    draft.refresh_from_db()
    assert draft.publication_state == "requested"
    page = client.get(url).content.decode()
    assert "another manager approves it" in page
    assert 'name="approve"' not in page
    client.post(url, {"approve": "1"})
    assert status(draft) == "draft"  # refused: she wrote it

    client.force_login(carol)
    page = client.get(url).content.decode()
    assert "Charts are records" in page
    assert 'name="approve"' in page
    response = client.post(url, {"approve": "1"})
    assert response.status_code == 302
    assert status(draft) == "active"


def test_rollback_in_the_admin(client, clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    client.force_login(alice)
    change = client.get(reverse("admin:routing_ruleset_change", args=[clinic["rules"].pk]))
    assert f"Roll back to version {clinic['rules'].version}" in change.content.decode()
    url = reverse("admin:routing_ruleset_rollback", args=[clinic["rules"].pk])
    response = client.post(url, {"reason": "Too many charts in Records"})
    assert response.status_code == 302
    assert status(clinic["rules"]) == "active"


def test_a_retired_set_is_read_only(client, clinic, draft, alice, carol):
    services.rule_set_request_publication(rule_set_id=draft.pk, actor=alice)
    services.rule_set_approve_publication(rule_set_id=draft.pk, actor=carol)
    client.force_login(alice)
    rule = clinic["denied_rule"]
    response = client.post(
        reverse("admin:routing_classificationrule_change", args=[rule.pk]),
        {"name": "Renamed", "rule_set": rule.rule_set_id},
    )
    assert response.status_code == 403
    rule.refresh_from_db()
    assert rule.name == "Denied claims"


def test_editing_the_live_set_warns_and_is_recorded(client, clinic, alice):
    client.force_login(alice)
    rule = clinic["denied_rule"]
    page = client.get(reverse("admin:routing_classificationrule_change", args=[rule.pk]))
    assert "This is the LIVE rule set" in page.content.decode()
    services.rule_set_record_edit(rule_set_id=clinic["rules"].pk, actor=alice)
    assert kinds(clinic["rules"]) == [("edited_live", "alice")]


def test_activating_directly_is_refused_while_a_set_is_live(client, clinic, draft, alice):
    client.force_login(alice)
    response = client.post(
        reverse("admin:routing_ruleset_changelist"),
        {"action": "activate", ACTION_CHECKBOX_NAME: [draft.pk]},
        follow=True,
    )
    assert "goes live by publication" in response.content.decode()
    assert status(draft) == "draft"


def test_only_managers_publish_or_roll_back(client, clinic, draft):
    supervisor = UserFactory(username="sam", roles=["Supervisor"], is_staff=True)
    client.force_login(supervisor)
    for name in ("admin:routing_ruleset_publish", "admin:routing_ruleset_rollback"):
        assert client.get(reverse(name, args=[draft.pk])).status_code == 403
    response = client.post(
        reverse("admin:routing_ruleset_publish", args=[draft.pk]), {"request": "1"}
    )
    assert response.status_code == 403
    assert status(draft) == "draft"
