"""Dedup across channels: a request about a matter already open joins it, and a person can
split a wrong merge back out."""

from __future__ import annotations

import html
import re
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from queues.models import InboundMessage, Task, TaskEvent
from queues.services import TaskStateError
from routing import dedup
from routing import services as routing_services
from routing.intake import intake_submit
from routing.models import DedupPolicy
from routing.tests.intake_clinic import build_intake_clinic, draft, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    clinic = build_intake_clinic()
    clinic["policy"] = DedupPolicy.objects.create(
        task_type=clinic["billing_question"],
        match=DedupPolicy.Match.PATIENT_AND_TYPE,
        window_hours=72,
    )
    return clinic


def page_text(response) -> str:
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(text))


def linked_event(task: Task) -> TaskEvent:
    return task.events.get(kind=TaskEvent.Kind.DUPLICATE_LINKED)


def test_a_voicemail_about_an_open_billing_question_joins_it(clinic):
    first = submit(
        "Question about my March statement", "Why was I charged twice?", channel="portal"
    )
    assert first.outcome == InboundMessage.Status.PARSED
    original = first.task

    second = submit(
        "Call back about my bill",
        "Hi, this is Jordan, I was charged twice on the March statement, please call me back.",
        channel="phone",
        external_id="vm-77",
    )

    duplicate = second.task
    assert second.outcome == InboundMessage.Status.DUPLICATE
    assert second.created
    assert second.duplicate_of == original
    assert duplicate.status == Task.Status.DUPLICATE
    assert duplicate.task_type == clinic["billing_question"]  # findable by its type
    assert duplicate.queue == original.queue  # whoever sees the original sees it
    assert duplicate.assignee is None
    assert duplicate.rule_set_version == original.rule_set_version is not None
    assert Task.objects.filter(patient_mrn="MRN-1001").open().get() == original

    note = linked_event(original)
    assert note.explanation["headline"].startswith("Same request also arrived by voicemail at ")
    assert note.explanation["headline"].endswith(f"(#{duplicate.pk})")
    assert "Call back about my bill" in note.reason
    assert "charged twice on the March statement" in note.reason
    assert note.actor_label == "client:test"
    assert linked_event(duplicate).explanation["headline"] == (
        f"Linked to #{original.pk} as a duplicate"
    )


def test_the_original_page_tells_the_duplicate_and_the_duplicate_page_its_original(client, clinic):
    original = submit("Question about my March statement", channel="portal").task
    duplicate = submit("Call back about my bill", "Charged twice", channel="phone").task
    client.force_login(clinic["bea"])

    text = page_text(client.get(reverse("queues:task", args=[original.pk])))
    assert "Same request also arrived by voicemail at" in text
    assert "Charged twice" in text
    assert f"#{duplicate.pk} Call back about my bill Duplicate" in text

    text = page_text(client.get(reverse("queues:task", args=[duplicate.pk])))
    assert f"Linked to task #{original.pk} as a duplicate" in text
    assert f"Duplicate of Task #{original.pk}" in text
    assert "Split out" in text


def test_a_question_outside_the_window_is_new_work(clinic):
    original = submit("Question about my March statement").task
    Task.objects.filter(pk=original.pk).update(created_at=timezone.now() - timedelta(hours=73))

    result = submit("Another question about my bill", channel="phone")

    assert result.outcome == InboundMessage.Status.PARSED
    assert result.task.duplicate_of is None
    assert result.task.status == Task.Status.ASSIGNED


def test_a_question_inside_the_window_joins_even_an_old_looking_original(clinic):
    original = submit("Question about my March statement").task
    Task.objects.filter(pk=original.pk).update(created_at=timezone.now() - timedelta(hours=71))

    assert submit("Again about my bill", channel="phone").duplicate_of == original


@pytest.mark.parametrize(
    "change",
    [
        {"patient_mrn": "MRN-2002"},  # another patient
        {"subject": "I was referred to a cardiologist"},  # another type, no policy
    ],
)
def test_another_patient_or_another_type_is_new_work(clinic, change):
    submit("Question about my March statement")
    fields = {"subject": "Call back about my bill", "channel": "phone", **change}
    result = submit(**fields)
    assert result.outcome == InboundMessage.Status.PARSED
    assert result.task.duplicate_of is None


