import pytest
from auditlog.models import LogEntry
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.tests.factories import UserFactory
from queues.tests.factories import QueueFactory
from routing import services
from routing.models import ClassificationRule, RoutingRule, RuleSet
from routing.tests.factories import (
    ClassificationRuleFactory,
    RoutingRuleFactory,
    RuleSetFactory,
)
from routing.tests.test_preview import build_clinic, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


@pytest.fixture
def manager(client):
    user = UserFactory(username="maria", roles=["Manager"], is_staff=True)
    client.force_login(user)
    return user


def classification_post(rule: ClassificationRule | None = None, **changes) -> dict:
    data = {
        "rule_set": rule.rule_set_id if rule else "",
        "name": rule.name if rule else "",
        "order": rule.order if rule else 100,
        "mode": rule.mode if rule else "active",
        "rollout_percent": rule.rollout_percent if rule else 100,
        "channels": list(rule.channels) if rule else [],
        "phrases": rule.phrases if rule else "",
        "phrase_match": rule.phrase_match if rule else "any",
        "regex": rule.regex if rule else "",
        "request_types": ",".join(rule.request_types) if rule else "",
        "source_systems": ",".join(rule.source_systems) if rule else "",
        "set_task_type": (rule.set_task_type_id or "") if rule else "",
        "set_priority": (rule.set_priority or "") if rule else "",
        "min_priority": (rule.min_priority or "") if rule else "",
        "add_tags": ",".join(rule.add_tags) if rule else "",
        "notes": "",
    }
    if rule and rule.stop:
        data["stop"] = "on"
    data.update(changes)
    return data


def routing_post(rule: RoutingRule, **changes) -> dict:
    data = {
        "rule_set": rule.rule_set_id,
        "name": rule.name,
        "order": rule.order,
        "mode": rule.mode,
        "rollout_percent": rule.rollout_percent,
        "task_types": [t.pk for t in rule.task_types.all()],
        "priority_min": rule.priority_min,
        "priority_max": rule.priority_max,
        "tags_any": ",".join(rule.tags_any),
        "channels": list(rule.channels),
        "sites": [s.pk for s in rule.sites.all()],
        "business_hours": rule.business_hours,
        "weekdays": list(rule.weekdays),
        "time_from": rule.time_from or "",
        "time_to": rule.time_to or "",
        "target_queue": rule.target_queue_id,
        "required_skill": rule.required_skill_id or "",
        "min_skill_level": rule.min_skill_level,
        "priority_override": rule.priority_override or "",
        "notes": rule.notes,
    }
    data.update(changes)
    return data


def revision(rule_set: RuleSet) -> int:
    return RuleSet.objects.values_list("revision", flat=True).get(pk=rule_set.pk)


# --- Pages -------------------------------------------------------------------------------


def test_manager_opens_every_routing_admin_page(client, manager, clinic):
    rules = clinic["rules"]
    urls = [
        reverse("admin:routing_ruleset_changelist"),
        reverse("admin:routing_ruleset_add"),
        reverse("admin:routing_ruleset_change", args=[rules.pk]),
        reverse("admin:routing_classificationrule_changelist"),
        reverse("admin:routing_classificationrule_add"),
        reverse("admin:routing_classificationrule_change", args=[clinic["denied_rule"].pk]),
        reverse("admin:routing_routingrule_changelist"),
        reverse("admin:routing_routingrule_add"),
        reverse("admin:routing_routingrule_change", args=[clinic["appeals_rule"].pk]),
        reverse("admin:routing_ruleset_try", args=[rules.pk]),
        reverse("admin:app_list", args=["routing"]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url


def test_rule_set_list_counts_its_rules_and_links_to_try(client, manager, clinic):
    response = client.get(reverse("admin:routing_ruleset_changelist"))
    content = response.content.decode()
    assert "Clinic rules" in content
    assert '<td class="field-classification_count">3</td>' in content
    assert '<td class="field-routing_count">1</td>' in content
    assert reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk]) in content


def test_rule_lists_summarise_conditions_and_actions(client, manager, clinic):
    content = client.get(reverse("admin:routing_classificationrule_changelist")).content.decode()
    assert "any of “claim denied”, “denial”" in content
    assert "type Claim denial" in content
    content = client.get(reverse("admin:routing_routingrule_changelist")).content.decode()
    assert "Claim denial; tagged appeal" in content
    assert "to Appeals; needs Payer appeals ≥ 3" in content


