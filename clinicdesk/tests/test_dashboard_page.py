"""The dashboard and rule-health pages: who may see them, what each person's numbers count,
the CSV exports, and a query count that does not grow with the data."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import StaffProfile
from clinicdesk.tests import test_dashboard_support as support
from clinicdesk.tests.test_dashboard_support import event
from queues.models import Task
from routing.tests.factories import RoutingRuleFactory

pytestmark = pytest.mark.django_db
clinic = support.clinic
URL = reverse("dashboard:index")


def _work(clinic, queue, n: int, *, reroutes: int = 0) -> list[Task]:
    """`n` tasks created two days ago in `queue`, picked up after 10 minutes and resolved;
    the first `reroutes` of them moved once by a person."""
    created = timezone.now() - timedelta(days=2)
    tasks = []
    for i in range(n):
        task = clinic.task(
            queue,
            created=created,
            status=Task.Status.RESOLVED,
            first_assigned_at=created + timedelta(minutes=10),
            resolved_at=created + timedelta(hours=1),
            reroute_count=1 if i < reroutes else 0,
        )
        event(
            task, "held", created + timedelta(minutes=20), reason="Waiting for the payer's answer"
        )
        event(task, "resumed", created + timedelta(minutes=50))
        tasks.append(task)
    return tasks


def _rates(response) -> dict[str, list[str]]:
    table = response.context["tables"]["rates"]
    return {row[0]: row for row in table.rows}


def test_agent_is_refused(client, clinic):
    client.force_login(clinic.agent)
    assert client.get(URL).status_code == 403
    assert client.get(reverse("dashboard:rules")).status_code == 403
    assert client.get(reverse("dashboard:export", args=["load"])).status_code == 403


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_supervisor_counts_only_their_departments(client, clinic):
    _work(clinic, clinic.claims, 4, reroutes=1)
    _work(clinic, clinic.release, 6, reroutes=6)  # another department: never counted
    client.force_login(clinic.supervisor)

    response = client.get(URL)

    assert response.status_code == 200
    assert _rates(response)["Reroute rate"][1:4] == [4, 1, 25.0]
    assert list(response.context["form"].fields["department"].queryset) == [clinic.billing]
    people = [row[1] for row in response.context["tables"]["load"].rows]
    assert people == ["Alice Agent", "Sam Supervisor"]
    backlog_queues = [row[0] for row in response.context["tables"]["backlog"].rows]
    assert "Records release" not in backlog_queues


def test_supervisor_cannot_choose_another_department(client, clinic):
    _work(clinic, clinic.claims, 2)
    _work(clinic, clinic.release, 3)
    client.force_login(clinic.supervisor)

    response = client.get(URL, {"department": clinic.records.pk})

    assert response.status_code == 200
    assert "department" in response.context["form"].errors
    assert _rates(response)["Reroute rate"][1] == 2


def test_manager_sees_every_department_and_may_narrow_to_one(client, clinic):
    _work(clinic, clinic.claims, 2)
    _work(clinic, clinic.release, 3)
    client.force_login(clinic.manager)

    assert _rates(client.get(URL))["Reroute rate"][1] == 5
    narrowed = client.get(URL, {"department": clinic.records.pk})
    assert _rates(narrowed)["Reroute rate"][1] == 3
    assert narrowed.context["tables"]["load"].rows == []


def test_compliance_reviewer_may_read_the_dashboard(client, clinic):
    client.force_login(clinic.auditor)
    assert client.get(URL).status_code == 200
    assert client.get(reverse("dashboard:rules")).status_code == 200


def test_period_presets_and_custom_range(client, clinic):
    old = clinic.task(created=timezone.now() - timedelta(days=10))
    client.force_login(clinic.manager)

    assert _rates(client.get(URL, {"period": "7"}))["Reroute rate"][1] == 0
    assert _rates(client.get(URL, {"period": "30"}))["Reroute rate"][1] == 1
    day = timezone.localtime(old.created_at).date()
    custom = client.get(URL, {"period": "custom", "start": day, "end": day})
    assert _rates(custom)["Reroute rate"][1] == 1
    assert custom.context["period_label"].startswith(f"{day:%d %b %Y}")


def test_custom_range_is_bounded(client, clinic):
    client.force_login(clinic.manager)
    today = timezone.localdate()

    backwards = client.get(URL, {"period": "custom", "start": today, "end": today - timedelta(1)})
    assert "The first day must come before the last day." in backwards.content.decode()
    too_long = client.get(
        URL, {"period": "custom", "start": today - timedelta(days=400), "end": today}
    )
    assert "Choose at most 366 days." in too_long.content.decode()
    future = client.get(URL, {"period": "custom", "start": today, "end": today + timedelta(3)})
    assert "The range cannot end after today." in future.content.decode()
    # An invalid range falls back to the last 30 days.
    assert too_long.context["period_label"] == "Last 30 days"


def test_page_shows_targets_charts_and_tables(client, clinic):
    _work(clinic, clinic.claims, 3)
    client.force_login(clinic.supervisor)

    html = client.get(URL).content.decode()

    for canvas in ("queue_age", "sla", "load", "day_load", "backlog", "demand_types", "holding"):
        assert f'data-chart="{canvas}"' in html
    assert 'id="dashboard-charts" type="application/json"' in html
    assert "Target &lt; 30 min" in html  # P1 queue age
    assert "Target &lt; 10% · 0 of 3" in html  # reroutes
    assert "Target &gt; 75% · 3 of 3" in html  # first-contact resolution
    assert "vendor/chartjs/chart.umd.min.js" in html
    assert "<script>" not in html  # no inline code: the data goes through json_script


def test_csv_export_of_a_table(client, clinic):
    _work(clinic, clinic.claims, 3)
    StaffProfile.objects.filter(user=clinic.agent).update(active_load=3)
    client.force_login(clinic.supervisor)

    response = client.get(reverse("dashboard:export", args=["load"]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="dashboard-load-' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["Department", "Person", "Availability", "Load", "Capacity", "Used %"],
        ["Billing", "Alice Agent", "available", "3", "4", "75.0"],
        ["Billing", "Sam Supervisor", "available", "0", "5", "0.0"],
    ]
    holding = client.get(reverse("dashboard:export", args=["holding"]))
    assert list(csv.reader(io.StringIO(holding.content.decode())))[1] == [
        "Waiting for the payer's answer",
        "3",
        "0",
        "30.0",
        "30.0",
        "1.5",
    ]
    assert client.get(reverse("dashboard:export", args=["nonsense"])).status_code == 404


def test_csv_export_of_rule_health_neutralises_formulas(client, clinic):
    rule = RoutingRuleFactory(name="=HYPERLINK(1)", target_queue=clinic.claims)
    task = clinic.task(created=timezone.now() - timedelta(days=1), routed_by_rule_id=rule.pk)
    event(
        task,
        "rerouted",
        timezone.now() - timedelta(hours=2),
        actor=clinic.supervisor,
        actor_label="sam",
        from_queue=clinic.claims,
        to_queue=clinic.statements,
    )
    client.force_login(clinic.supervisor)

    rows = list(
        csv.reader(
            io.StringIO(client.get(reverse("dashboard:export", args=["rules"])).content.decode())
        )
    )

    assert rows[1][:6] == [
        "'=HYPERLINK(1)",
        "routing",
        f"v{rule.rule_set.version}",
        "1",
        "1",
        "100.0",
    ]


def test_rule_health_page_shows_flagged_rules_first(client, clinic):
    rule = RoutingRuleFactory(name="Statements by keyword", target_queue=clinic.statements)
    created = timezone.now() - timedelta(days=1)
    for n in range(3):
        task = clinic.task(clinic.statements, created=created, routed_by_rule_id=rule.pk)
        if n == 0:
            event(
                task,
                "rerouted",
                created + timedelta(hours=1),
                actor=clinic.supervisor,
                actor_label="sam",
                from_queue=clinic.statements,
                to_queue=clinic.claims,
            )
    client.force_login(clinic.supervisor)

    response = client.get(reverse("dashboard:rules"))

    html = response.content.decode()
    assert "1 rule above the target" in html
    assert "1 of 3 tasks routed by &#x27;Statements by keyword&#x27; was moved to Claims" in html
    assert 'data-chart="rules"' in html


def _count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def _routed(clinic, rule, queue, count: int) -> None:
    """`count` tasks routed by `rule`, the first of them rerouted by a person."""
    for n, task in enumerate(_work(clinic, queue, count)):
        Task.objects.filter(pk=task.pk).update(routed_by_rule_id=rule.pk)
        if n == 0:
            event(
                task,
                "rerouted",
                task.created_at + timedelta(hours=1),
                actor=clinic.supervisor,
                actor_label="sam",
                from_queue=queue,
                to_queue=clinic.statements,
            )


@pytest.mark.parametrize("page", ["dashboard:index", "dashboard:rules"])
def test_query_count_does_not_grow_with_the_data(client, clinic, page):
    client.force_login(clinic.manager)
    url = reverse(page)
    rule = RoutingRuleFactory(name="Claims", target_queue=clinic.claims)
    _routed(clinic, rule, clinic.claims, 2)
    client.get(url)  # the first request after signing in also saves the session
    small = _count_queries(client, url)

    _routed(clinic, rule, clinic.claims, 12)
    _routed(clinic, RoutingRuleFactory(name="Records", rule_set=rule.rule_set), clinic.release, 5)
    large = _count_queries(client, url)

    assert small == large
    assert large == {"dashboard:index": 17, "dashboard:rules": 11}[page]
