import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from guardian.shortcuts import get_perms

from accounts.tests.factories import DepartmentFactory, UserFactory
from queues.models import InboundMessage, Queue, Task, TaskEvent, TaskType
from queues.tests.factories import (
    InboundMessageFactory,
    QueueFactory,
    TaskEventFactory,
    TaskFactory,
    TaskTypeFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(client):
    """Robert, a clinic manager: in the admin, but not a superuser."""
    robert = UserFactory(username="robert", roles=["Manager"], is_staff=True)
    client.force_login(robert)
    return robert


@pytest.fixture
def billing():
    return DepartmentFactory(name="Billing", code="billing")


@pytest.fixture
def triage():
    return DepartmentFactory(name="Clinical triage", code="triage")


@pytest.fixture
def billing_queue(billing):
    return QueueFactory(department=billing, name="Billing", code="billing")


@pytest.fixture
def task(billing_queue):
    denial = TaskTypeFactory(code="claim_denial", default_queue=billing_queue)
    return TaskFactory(
        task_type=denial,
        subject="Claim denied: missing modifier",
        patient_name="Jane Quinn Doe",
        patient_mrn="MRN424242",
        external_id="fax-0042",
    )


@pytest.fixture
def event(task):
    return TaskEventFactory(task=task)


def changelist(model) -> str:
    return reverse(f"admin:queues_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:queues_{obj._meta.model_name}_change", args=[obj.pk])


def queue_form(queue, **overrides) -> dict:
    data = {
        "department": queue.department_id,
        "name": queue.name,
        "code": queue.code,
        "kind": queue.kind,
        "assignment_policy": queue.assignment_policy,
        "description": queue.description,
        "is_active": "on",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("model", [TaskType, Queue, Task, TaskEvent, InboundMessage])
def test_manager_opens_every_changelist(client, manager, event, model):
    InboundMessageFactory(task=event.task)

    assert client.get(changelist(model)).status_code == 200


def test_manager_opens_every_change_page(client, manager, event):
    message = InboundMessageFactory(task=event.task)
    for obj in [event.task.task_type, event.task.queue, event.task, event, message]:
        assert client.get(change(obj)).status_code == 200, obj


@pytest.mark.parametrize("model", [TaskType, Queue])
def test_manager_opens_the_add_page_of_configuration(client, manager, model):
    assert client.get(reverse(f"admin:queues_{model._meta.model_name}_add")).status_code == 200


@pytest.mark.parametrize("model", [Task, TaskEvent, InboundMessage])
def test_records_cannot_be_added_in_the_admin(client, manager, model):
    assert client.get(reverse(f"admin:queues_{model._meta.model_name}_add")).status_code == 403


@pytest.mark.parametrize("term", ["missing modifier", "MRN424242", "fax-0042", "{id}", "#{id}"])
def test_task_search(client, manager, task, term):
    TaskFactory(subject="Portal password reset", patient_mrn="MRN1")

    response = client.get(changelist(Task), {"q": term.format(id=task.pk)})

    assert list(response.context["cl"].result_list) == [task]


def test_task_changelist_shows_initials_and_mrn_not_the_patients_name(client, manager, task):
    content = client.get(changelist(Task)).content.decode()

    assert "JQD · MRN424242" in content
    assert "Jane Quinn Doe" not in content


def test_task_changelist_query_count_does_not_grow_with_tasks(client, manager, task):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(changelist(Task)).status_code == 200
        return len(queries)

    count_queries()  # the first page also records the idle clock in the session
    one = count_queries()
    TaskFactory.create_batch(5, task_type=task.task_type, assignee=manager)

    assert count_queries() == one


def test_task_event_search_by_task_id(client, manager, event):
    TaskEventFactory()

    response = client.get(changelist(TaskEvent), {"q": str(event.task_id)})

    assert list(response.context["cl"].result_list) == [event]


def test_manager_cannot_delete_a_task(client, manager, task):
    response = client.post(reverse("admin:queues_task_delete", args=[task.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()


def test_not_even_a_superuser_can_delete_a_task_or_its_timeline(client, event):
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))

    for obj in [event.task, event]:
        url = reverse(f"admin:queues_{obj._meta.model_name}_delete", args=[obj.pk])
        assert client.post(url, {"post": "yes"}).status_code == 403
    response = client.get(changelist(Task))
    assert "delete_selected" not in response.context["cl"].model_admin.get_actions(
        response.wsgi_request
    )


def test_manager_cannot_delete_or_change_a_task_event(client, manager, event):
    delete = reverse("admin:queues_taskevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403

    response = client.post(change(event), {"reason": "rewritten"})

    assert response.status_code == 403
    event.refresh_from_db()
    assert event.reason == ""


def test_task_timeline_is_read_only_on_the_task_page(client, manager, event):
    response = client.get(change(event.task))

    inline = response.context["inline_admin_formsets"][0]
    assert inline.opts.model is TaskEvent
    assert not inline.has_add_permission
    assert not inline.has_change_permission
    assert not inline.has_delete_permission


def test_editing_a_task_in_the_admin_writes_its_timeline(client, manager, task):
    data = {
        "subject": "Claim denied: missing modifier 25",
        "body": task.body,
        "tags": "",
        "patient_mrn": task.patient_mrn,
        "patient_name": task.patient_name,
        "patient_birth_date": "",
        "site": "",
        "required_skill": "",
        "min_skill_level": "1",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
        "events-MIN_NUM_FORMS": "0",
        "events-MAX_NUM_FORMS": "0",
    }

    response = client.post(change(task), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    task.refresh_from_db()
    assert task.subject == "Claim denied: missing modifier 25"
    assert task.version == 2
    event = task.events.get()
    assert event.actor == manager
    assert event.reason == "Edited in the admin: subject."


def test_task_routing_fields_are_read_only(client, manager, task):
    form = client.get(change(task)).context["adminform"].form

    for name in ["status", "queue", "assignee", "priority", "task_type", "version"]:
        assert name not in form.fields


def test_inbound_message_shows_its_payload_as_text(client, manager):
    message = InboundMessageFactory(payload='{"subject": "Refill for Ms. Núñez"}'.encode())

    content = client.get(change(message)).content.decode()

    assert "Refill for Ms. Núñez" in content


def test_inbound_message_with_bad_bytes_still_shows(client, manager):
    message = InboundMessageFactory(payload=b"caf\xe9 au lait")

    response = client.get(change(message))

    assert response.status_code == 200
    assert "caf\ufffd au lait" in response.content.decode()


def test_inbound_message_is_read_only(client, manager):
    message = InboundMessageFactory(error="Missing patient MRN")

    assert client.post(change(message), {"error": ""}).status_code == 403
    assert (
        client.post(
            reverse("admin:queues_inboundmessage_delete", args=[message.pk]), {"post": "yes"}
        ).status_code
        == 403
    )


def test_saving_a_new_queue_grants_its_department_group(client, manager, billing):
    response = client.post(
        reverse("admin:queues_queue_add"),
        {
            "department": billing.pk,
            "name": "Appeals",
            "code": "appeals",
            "kind": "work",
            "assignment_policy": "push_least_loaded",
            "description": "",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    queue = Queue.objects.get(code="appeals")
    assert set(get_perms(billing.group, queue)) == {"view_queue", "work_queue"}


def test_moving_a_queue_to_another_department_moves_the_grant(
    client, manager, billing_queue, billing, triage
):
    response = client.post(change(billing_queue), queue_form(billing_queue, department=triage.pk))

    assert response.status_code == 302
    assert set(get_perms(triage.group, billing_queue)) == {"view_queue", "work_queue"}
    assert get_perms(billing.group, billing_queue) == []


def test_changing_a_queue_writes_an_audit_entry_with_the_manager(client, manager, billing_queue):
    response = client.post(
        change(billing_queue), queue_form(billing_queue, assignment_policy="pull_only")
    )

    assert response.status_code == 302
    entry = LogEntry.objects.get_for_object(billing_queue).latest("timestamp")
    assert entry.actor == manager
    assert entry.action == LogEntry.Action.UPDATE
    assert entry.changes_dict["assignment_policy"] == ["push_least_loaded", "pull_only"]


def test_task_audit_masks_patient_name(client, manager, task):
    task.patient_name = "Janet Quinn Doe"
    task.save()

    entry = LogEntry.objects.get_for_object(task).latest("timestamp")
    assert entry.changes_dict["patient_name"] == ["***", "***"]
    assert "Doe" not in entry.changes


def test_task_type_required_fields_are_checkboxes(client, manager, billing_queue):
    response = client.post(
        reverse("admin:queues_tasktype_add"),
        {
            "code": "payment_plan",
            "name": "Payment plan",
            "department": billing_queue.department_id,
            "default_queue": billing_queue.pk,
            "default_priority": "4",
            "capacity_weight": "1",
            "required_fields": ["patient_mrn", "callback_number"],
            "description": "",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    assert TaskType.objects.get(code="payment_plan").required_fields == [
        "patient_mrn",
        "callback_number",
    ]