def test_rule_set_change_page_shows_problems_and_links(client, manager, clinic):
    url = reverse("admin:routing_ruleset_change", args=[clinic["rules"].pk])
    content = client.get(url).content.decode()
    assert "None: every rule is valid." in content
    assert reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk]) in content
    assert f"{reverse('admin:routing_routingrule_add')}?rule_set={clinic['rules'].pk}" in content


def test_rule_lists_do_not_query_per_row(client, manager, clinic):
    urls = [
        reverse("admin:routing_routingrule_changelist"),
        reverse("admin:routing_classificationrule_changelist"),
        reverse("admin:routing_ruleset_changelist"),
        reverse("admin:routing_ruleset_change", args=[clinic["rules"].pk]),
    ]

    def query_counts():
        counts = []
        for url in urls:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.append(len(queries))
        return counts

    query_counts()  # warm the session and content-type caches
    few = query_counts()
    for n in range(10):
        RoutingRuleFactory(
            rule_set=clinic["rules"],
            task_types=[clinic["denial"], clinic["records_request"]],
            sites=[clinic["site"]],
            target_queue=clinic["billing_queue"],
            required_skill=clinic["appeals"],
            name=f"Extra {n}",
        )
        ClassificationRuleFactory(
            rule_set=clinic["rules"], phrases=f"word{n}", set_task_type=clinic["denial"]
        )
    assert query_counts() == few
    assert few[0] <= 15


# --- Validation with the engine's functions ----------------------------------------------


def test_bad_regex_is_an_error_on_the_regex_field_and_nothing_is_saved(client, manager, clinic):
    before = ClassificationRule.objects.count()
    data = classification_post(
        rule_set=clinic["rules"].pk,
        name="Broken pattern",
        regex="claim (denied",
        set_task_type=clinic["denial"].pk,
    )
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "regex" in errors
    assert "position" in errors["regex"][0]
    assert ClassificationRule.objects.count() == before


def test_pattern_that_matches_everything_is_refused(client, manager, clinic):
    data = classification_post(
        rule_set=clinic["rules"].pk, name="All", regex=".*", set_task_type=clinic["denial"].pk
    )
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    assert "every message" in response.context["adminform"].form.errors["regex"][0]


def test_rule_without_any_condition_is_refused(client, manager, clinic):
    before = ClassificationRule.objects.count()
    data = classification_post(
        rule_set=clinic["rules"].pk, name="Nothing", set_task_type=clinic["denial"].pk
    )
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    form = response.context["adminform"].form
    assert "Add at least one condition" in " ".join(form.non_field_errors())
    assert ClassificationRule.objects.count() == before


def test_phrase_without_words_is_an_error_on_phrases(client, manager, clinic):
    data = classification_post(
        rule_set=clinic["rules"].pk,
        name="Punctuation",
        phrases="refund\n!!!",
        set_task_type=clinic["denial"].pk,
    )
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    assert "can never match" in response.context["adminform"].form.errors["phrases"][0]


def test_rule_that_does_nothing_is_refused(client, manager, clinic):
    data = classification_post(rule_set=clinic["rules"].pk, name="Idle", phrases="refund")
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    assert "does nothing" in " ".join(response.context["adminform"].form.non_field_errors())


def test_empty_priority_range_is_an_error_on_the_routing_rule(client, manager, clinic):
    rule = clinic["appeals_rule"]
    url = reverse("admin:routing_routingrule_change", args=[rule.pk])
    response = client.post(url, routing_post(rule, priority_min=4, priority_max=2))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "empty range" in form.errors["priority_max"][0]
    assert not form.non_field_errors()  # the database constraint does not repeat it
    rule.refresh_from_db()
    assert (rule.priority_min, rule.priority_max) == (1, 4)


def test_time_window_needs_both_ends(client, manager, clinic):
    rule = clinic["appeals_rule"]
    url = reverse("admin:routing_routingrule_change", args=[rule.pk])
    response = client.post(url, routing_post(rule, time_from="08:00"))
    assert "Set an end time too" in response.context["adminform"].form.errors["time_to"][0]


