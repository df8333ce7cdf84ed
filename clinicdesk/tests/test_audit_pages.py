"""The audit pages: compliance reads everything and changes nothing; other roles are refused;
a search needs a date range, pages newest first by keyset, and its export streams."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import timedelta

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.tests.factories import UserFactory
from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import audit_event_record, record_task_access
from queues.intake.store import integration_client_create
from queues.tests.test_task_page import build_clinic, page_text, submit
from routing.models import RoutingRule

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


def _dates(**extra) -> dict:
    today = timezone.localdate()
    return {"start": str(today - timedelta(days=1)), "end": str(today), **extra}


def _rows(response) -> list[str]:
    content = response.content.decode()
    return [
        row.split('"')[0]
        for row in content.split('data-entry="')[1:]  # "<source>-<id>"
    ]


@pytest.fixture
def carol(client, clinic):
    client.force_login(clinic["carol"])
    return clinic["carol"]


# --- Who may open the pages ------------------------------------------------------------------


def _pages(task, rule) -> list[str]:
    return [
        reverse("audit:search"),
        reverse("audit:search") + "?" + "&".join(f"{k}={v}" for k, v in _dates().items()),
        reverse("audit:export") + "?" + "&".join(f"{k}={v}" for k, v in _dates().items()),
        reverse("audit:task", args=[task.pk]),
        reverse("audit:person", args=[task.assignee_id or 1]),
        reverse("audit:rule", args=["routing", rule.pk]),
        reverse("audit:object", args=["routing.routingrule", rule.pk]),
    ]


def test_compliance_reads_every_audit_page(client, clinic, carol):
    task = submit("Claim denied, appeal")
    rule = RoutingRule.objects.get()
    for url in _pages(task, rule):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("username", ["alice", "sam", "frank"])
def test_agents_and_supervisors_cannot_open_the_audit(client, clinic, username):
    task = submit("Claim denied, appeal")
    rule = RoutingRule.objects.get()
    client.force_login(clinic[username])
    for url in _pages(task, rule):
        assert client.get(url).status_code == 403, url


def test_anonymous_visitors_are_sent_to_sign_in(client, clinic):
    response = client.get(reverse("audit:search"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts:login"))


def test_every_post_is_refused_even_to_compliance(client, clinic, carol):
    task = submit("Claim denied, appeal")
    rule = RoutingRule.objects.get()
    before = LogEntry.objects.count()
    for url in _pages(task, rule):
        assert client.post(url, _dates()).status_code == 403, url
    for method in (client.put, client.patch, client.delete):
        assert method(reverse("audit:task", args=[task.pk])).status_code == 403
    assert LogEntry.objects.count() == before  # nothing read, nothing changed


# --- The search ------------------------------------------------------------------------------


def test_a_search_without_a_date_range_is_refused_with_the_field_named(client, carol):
    response = client.get(reverse("audit:search"), {"task": "12"})
    text = page_text(response)
    assert "Enter the first day to search (a date range is required)." in text
    assert "Enter the last day to search (a date range is required)." in text
    assert 'data-entry="' not in response.content.decode()

    export = client.get(reverse("audit:export"), {"task": "12"})
    assert export.status_code == 400
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.EXPORT).exists()


def test_a_range_longer_than_a_year_is_refused(client, carol):
    response = client.get(reverse("audit:search"), {"start": "2020-01-01", "end": "2022-01-01"})
    assert "Search at most 366 days at a time" in page_text(response)


def test_searching_by_task_shows_its_events_changes_and_reads_newest_first(client, clinic, carol):
    task = submit("Claim denied, appeal")
    other = submit("Statement question")
    record_task_access(clinic["alice"], task, via="page")

    response = client.get(reverse("audit:search"), _dates(task=task.pk))

    rows = _rows(response)
    events = list(task.events.order_by("-created_at", "-id").values_list("id", flat=True))
    assert rows[0].startswith("access-")
    assert [r for r in rows if r.startswith("event-")] == [f"event-{i}" for i in events]
    assert not any(str(e) in rows for e in other.events.values_list("id", flat=True))
    text = page_text(response)
    assert "Jordan" not in text and "Rivera" not in text  # names only on the history page
    assert f"Task #{task.pk}" in text


def test_searching_by_mrn_person_client_rule_and_kind(client, clinic, carol):
    ehr, _ = integration_client_create(name="ehr", channels=["api"])
    mine = submit("Claim denied, appeal", patient_mrn="MRN-777")
    submit("Statement question", patient_mrn="MRN-888")
    record_task_access(clinic["alice"], mine, via="page")
    record_task_access(ehr, mine, via="api")
    audit_event_record(kind=AuditEvent.Kind.LOGIN, actor=clinic["alice"])
    rule = RoutingRule.objects.get()

    def search(**filters):
        return _rows(client.get(reverse("audit:search"), _dates(**filters)))

    by_mrn = search(mrn="MRN-777")
    assert by_mrn and set(by_mrn) == set(search(task=mine.pk))
    assert search(person="alice", kind="access") == [
        f"access-{LogEntry.objects.filter(actor=clinic['alice']).get().pk}"
    ]
    assert search(person="alice", kind="security:login") == [
        f"security-{AuditEvent.objects.get(kind='login', user=clinic['alice']).pk}"
    ]
    assert search(client="client:ehr") == [f"access-{LogEntry.objects.get(actor=ehr.user).pk}"]
    routed = search(rule=f"routing:{rule.pk}", kind="event:routed")
    assert routed == [f"event-{mine.events.get(kind='routed', rule_id=rule.pk).pk}"]
    assert search(kind="change:delete") == []


def test_unknown_person_client_or_rule_are_form_errors(client, carol):
    response = client.get(
        reverse("audit:search"), _dates(person="zed", client="nobody", rule="rule 5")
    )
    text = page_text(response)
    assert "Nobody has the username “zed”." in text
    assert "No integration client is called “nobody”." in text
    assert "Write the rule as routing:<id> or classification:<id>" in text


def test_pages_follow_each_other_by_keyset_without_gaps_or_repeats(client, clinic, carol):
    task = submit("Claim denied, appeal")
    now = timezone.now()
    with connection.cursor() as cursor:
        # 120 reads, several sharing a timestamp, so that the keyset must break ties.
        cursor.execute(
            "INSERT INTO auditlog_logentry (content_type_id, object_pk, object_id, object_repr,"
            " action, changes_text, actor_id, timestamp, additional_data) "
            "SELECT ct.id, %(task)s, %(task)s, 'Task', 3, '', %(user)s,"
            " %(now)s - (g / 3) * interval '1 second', '{\"via\": \"page\"}'"
            " FROM generate_series(1, 120) g, django_content_type ct"
            " WHERE ct.app_label = 'queues' AND ct.model = 'task'",
            {"task": task.pk, "user": clinic["alice"].pk, "now": now},
        )
    seen: list[str] = []
    url = (
        reverse("audit:search")
        + "?"
        + "&".join(f"{k}={v}" for k, v in _dates(task=task.pk, kind="access").items())
    )
    while url:
        response = client.get(url)
        seen += _rows(response)
        next_url = response.context["next_url"]
        url = reverse("audit:search") + next_url if next_url else ""
    expected = list(
        LogEntry.objects.filter(action=3, object_id=task.pk)
        .order_by("-timestamp", "-id")
        .values_list("id", flat=True)
    )
    assert seen == [f"access-{i}" for i in expected]
    assert len(seen) == 120


@pytest.mark.parametrize("reads", [5, 60])
def test_the_audit_list_takes_the_same_queries_whatever_it_holds(
    client, clinic, carol, django_assert_num_queries, reads
):
    task = submit("Claim denied, appeal")
    for _ in range(reads):
        record_task_access(clinic["alice"], task, via="page")
    url = reverse("audit:search")
    # session, user, permissions (the user's and their groups'), the person filter's user,
    # the page (one statement); then the session's activity time (3)
    with django_assert_num_queries(9):
        response = client.get(url, _dates(person="alice"))
    assert len(_rows(response)) == min(reads, 50)


# --- Histories -------------------------------------------------------------------------------


def test_a_tasks_history_shows_everything_and_is_itself_a_read(client, clinic, carol):
    task = submit("Claim denied, appeal")
    record_task_access(clinic["alice"], task, via="page")

    response = client.get(reverse("audit:task", args=[task.pk]))

    text = page_text(response)
    assert "Jordan M. Rivera" in text  # the one page that names the patient
    assert "Routed to" in text or "routed" in text.lower()
    assert "Read on the Task page" in text
    reads = LogEntry.objects.filter(action=3, object_id=task.pk)
    assert reads.filter(actor=carol, additional_data__via="audit").count() == 1


def test_a_rules_history_shows_its_versions_and_the_tasks_it_routed(client, clinic, carol):
    rule = RoutingRule.objects.get()
    manager = UserFactory(username="robert", roles=["Manager"], is_staff=True)
    with set_actor(manager):
        rule.name = "Appeals need the appeals skill"
        rule.save()
    task = submit("Claim denied, appeal")

    response = client.get(reverse("audit:rule", args=["routing", rule.pk]))

    text = page_text(response)
    assert "Changed by" in text and "robert" in text
    assert "Appeals need the skill → Appeals need the appeals skill" in text
    assert f"Task #{task.pk}" in text


# --- Export ----------------------------------------------------------------------------------


def test_the_export_is_csv_of_the_search_and_is_itself_recorded(client, clinic, carol):
    task = submit("Claim denied, appeal")
    record_task_access(clinic["alice"], task, via="page")

    response = client.get(reverse("audit:export"), _dates(task=task.pk))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["time (UTC)", "record", "action"]
    # the timeline, alice's read, and the export's own read, recorded before it ran
    assert len(rows) - 1 == task.events.count() + 2
    assert "Jordan" not in str(rows)
    export = AuditEvent.objects.get(kind=AuditEvent.Kind.EXPORT)
    assert export.user == carol
    assert export.detail["filters"]["task"] == task.pk
    assert LogEntry.objects.filter(actor=carol, additional_data__via="export").count() == 1


def test_exporting_100000_entries_streams_in_bounded_memory(client, clinic, carol):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO clinicdesk_auditevent (at, kind, actor_label, method, path, detail)"
            " SELECT now() - g * interval '100 milliseconds', 'denied', 'mallory', 'GET',"
            " '/tasks/' || g || '/', '{}' FROM generate_series(1, 100000) g"
        )
    response = client.get(reverse("audit:export"), _dates(kind="security:denied"))
    assert response.streaming

    tracemalloc.start()
    try:
        rows = 0
        for chunk in response.streaming_content:
            rows += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert rows == 100_001  # the header and every entry
    # 100,000 rows of CSV are ~9 MB; a chunk of 2,000 rows is well under this.
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