def test_a_resolved_original_is_not_joined(clinic):
    original = submit("Question about my March statement").task
    routing_services.task_resolve(task_id=original.pk, actor=clinic["bea"], outcome="Done")
    result = submit("Call back about my bill", channel="phone")
    assert result.outcome == InboundMessage.Status.PARSED


def test_a_policy_switched_off_links_nothing(clinic):
    DedupPolicy.objects.filter(pk=clinic["policy"].pk).update(is_active=False)
    submit("Question about my March statement")
    assert submit("Call back about my bill", channel="phone").duplicate_of is None


def test_the_next_email_of_an_open_thread_joins_it_whatever_the_patient(clinic):
    clinic["policy"].match = DedupPolicy.Match.THREAD
    clinic["policy"].save()
    first = submit(
        "My bill",
        channel="email",
        external_id="<a1@mail.example>",
        thread_key="<a1@mail.example>",
        patient_mrn="",
    ).task
    # A new message in the thread (not a reply to a known task: its parent is not on file).
    second = submit(
        "Re: My bill, and the statement",
        channel="email",
        external_id="<a3@mail.example>",
        thread_key="<a1@mail.example>",
        patient_mrn="",
    )
    assert second.duplicate_of == first
    assert (
        linked_event(first)
        .explanation["headline"]
        .startswith("Same request also arrived by email at")
    )
    assert linked_event(first).explanation["matched_by"] == "thread"
    # A thread policy does not join by patient.
    third = submit("A new bill question", channel="portal", patient_mrn="")
    assert third.duplicate_of is None


def test_the_thread_root_is_found_by_its_message_id(clinic):
    clinic["policy"].match = DedupPolicy.Match.EITHER
    clinic["policy"].save()
    root = submit("My bill", channel="email", external_id="<root@x>", patient_mrn="").task
    result = submit("Fwd: my bill", channel="email", external_id="<fwd@x>", thread_key="<root@x>")
    assert result.duplicate_of == root


def test_find_original_is_one_indexed_query_after_the_policy(clinic, django_assert_num_queries):
    original = submit("Question about my March statement").task
    probe = Task.objects.create(channel="phone", subject="probe", patient_mrn="MRN-1001")
    # the policy; the matter's lock; the id of the open task of that patient and type; its row
    with django_assert_num_queries(4):
        found = dedup.find_original(
            task=probe, task_type_code="billing_question", now=timezone.now()
        )
    assert found == original
    # Intake passes the cached rules snapshot, which holds the policies; when nothing matches,
    # the whole row is never read: the lock and one indexed probe.
    from routing import selectors

    snapshot = selectors.routing_snapshot()
    stranger = Task.objects.create(channel="phone", subject="probe", patient_mrn="MRN-9999")
    with django_assert_num_queries(2):
        assert (
            dedup.find_original(
                task=stranger,
                task_type_code="billing_question",
                now=timezone.now(),
                snapshot=snapshot,
            )
            is None
        )
    # A lookup by patient may use the partial index `task_by_patient` (its predicate,
    # patient_mrn <> '', follows from patient_mrn = '…'), however large the table grows.
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table: ask whether it *can*
        cursor.execute("EXPLAIN SELECT id FROM queues_task WHERE patient_mrn = %s", ["MRN-1001"])
        plan = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert "task_by_patient" in plan


# --- split -------------------------------------------------------------------------------------


def linked_pair(clinic) -> tuple[Task, Task]:
    original = submit("Question about my March statement", "Charged twice").task
    duplicate = submit(
        "Question about my bill", "A different bill: the lab's", channel="phone"
    ).task
    return original, duplicate