def test_valid_new_rule_is_saved(client, manager, clinic):
    data = classification_post(
        rule_set=clinic["rules"].pk,
        name="Refunds",
        phrases="refund\nmoney back",
        channels=["portal", "email"],
        set_task_type=clinic["denial"].pk,
        set_priority=2,
        add_tags="refund",
    )
    response = client.post(reverse("admin:routing_classificationrule_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = ClassificationRule.objects.get(name="Refunds")
    assert rule.phrase_list == ["refund", "money back"]
    assert rule.channels == ["portal", "email"]
    assert rule.add_tags == ["refund"]


def test_rule_set_red_flag_phrase_without_words_is_refused(client, manager, clinic):
    rules = clinic["rules"]
    url = reverse("admin:routing_ruleset_change", args=[rules.pk])
    data = rule_set_post(rules, red_flag_phrases="chest pain\n???")
    response = client.post(url, data)
    assert "can never match" in response.context["adminform"].form.errors["red_flag_phrases"][0]


# --- Revision and caches -----------------------------------------------------------------


def rule_set_post(rule_set: RuleSet, **changes) -> dict:
    data = {
        "name": rule_set.name,
        "description": rule_set.description,
        "based_on": rule_set.based_on_id or "",
        "review_queue": rule_set.review_queue_id,
        "red_flag_phrases": rule_set.red_flag_phrases,
        "red_flag_task_type": rule_set.red_flag_task_type_id,
        "red_flag_queue": rule_set.red_flag_queue_id,
    }
    for prefix, rules in (
        ("classification_rules", rule_set.classification_rules.order_by("order", "id")),
        ("routing_rules", rule_set.routing_rules.order_by("order", "id")),
    ):
        rules = list(rules)
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": len(rules),
                f"{prefix}-INITIAL_FORMS": len(rules),
                f"{prefix}-MIN_NUM_FORMS": 0,
                f"{prefix}-MAX_NUM_FORMS": 1000,
            }
        )
        for i, rule in enumerate(rules):
            data.update(
                {
                    f"{prefix}-{i}-id": rule.pk,
                    f"{prefix}-{i}-rule_set": rule_set.pk,
                    f"{prefix}-{i}-order": rule.order,
                    f"{prefix}-{i}-name": rule.name,
                    f"{prefix}-{i}-mode": rule.mode,
                    f"{prefix}-{i}-rollout_percent": rule.rollout_percent,
                }
            )
    data.update(changes)
    return data


def test_saving_a_rule_in_the_admin_reaches_the_next_routed_task(client, manager, clinic):
    first = services.task_submit(
        actor="client:test", channel="portal", subject="Claim denied", body="please appeal"
    )
    assert first.queue == clinic["appeals_queue"]  # and the routing snapshot is now cached
    rule = clinic["appeals_rule"]
    before = revision(clinic["rules"])
    url = reverse("admin:routing_routingrule_change", args=[rule.pk])
    response = client.post(
        url, routing_post(rule, target_queue=clinic["billing_queue"].pk, required_skill="")
    )
    assert response.status_code == 302
    assert revision(clinic["rules"]) == before + 1
    second = services.task_submit(
        actor="client:test", channel="portal", subject="Claim denied", body="please appeal"
    )
    assert second.queue == clinic["billing_queue"]
    assert second.routed_by_rule_id == rule.pk
    assert second.assignee == clinic["ana"].user


def test_reordering_in_the_list_bumps_the_revision(client, manager, clinic):
    rule = clinic["appeal_tag_rule"]
    before = revision(clinic["rules"])
    data = {
        "form-TOTAL_FORMS": 1,
        "form-INITIAL_FORMS": 1,
        "form-MIN_NUM_FORMS": 0,
        "form-MAX_NUM_FORMS": 1000,
        "form-0-id": rule.pk,
        "form-0-order": 1,
        "form-0-mode": "shadow",
        "_save": "Save",
    }
    response = client.post(reverse("admin:routing_classificationrule_changelist"), data)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.order, rule.mode) == (1, "shadow")
    assert rule.phrase_list == ["appeal"]  # untouched fields stay
    assert revision(clinic["rules"]) == before + 1


def test_deleting_a_rule_bumps_the_revision(client, manager, clinic):
    rule = clinic["appeal_tag_rule"]
    before = revision(clinic["rules"])
    url = reverse("admin:routing_classificationrule_delete", args=[rule.pk])
    response = client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    assert revision(clinic["rules"]) == before + 1


