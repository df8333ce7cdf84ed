"""What is recorded beyond the timeline: reads of a task, sign-ins and sign-outs, failed
sign-ins, idle logoffs and refused requests; and that every change carries its actor."""

from __future__ import annotations

import time

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from accounts.tests.factories import PASSWORD, UserFactory
from clinicdesk.audit.models import AuditEvent
from clinicdesk.audit.records import audit_actor, record_tasks_access
from queues import services as queues_services
from queues.intake.store import integration_client_create
from queues.models import Task, TaskEvent
from queues.tests.factories import TaskTypeFactory
from queues.tests.test_task_page import build_clinic, submit
from routing import services as routing_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    return build_clinic()


def _reads(task: Task) -> list[tuple[str, str]]:
    return [
        (entry.actor.username if entry.actor else "", entry.additional_data["via"])
        for entry in LogEntry.objects.filter(
            action=LogEntry.Action.ACCESS, object_id=task.pk
        ).order_by("id")
    ]


def test_opening_a_task_page_records_who_read_it(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["alice"])

    client.get(reverse("queues:task", args=[task.pk]))
    client.get(reverse("queues:task", args=[task.pk]))

    assert _reads(task) == [("alice", "page"), ("alice", "page")]
    entry = LogEntry.objects.filter(action=LogEntry.Action.ACCESS).last()
    assert entry.object_repr == f"Task #{task.pk}"  # no subject, no patient
    assert entry.remote_addr == "127.0.0.1"


def test_a_refused_task_page_records_no_read_but_a_denial(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["nora"])  # triage: not her department

    assert client.get(reverse("queues:task", args=[task.pk])).status_code == 404

    assert _reads(task) == []
    denial = AuditEvent.objects.get(kind=AuditEvent.Kind.NOT_FOUND)
    assert (denial.user, denial.path, denial.status_code) == (
        clinic["nora"],
        f"/tasks/{task.pk}/",
        404,
    )


def test_the_timeline_poll_is_not_a_new_read(client, clinic):
    task = submit("Claim denied for March visit")
    client.force_login(clinic["alice"])

    client.get(reverse("queues:task_timeline", args=[task.pk]), HTTP_HX_REQUEST="true")

    assert _reads(task) == []


def test_an_integration_clients_read_names_the_client(clinic):
    client, _ = integration_client_create(name="ehr", channels=["api"])
    task = submit("Records request")

    record_tasks_access(client, [task.pk, task.pk], via="api")

    (entry,) = LogEntry.objects.filter(action=LogEntry.Action.ACCESS)
    assert entry.actor == client.user
    assert entry.additional_data == {"via": "api", "actor": "client:ehr"}


def test_sign_in_sign_out_and_a_failed_sign_in_are_recorded(client):
    UserFactory(username="dana")
    login = reverse("accounts:login")

    client.post(login, {"username": "dana", "password": "not-her-password"})
    client.post(login, {"username": "dana", "password": PASSWORD})
    client.post(reverse("accounts:logout"))

    events = list(AuditEvent.objects.order_by("id").values_list("kind", "actor_label", "ip"))
    assert events == [
        ("login_failed", "dana", "127.0.0.1"),
        ("login", "dana", "127.0.0.1"),
        ("logout", "dana", "127.0.0.1"),
    ]
    assert "not-her-password" not in str(list(AuditEvent.objects.values()))


def test_an_idle_logoff_is_recorded_as_such(client, settings):
    dana = UserFactory(username="dana")
    client.force_login(dana)
    session = client.session
    session["clinicdesk_last_activity"] = time.time() - settings.SESSION_IDLE_MINUTES * 60 - 5
    session.save()

    response = client.get(reverse("queues:my_work"))

    assert response.status_code == 302
    kinds = list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds[-1] == "idle_logoff"
    assert "logout" not in kinds


def test_a_forbidden_request_is_recorded(client, clinic):
    client.force_login(clinic["alice"])  # an agent: the audit is not hers

    assert client.get(reverse("audit:search")).status_code == 403

    denial = AuditEvent.objects.get(kind=AuditEvent.Kind.DENIED)
    assert (denial.actor_label, denial.method, denial.path) == ("alice", "GET", "/audit/")