def test_a_worker_splits_a_wrong_merge_and_it_is_routed_as_new_work(client, clinic):
    original, duplicate = linked_pair(clinic)
    client.force_login(clinic["bea"])

    response = client.post(
        reverse("queues:task_action", args=[duplicate.pk, "split"]),
        {"expected_version": duplicate.version, "reason": "A different bill: the lab's"},
    )

    assert response.status_code == 302
    duplicate.refresh_from_db()
    assert duplicate.duplicate_of is None
    assert duplicate.status == Task.Status.ASSIGNED  # routed and offered like any request
    assert duplicate.queue == clinic["billing_queue"]
    kinds = list(duplicate.events.values_list("kind", flat=True))
    assert kinds[-4:] == ["duplicate", "duplicate", "routed", "assigned"]
    split = duplicate.events.filter(kind=TaskEvent.Kind.DUPLICATE_LINKED).last()
    assert split.reason == "A different bill: the lab's"
    assert split.actor == clinic["bea"]
    assert split.explanation["headline"] == (
        f"Split out of #{original.pk}: handled as a request of its own"
    )
    on_original = original.events.filter(kind=TaskEvent.Kind.DUPLICATE_LINKED).last()
    assert on_original.explanation["headline"] == (
        f"#{duplicate.pk} was split out: it is a separate request"
    )
    assert "is a request of its own now" in page_text(client.get(response.url))


def test_splitting_needs_a_reason(client, clinic):
    _, duplicate = linked_pair(clinic)
    client.force_login(clinic["bea"])
    response = client.post(
        reverse("queues:task_action", args=[duplicate.pk, "split"]),
        {"expected_version": duplicate.version, "reason": "  "},
    )
    assert response.status_code == 400
    assert "Say why this is not the same request" in page_text(response)
    duplicate.refresh_from_db()
    assert duplicate.status == Task.Status.DUPLICATE


def test_someone_of_another_team_cannot_split(client, clinic):
    _, duplicate = linked_pair(clinic)
    client.force_login(clinic["fred"])
    response = client.post(
        reverse("queues:task_action", args=[duplicate.pk, "split"]),
        {"expected_version": duplicate.version, "reason": "Not the same"},
    )
    assert response.status_code == 404
    assert Task.objects.get(pk=duplicate.pk).status == Task.Status.DUPLICATE


def test_only_a_duplicate_can_be_split(clinic):
    original, _ = linked_pair(clinic)
    with pytest.raises(TaskStateError):
        dedup.task_split(task_id=original.pk, actor=clinic["bea"], reason="Not the same")


# --- concurrency ---------------------------------------------------------------------------------


def _race(drafts) -> list:
    """Submit each draft on its own connection, all at the same moment."""
    barrier = threading.Barrier(len(drafts))
    results, failures = [], []

    def send(item):
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            results.append(intake_submit(draft=item, actor="client:test"))
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(item,)) for item in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return results


@pytest.mark.django_db(transaction=True)
def test_requests_about_one_matter_at_the_same_moment_make_one_original():
    clinic = build_intake_clinic()
    DedupPolicy.objects.create(task_type=clinic["billing_question"], window_hours=72)
    channels = ["portal", "phone", "email", "fax", "api", "form"]

    _race([draft(f"About my bill ({c})", channel=c, external_id=f"{c}-1") for c in channels])

    tasks = Task.objects.filter(patient_mrn="MRN-1001")
    assert tasks.count() == len(channels)
    original = tasks.get(status__in=Task.OPEN_STATUSES)
    assert set(tasks.exclude(pk=original.pk).values_list("duplicate_of", flat=True)) == {
        original.pk
    }
    assert original.events.filter(kind=TaskEvent.Kind.DUPLICATE_LINKED).count() == 5


@pytest.mark.django_db(transaction=True)
def test_duplicates_arriving_together_link_to_the_same_original():
    clinic = build_intake_clinic()
    DedupPolicy.objects.create(task_type=clinic["billing_question"], window_hours=72)
    original = submit("Question about my March statement").task

    results = _race(
        [draft("About my bill", channel="phone", external_id=f"vm-{n}") for n in range(4)]
    )

    assert {result.duplicate_of.pk for result in results} == {original.pk}
    assert original.events.filter(kind=TaskEvent.Kind.DUPLICATE_LINKED).count() == 4