def test_editing_rules_inline_on_the_rule_set_bumps_the_revision(client, manager, clinic):
    rules = clinic["rules"]
    before = revision(rules)
    data = rule_set_post(
        rules, **{"routing_rules-0-mode": "off", "red_flag_phrases": "chest pain\nstroke"}
    )
    response = client.post(reverse("admin:routing_ruleset_change", args=[rules.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    clinic["appeals_rule"].refresh_from_db()
    assert clinic["appeals_rule"].mode == "off"
    rules.refresh_from_db()
    assert rules.red_flag_phrase_list == ["chest pain", "stroke"]
    assert rules.status == RuleSet.Status.ACTIVE
    assert rules.revision == before + 1


def test_inline_rollout_out_of_range_is_refused(client, manager, clinic):
    rules = clinic["rules"]
    data = rule_set_post(rules, **{"classification_rules-0-rollout_percent": 150})
    response = client.post(reverse("admin:routing_ruleset_change", args=[rules.pk]), data)
    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][0].formset.errors[0]["rollout_percent"]


def test_rule_changes_are_audited_with_the_manager(client, manager, clinic):
    rule = clinic["denied_rule"]
    url = reverse("admin:routing_classificationrule_change", args=[rule.pk])
    client.post(url, classification_post(rule, phrases="claim denied\ndenial\nrejected"))
    entry = LogEntry.objects.get_for_object(rule).latest("timestamp")
    assert entry.actor == manager
    assert "phrases" in entry.changes_dict


# --- Activate and copy -------------------------------------------------------------------


def draft_of(clinic, **kwargs) -> RuleSet:
    rules = clinic["rules"]
    return RuleSetFactory(
        status=RuleSet.Status.DRAFT,
        review_queue=rules.review_queue,
        red_flag_queue=rules.red_flag_queue,
        red_flag_task_type=rules.red_flag_task_type,
        **kwargs,
    )


def run_action(client, action: str, *rule_sets: RuleSet):
    return client.post(
        reverse("admin:routing_ruleset_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in rule_sets]},
        follow=True,
    )


def test_activate_makes_the_first_set_live_when_none_is(client, manager, clinic):
    # Once a set is live, new versions go live by publication with four eyes
    # (test_publish.py); Activate only starts routing where no set is live.
    RuleSet.objects.filter(pk=clinic["rules"].pk).update(status=RuleSet.Status.RETIRED)
    draft = draft_of(clinic)
    response = run_action(client, "activate", draft)
    assert response.status_code == 200
    assert "is now active" in response.content.decode()
    assert list(RuleSet.objects.filter(status="active")) == [draft]
    draft.refresh_from_db()
    assert draft.activated_at is not None
    # and routing follows it at once
    task = services.task_submit(actor="client:test", channel="portal", subject="Claim denied")
    assert task.rule_set_version == draft.version


def test_activate_needs_exactly_one_set(client, manager, clinic):
    response = run_action(client, "activate", draft_of(clinic), draft_of(clinic))
    assert "Select exactly one rule set" in response.content.decode()
    assert list(RuleSet.objects.filter(status="active")) == [clinic["rules"]]


def test_a_set_whose_review_queue_is_closed_cannot_be_activated(client, manager, clinic):
    closed = QueueFactory(name="Old review", kind="review", is_active=False)
    RuleSet.objects.filter(pk=clinic["rules"].pk).update(status=RuleSet.Status.RETIRED)
    draft = draft_of(clinic)
    RuleSet.objects.filter(pk=draft.pk).update(review_queue=closed)
    response = run_action(client, "activate", draft)
    assert "cannot route tasks" in response.content.decode()
    assert not RuleSet.objects.filter(status="active").exists()


def test_status_is_not_editable_on_the_form(client, manager, clinic):
    draft = draft_of(clinic)
    data = rule_set_post(draft, status="active", name="Renamed")
    response = client.post(reverse("admin:routing_ruleset_change", args=[draft.pk]), data)
    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.name, draft.status) == ("Renamed", RuleSet.Status.DRAFT)


def test_copy_to_draft_copies_every_rule(client, manager, clinic):
    rules = clinic["rules"]
    RoutingRuleFactory(
        rule_set=rules,
        name="Northgate denials",
        task_types=[clinic["denial"]],
        sites=[clinic["site"]],
        target_queue=clinic["billing_queue"],
    )
    response = run_action(client, "copy_to_draft", rules)
    assert "Copied" in response.content.decode()
    draft = RuleSet.objects.get(based_on=rules)
    assert draft.status == RuleSet.Status.DRAFT
    assert draft.version == RuleSet.objects.exclude(pk=draft.pk).order_by("-version")[0].version + 1
    assert draft.red_flag_phrases == rules.red_flag_phrases

    def shape(rule_set):
        return (
            [
                (r.name, r.order, r.phrases, r.set_task_type_id, list(r.add_tags))
                for r in rule_set.classification_rules.order_by("order", "id")
            ],
            [
                (
                    r.name,
                    r.target_queue_id,
                    sorted(t.pk for t in r.task_types.all()),
                    sorted(s.pk for s in r.sites.all()),
                    r.required_skill_id,
                )
                for r in rule_set.routing_rules.order_by("order", "id")
            ],
        )

    assert shape(draft) == shape(rules)
    assert not set(draft.classification_rules.values_list("pk", flat=True)) & set(
        rules.classification_rules.values_list("pk", flat=True)
    )
    assert list(RuleSet.objects.filter(status="active")) == [rules]


def test_active_set_cannot_be_deleted(client, clinic):
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    url = reverse("admin:routing_ruleset_delete", args=[clinic["rules"].pk])
    assert client.get(url).status_code == 403


# --- Try the rules -----------------------------------------------------------------------


def test_try_page_shows_route_and_why_each_person_was_passed_over(client, manager, clinic):
    before = row_counts()
    url = reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk])
    response = client.post(
        url,
        {
            "channel": "portal",
            "subject": "Claim denied",
            "body": "We would like to appeal.",
            "request_type": "",
            "site": clinic["site"].pk,
            "patient_mrn": "MRN-5",
        },
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert "Appeals (rule &#x27;Appeals need the skill&#x27;)" in content
    assert "Appeals need the skill" in content and "Denied claims" in content
    assert "needs payer-appeals level 3, has level 1" in content  # Dan
    assert "needs payer-appeals level 3, has not held" in content  # Ana
    assert "away: availability is away" in content  # Carla
    assert "nobody eligible" in content
    assert row_counts() == before


def test_try_page_shows_the_chosen_person(client, manager, clinic):
    url = reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk])
    response = client.post(url, {"channel": "email", "subject": "Claim denied"})
    content = response.content.decode()
    assert "Ana Agent <strong>(chosen)</strong>" in content
    assert "Type claim_denial, priority P3." in content