def test_an_anonymous_404_is_not_recorded(client):
    assert client.get("/no-such-page/").status_code == 404
    assert not AuditEvent.objects.exists()


# --- Every change has an actor ----------------------------------------------------------------


def _changes_without_actor(since: int):
    return [
        (entry.content_type.model, entry.object_repr, entry.get_action_display())
        for entry in LogEntry.objects.filter(pk__gt=since, action__lt=LogEntry.Action.ACCESS)
        if entry.actor_id is None and not (entry.additional_data or {}).get("actor")
    ]


def test_every_task_service_records_its_actor(clinic):
    """Each state change through the services leaves timeline events naming who acted, and
    no field diff without an actor."""
    last_entry = LogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    last_event = TaskEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    alice, sam = clinic["alice"], clinic["sam"]

    task = submit("Claim denied for March visit")
    if task.assignee_id != alice.pk:  # pushed to whoever has room; alice takes it
        routing_services.task_reassign(task_id=task.pk, actor=sam, to_user=alice, reason="Hers")
    queues_services.task_start(task_id=task.pk, user=alice)
    queues_services.task_comment(task_id=task.pk, actor=alice, text="Called the payer")
    routing_services.task_hold(
        task_id=task.pk, actor=alice, reason="Waiting on payer", follow_up_at=None
    )
    routing_services.task_resume(task_id=task.pk, actor=alice)
    routing_services.task_release(task_id=task.pk, actor=alice)
    task.refresh_from_db()  # released: offered again to whoever has room
    target = clinic["carla"] if task.assignee_id != clinic["carla"].pk else alice
    routing_services.task_reassign(task_id=task.pk, actor=sam, to_user=target, reason="Cover")
    routing_services.task_reroute(
        task_id=task.pk, actor=sam, to_queue=clinic["appeals_queue"], reason="An appeal"
    )
    task.refresh_from_db()
    if task.assignee_id is None:
        queues_services.task_claim(task_id=task.pk, user=alice)
    routing_services.task_resolve(task_id=task.pk, actor="system:test_job", outcome="done")
    routing_services.task_reopen(task_id=task.pk, actor=sam, reason="Payer wrote back")

    events = TaskEvent.objects.filter(pk__gt=last_event)
    assert events.count() >= 10
    assert not events.filter(actor_label="").exists()
    kinds = set(events.values_list("kind", flat=True))
    assert {"created", "started", "held", "resumed", "resolved", "reopened", "rerouted"} <= kinds
    assert _changes_without_actor(last_entry) == []


def test_a_job_or_command_names_itself_for_the_field_diffs():
    last_entry = LogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0

    with audit_actor("system:nightly_import"):
        task_type = TaskTypeFactory(code="records_request", name="Records request")
        task_type.name = "Medical records request"
        task_type.save()

    entries = LogEntry.objects.filter(pk__gt=last_entry)
    assert entries.filter(object_id=task_type.pk, content_type__model="tasktype").count() == 2
    assert {e.additional_data["actor"] for e in entries} == {"system:nightly_import"}
    assert _changes_without_actor(last_entry) == []


def test_an_admin_edit_records_the_manager_as_actor(client, clinic):
    manager = UserFactory(username="robert", roles=["Manager"], is_staff=True)
    client.force_login(manager)
    last_entry = LogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    queue = clinic["billing_queue"]

    response = client.get(reverse("admin:queues_queue_change", args=[queue.pk]))
    data = _admin_form_data(response)
    data["description"] = "Claims and statements"
    response = client.post(reverse("admin:queues_queue_change", args=[queue.pk]), data)

    assert response.status_code == 302
    (entry,) = LogEntry.objects.filter(pk__gt=last_entry, action=LogEntry.Action.UPDATE)
    assert entry.actor == manager
    assert "description" in entry.changes
    assert _changes_without_actor(last_entry) == []


def _admin_form_data(response) -> dict:
    """What the admin's change form would post back unchanged."""
    data = {}
    form = response.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value is None:
            continue
        if isinstance(value, list | tuple):
            data[name] = [str(v) for v in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = str(value)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for index, inline_form in enumerate(formset.forms):
            for name in inline_form.fields:
                value = inline_form[name].value()
                if value not in (None, False):
                    data[f"{formset.prefix}-{index}-{name}"] = "on" if value is True else str(value)
    return data
