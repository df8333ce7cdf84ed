"""Failed intake: who sees which messages, a list without patient data, and a supervisor
who reads a broken payload, corrects it and retries it into a task."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from queues.intake import form as form_adapter
from queues.intake import store
from queues.models import Channel, InboundMessage, Task
from queues.tests.desk_support import build_desk_clinic, form_payload
from queues.tests.factories import InboundMessageFactory
from routing import intake as routing_intake

pytestmark = pytest.mark.django_db

LIST = reverse("queues:intake_failed")


@pytest.fixture
def clinic():
    return build_desk_clinic()


def detail(inbound):
    return reverse("queues:intake_failed_detail", args=[inbound.pk])


def retry_url(inbound):
    return reverse("queues:intake_failed_retry", args=[inbound.pk])


def correct_url(inbound):
    return reverse("queues:intake_failed_correct", args=[inbound.pk])


def listed(response):
    return [int(pk) for pk in re.findall(r'data-inbound-id="(\d+)"', response.content.decode())]


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def aged(inbound, **delta):
    InboundMessage.objects.filter(pk=inbound.pk).update(
        received_at=timezone.now() - timedelta(**delta)
    )
    inbound.refresh_from_db()
    return inbound


def broken_prior_auth(actor, **fields):
    """A front-desk submission for a prior authorization that lacks what the type needs."""
    payload = form_payload(
        task_type="prior_auth_request",
        subject="MRI of the left knee",
        patient_name="Jordan Avery",
        patient_mrn="MRN-20417",
        **fields,
    )
    inbound, result = routing_intake.intake_receive(
        channel=Channel.FORM,
        payload=payload,
        content_type=form_adapter.CONTENT_TYPE,
        actor=actor,
    )
    assert result is None and inbound.status == InboundMessage.Status.FAILED
    return inbound


def client_message(clinic, name, departments, **kwargs):
    integration, _ = store.integration_client_create(
        name=name, channels=["api"], departments=departments
    )
    return InboundMessageFactory(
        client=integration,
        status=InboundMessage.Status.FAILED,
        error="subject: This field is required.",
        error_fields={"subject": ["This field is required."]},
        attempts=1,
        **kwargs,
    )


# --- who sees what ---------------------------------------------------------------------------


def test_agents_do_not_learn_the_pages_exist(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    client.force_login(clinic["maria"])

    assert client.get(LIST).status_code == 404
    assert client.get(detail(inbound)).status_code == 404
    assert client.post(retry_url(inbound)).status_code == 404
    assert client.post(correct_url(inbound), {"payload": "{}"}).status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, clinic):
    response = client.get(LIST)

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_supervisor_sees_failed_and_stuck_messages_newest_first(client, clinic):
    older = aged(broken_prior_auth(clinic["maria"]), hours=3)
    newer = broken_prior_auth(clinic["maria"])
    stuck = aged(InboundMessageFactory(channel=Channel.EMAIL), minutes=30)
    aged(InboundMessageFactory(channel=Channel.EMAIL), minutes=1)  # still being read
    parsed = InboundMessageFactory(status=InboundMessage.Status.PARSED)
    client.force_login(clinic["sam"])

    response = client.get(LIST)

    assert response.status_code == 200
    assert listed(response) == [newer.pk, stuck.pk, older.pk]
    assert parsed.pk not in listed(response)
    page = response.content.decode()
    assert "Never parsed" in page
    assert "Problem with patient_mrn" not in page  # the MRN was given
    assert "Problem with payer, referring_provider" in page


def test_the_list_shows_no_patient_data(client, clinic):
    inbound = broken_prior_auth(clinic["maria"], patient_birth_date="1984-99-01")
    assert "patient_birth_date" in inbound.error_fields
    client.force_login(clinic["sam"])

    page = client.get(LIST).content.decode()

    assert f"Message #{inbound.pk}" in page
    for secret in ("Jordan Avery", "MRN-20417", "MRI of the left knee", "1984-99-01"):
        assert secret not in page


def test_a_supervisor_sees_only_the_clients_of_their_departments_and_unowned_ones(client, clinic):
    billing_feed = client_message(clinic, "auth-portal", [clinic["auth"]])
    desk_feed = client_message(clinic, "phone-system", [clinic["front"]])
    unowned = client_message(clinic, "fax-gateway", [])
    form = broken_prior_auth(clinic["maria"])

    client.force_login(clinic["sam"])  # front desk supervisor
    assert set(listed(client.get(LIST))) == {desk_feed.pk, unowned.pk, form.pk}
    assert client.get(detail(billing_feed)).status_code == 404
    assert client.post(retry_url(billing_feed)).status_code == 404

    client.force_login(clinic["bill"])  # prior authorization supervisor
    assert set(listed(client.get(LIST))) == {billing_feed.pk, unowned.pk, form.pk}
    assert client.get(detail(billing_feed)).status_code == 200


def test_managers_see_everything_and_compliance_reads_without_acting(client, clinic):
    billing_feed = client_message(clinic, "auth-portal", [clinic["auth"]])
    desk_feed = client_message(clinic, "phone-system", [clinic["front"]])

    client.force_login(clinic["mo"])
    assert set(listed(client.get(LIST))) == {billing_feed.pk, desk_feed.pk}
    assert "Retry" in client.get(detail(billing_feed)).content.decode()

    client.force_login(clinic["carol"])
    assert set(listed(client.get(LIST))) == {billing_feed.pk, desk_feed.pk}
    page = client.get(detail(billing_feed)).content.decode()
    assert "Compliance reviewers can read failed intake but not change it." in page
    assert "Save and retry" not in page
    assert client.post(retry_url(billing_feed)).status_code == 403
    assert client.post(correct_url(billing_feed), {"payload": "{}"}).status_code == 403
    billing_feed.refresh_from_db()
    assert billing_feed.attempts == 1 and billing_feed.corrected_payload is None


def test_filters_by_channel_and_age(client, clinic):
    today = broken_prior_auth(clinic["maria"])
    last_week = aged(
        InboundMessageFactory(channel=Channel.EMAIL, status=InboundMessage.Status.FAILED),
        days=3,
    )
    ancient = aged(
        InboundMessageFactory(channel=Channel.EMAIL, status=InboundMessage.Status.FAILED),
        days=30,
    )
    client.force_login(clinic["sam"])

    assert listed(client.get(LIST, {"channel": "email"})) == [last_week.pk, ancient.pk]
    assert listed(client.get(LIST, {"age": "day"})) == [today.pk]
    assert listed(client.get(LIST, {"age": "week", "channel": "email"})) == [last_week.pk]
    assert listed(client.get(LIST, {"age": "older"})) == [ancient.pk]
    assert listed(client.get(LIST, {"age": "nonsense"})) == [today.pk, last_week.pk, ancient.pk]


def test_pages_of_fifty_by_a_cursor_that_keeps_the_filters(client, clinic):
    rows = InboundMessageFactory.create_batch(
        55, channel=Channel.EMAIL, status=InboundMessage.Status.FAILED
    )
    newest_first = sorted(rows, key=lambda m: (m.received_at, m.pk), reverse=True)
    client.force_login(clinic["sam"])

    first = client.get(LIST, {"channel": "email"})
    older = first.context["older"]
    second = client.get(LIST + older)

    assert listed(first) == [m.pk for m in newest_first[:50]]
    assert older.startswith("?channel=email&before=")
    assert listed(second) == [m.pk for m in newest_first[50:]]
    assert second.context["older"] is None and second.context["newest"] == "?channel=email"
    assert "55 messages" in first.content.decode()


@pytest.mark.parametrize("count", [3, 30])
def test_the_list_is_a_fixed_number_of_queries(client, clinic, django_assert_num_queries, count):
    for index in range(count):
        client_message(clinic, f"feed-{index}", [clinic["front"]])
    client.force_login(clinic["sam"])

    # session, user, roles, the page of rows with their clients, the count; then the session's
    # activity time saved (in a savepoint: three statements)
    with django_assert_num_queries(8):
        response = client.get(LIST)

    assert len(listed(response)) == count


# --- reading one message ---------------------------------------------------------------------


def test_the_detail_shows_the_payload_as_escaped_text_with_headers_and_errors(client, clinic):
    inbound = InboundMessageFactory(
        status=InboundMessage.Status.FAILED,
        payload=b'{"subject": "<script>alert(1)</script>", "patient": {"name": "Jordan Avery"}}',
        headers={"User-Agent": "lab-feed/2.1", "X-Request-Id": "req-77"},
        error_fields={"patient.birth_date": ["Enter the date of birth as YYYY-MM-DD."]},
        attempts=1,
    )
    client.force_login(clinic["sam"])

    page = client.get(detail(inbound)).content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert "Jordan Avery" in page  # the detail is where a supervisor reads the payload
    assert "lab-feed/2.1" in page and "req-77" in page
    assert "patient.birth_date" in page
    assert "Enter the date of birth as YYYY-MM-DD." in page


def test_a_binary_payload_is_shown_as_its_size_and_first_bytes(client, clinic):
    inbound = InboundMessageFactory(
        status=InboundMessage.Status.FAILED,
        content_type="application/pdf",
        payload=b"\x00\x01\x02PDF\xff" * 100,
    )
    client.force_login(clinic["sam"])

    response = client.get(detail(inbound))

    page = response.content.decode()
    assert "Binary content" in page and "(700 bytes)" in page
    assert "00000000  00 01 02 50 44 46 ff 00" in page
    assert "correction" not in response.context  # a binary payload is not edited in a textarea


def test_a_long_text_payload_is_cut_for_reading(client, clinic):
    inbound = InboundMessageFactory(
        status=InboundMessage.Status.FAILED, payload=("é" * 40_000).encode()
    )
    client.force_login(clinic["sam"])

    response = client.get(detail(inbound))

    original = response.context["original"]
    assert original["truncated"] and original["encoding"] == "UTF-8"
    assert len(original["text"].encode()) <= 64 * 1024
    assert "Showing the first 64 KB of 78.1" in response.content.decode()


# --- correct and retry -----------------------------------------------------------------------


def test_a_corrected_payload_retried_becomes_a_task_and_leaves_the_list(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    original = bytes(inbound.payload)
    client.force_login(clinic["sam"])
    form = client.get(detail(inbound)).context["correction"]
    data = json.loads(form.initial["payload"])
    data.update(payer="Aetna", referring_provider="Dr. Okafor")
    corrected = json.dumps(data, indent=2).replace("\n", "\r\n")  # as a browser sends it

    response = client.post(correct_url(inbound), {"payload": corrected, "then": "retry"})

    inbound.refresh_from_db()
    task = Task.objects.get()
    assert inbound.status == InboundMessage.Status.PARSED and inbound.task == task
    assert bytes(inbound.payload) == original
    assert b"\r\n" not in bytes(inbound.corrected_payload)
    assert inbound.corrected_by == "sam" and inbound.corrected_at is not None
    assert inbound.attempts == 2
    assert task.queue == clinic["auth_queue"]
    assert task.events.first().actor == clinic["sam"]
    assert response["Location"] == detail(inbound)
    assert messages_of(response)[0].startswith(f"Became task #{task.pk}.")
    assert inbound.pk not in listed(client.get(LIST))

    page = client.get(detail(inbound)).content.decode()
    # Sam works the front desk: the task is in a queue he does not see.
    assert f"task #{task.pk}" in page and "in a queue you do not see" in page
    assert "MRI of the left knee" not in page

    client.force_login(clinic["mo"])
    page = client.get(detail(inbound)).content.decode()
    assert f'href="{reverse("queues:task", args=[task.pk])}"' in page


def test_a_retry_that_still_fails_shows_the_new_error(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    client.force_login(clinic["sam"])
    data = json.loads(bytes(inbound.payload))
    data.update(payer="Aetna", patient_birth_date="27 March 1984")

    client.post(correct_url(inbound), {"payload": json.dumps(data), "then": "save"})
    inbound.refresh_from_db()
    assert inbound.attempts == 1 and inbound.status == InboundMessage.Status.FAILED
    response = client.post(retry_url(inbound), follow=True)

    inbound.refresh_from_db()
    assert inbound.attempts == 2 and inbound.status == InboundMessage.Status.FAILED
    assert set(inbound.error_fields) == {"patient_birth_date", "referring_provider"}
    page = response.content.decode()
    assert "Retried, and it failed again: see the errors below." in page
    assert "Write the date of birth as YYYY-MM-DD" in page
    assert not Task.objects.exists()


def test_broken_json_can_be_corrected(client, clinic):
    inbound, _ = routing_intake.intake_receive(
        channel=Channel.FORM,
        payload=b'{"subject": "Lost card", "channel": "form",}',
        content_type=form_adapter.CONTENT_TYPE,
        actor=clinic["maria"],
    )
    assert "non_field_errors" in inbound.error_fields
    client.force_login(clinic["sam"])
    assert "whole payload" in client.get(detail(inbound)).content.decode()

    client.post(
        correct_url(inbound),
        {"payload": '{"subject": "Lost card", "channel": "form"}', "then": "retry"},
    )

    inbound.refresh_from_db()
    assert inbound.status == InboundMessage.Status.PARSED
    assert inbound.task.subject == "Lost card"


def test_retrying_a_message_whose_request_already_became_a_task_links_it(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    data = json.loads(bytes(inbound.payload))
    data.update(payer="Aetna", referring_provider="Dr. Okafor")
    # Meanwhile the desk resubmitted the same form (same submission id), which worked.
    _resent, result = routing_intake.intake_receive(
        channel=Channel.FORM,
        payload=json.dumps(data).encode(),
        content_type=form_adapter.CONTENT_TYPE,
        actor=clinic["maria"],
    )
    client.force_login(clinic["sam"])

    client.post(correct_url(inbound), {"payload": json.dumps(data), "then": "retry"})

    inbound.refresh_from_db()
    assert Task.objects.count() == 1
    assert inbound.status == InboundMessage.Status.RESENT
    assert inbound.task == result.task


def test_a_message_stuck_before_parsing_can_be_retried_but_not_corrected(client, clinic):
    stuck = aged(
        InboundMessageFactory(
            channel=Channel.FORM,
            content_type=form_adapter.CONTENT_TYPE,
            payload=form_payload(subject="Wheelchair at the entrance", task_type="general_inquiry"),
        ),
        minutes=20,
    )
    client.force_login(clinic["sam"])
    page = client.get(detail(stuck)).content.decode()
    assert "Stored but never read" in page and "Save and retry" not in page

    response = client.post(correct_url(stuck), {"payload": "{}"})
    assert response.status_code == 302
    assert messages_of(response) == [
        "Only a failed message can be corrected: retry this one first, as it was received."
    ]

    client.post(retry_url(stuck))

    stuck.refresh_from_db()
    assert stuck.status == InboundMessage.Status.PARSED
    assert stuck.task.queue == clinic["front_queue"]


def test_a_processed_message_is_not_retried_again(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    client.force_login(clinic["sam"])
    data = json.loads(bytes(inbound.payload))
    data.update(payer="Aetna", referring_provider="Dr. Okafor")
    client.post(correct_url(inbound), {"payload": json.dumps(data), "then": "retry"})

    response = client.post(retry_url(inbound))

    assert messages_of(response)[-1] == "This message was already processed; nothing was retried."
    inbound.refresh_from_db()
    assert inbound.attempts == 2 and Task.objects.count() == 1


def test_an_unchanged_or_empty_correction_is_refused_with_its_reason(client, clinic):
    inbound = broken_prior_auth(clinic["maria"])
    client.force_login(clinic["sam"])

    unchanged = client.post(correct_url(inbound), {"payload": bytes(inbound.payload).decode()})
    empty = client.post(correct_url(inbound), {"payload": ""})

    assert unchanged.status_code == empty.status_code == 400
    assert "Nothing was changed" in unchanged.context["correction"].errors["payload"][0]
    assert "The corrected payload is empty" in empty.context["correction"].errors["payload"][0]
    inbound.refresh_from_db()
    assert inbound.corrected_payload is None


def test_changes_are_post_only_and_need_the_csrf_token(clinic):
    inbound = broken_prior_auth(clinic["maria"])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(clinic["sam"])

    assert browser.get(retry_url(inbound)).status_code == 405
    assert browser.get(correct_url(inbound)).status_code == 405
    assert browser.post(retry_url(inbound)).status_code == 403
    assert browser.post(correct_url(inbound), {"payload": "{}"}).status_code == 403
    inbound.refresh_from_db()
    assert inbound.attempts == 1 and inbound.corrected_payload is None