def test_try_page_form_errors(client, manager, clinic):
    url = reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk])
    response = client.post(url, {"channel": "pigeon", "subject": ""})
    form = response.context["form"]
    assert set(form.errors) == {"channel", "subject"}
    assert response.context["result"] is None


def test_try_active_goes_to_the_active_set(client, manager, clinic):
    response = client.get(reverse("admin:routing_ruleset_try_active"))
    assert response.status_code == 302
    assert response.url == reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk])


def test_agent_cannot_open_the_try_page(client, clinic):
    url = reverse("admin:routing_ruleset_try", args=[clinic["rules"].pk])
    client.force_login(UserFactory(username="agnes", roles=["Agent"]))
    response = client.get(url)
    assert response.status_code == 302
    assert reverse("admin:login") in response.url
    client.force_login(UserFactory(username="staff-agent", roles=["Agent"], is_staff=True))
    assert client.get(url).status_code == 403
    assert client.post(url, {"channel": "portal", "subject": "x"}).status_code == 403
    assert client.get(reverse("admin:routing_ruleset_try_active")).status_code == 403


def test_a_rule_broken_since_does_not_block_reordering_the_others(client, manager, clinic):
    clinic["records_request"].is_active = False
    clinic["records_request"].save()
    records_rule = ClassificationRule.objects.get(name="Records")
    rule = clinic["appeal_tag_rule"]
    data = {
        "form-TOTAL_FORMS": 2,
        "form-INITIAL_FORMS": 2,
        "form-MIN_NUM_FORMS": 0,
        "form-MAX_NUM_FORMS": 1000,
        "form-0-id": rule.pk,
        "form-0-order": 5,
        "form-0-mode": "active",
        "form-1-id": records_rule.pk,
        "form-1-order": records_rule.order,
        "form-1-mode": records_rule.mode,
        "_save": "Save",
    }
    response = client.post(reverse("admin:routing_classificationrule_changelist"), data)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.order == 5
    # Opened on its own, the broken rule says what is wrong.
    url = reverse("admin:routing_classificationrule_change", args=[records_rule.pk])
    response = client.post(url, classification_post(records_rule, name="Records!"))
    assert response.status_code == 200
    assert "set_task_type" in response.context["adminform"].form.errors
