"""The front-desk form: who may log a walk-in or a call, the fields each task type needs,
errors that say what to add, and a submission stored raw before the rules route it."""

import json
import re
import uuid
from datetime import date, timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from queues import selectors
from queues.intake import form as form_adapter
from queues.intake.draft import IntakeError
from queues.models import Channel, InboundMessage, Task
from queues.tests.desk_support import build_desk_clinic, form_payload, person
from queues.tests.factories import InboundMessageFactory
from routing.models import RuleSet

pytestmark = pytest.mark.django_db

NEW = reverse("queues:intake_new")
FIELDS = reverse("queues:intake_fields")


@pytest.fixture
def clinic():
    return build_desk_clinic()


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def submission(**overrides):
    data = {
        "channel": "form",
        "task_type": "",
        "subject": "Needs an MRI of the left knee authorized",
        "details": "Dr. Okafor's office sent the order this morning.",
        "patient_mrn": "MRN-20417",
        "patient_name": "Jordan Avery",
        "patient_birth_date": "1984-03-27",
        "callback_number": "(555) 014-2288",
        "payer": "",
        "referring_provider": "",
        "urgency": "",
        "submission_id": str(uuid.uuid4()),
    }
    data.update(overrides)
    return data


# --- who may use it --------------------------------------------------------------------------


def test_an_agent_sees_the_form_with_the_active_types_and_the_rules_option(client, clinic):
    clinic["types"]["general_inquiry"].is_active = False
    clinic["types"]["general_inquiry"].save()
    client.force_login(clinic["maria"])

    response = client.get(NEW)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Not sure: let the rules decide" in page
    assert "Prior authorization request" in page
    assert "General inquiry" not in page
    assert 'name="submission_id"' in page
    assert f'hx-post="{FIELDS}"' in page


@pytest.mark.parametrize("who", ["carol", "mo"])
def test_people_who_work_no_queue_cannot_log_requests(client, clinic, who):
    client.force_login(clinic[who])

    assert client.get(NEW).status_code == 403
    assert client.post(NEW, submission(subject="Anything")).status_code == 403
    assert client.post(FIELDS, {"task_type": "callback_request"}).status_code == 403
    assert not InboundMessage.objects.exists()


def test_signed_out_visitors_are_sent_to_sign_in(client, clinic):
    response = client.get(NEW)

    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


# --- the fields a type needs -----------------------------------------------------------------


def test_choosing_a_type_swaps_in_its_required_fields_and_keeps_what_was_typed(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(
        FIELDS,
        {"task_type": "prior_auth_request", "patient_name": "Jordan Avery", "payer": "Aetna"},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200
    fragment = response.content.decode()
    needed = fragment.split("Needed for prior authorization request")[1].split("</fieldset>")[0]
    assert re.findall(r'name="(\w+)"', needed) == ["patient_mrn", "payer", "referring_provider"]
    assert needed.count('aria-required="true"') == 3
    assert 'value="Aetna"' in needed
    other = fragment.split("Anything else you know")[1]
    assert 'value="Jordan Avery"' in other
    assert "Submit a procedure, imaging or drug authorization" in fragment
    # The screen-reader status is updated out of band.
    assert 'id="fields-status"' in fragment and 'hx-swap-oob="true"' in fragment
    assert "needs: patient mrn, payer, referring provider." in fragment


def test_without_javascript_the_refresh_button_shows_the_types_fields(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(NEW, {**submission(task_type="callback_request"), "refresh": "1"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Needed for callback request" in page
    assert "Show the fields for this type" in page  # inside <noscript>
    assert not InboundMessage.objects.exists()
    assert not response.context["form"].errors


def test_a_missing_required_field_says_what_to_add_and_why(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(
        NEW, submission(task_type="prior_auth_request", referring_provider="Dr. Okafor")
    )

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "payer": ["A prior authorization request needs the payer: add the patient's insurer."]
    }
    page = response.content.decode()
    assert "Not logged yet: 1 thing to fix." in page
    assert 'href="#id_payer"' in page
    # Fixed on the spot: a form the person corrects is not stored as intake.
    assert not InboundMessage.objects.exists()
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subject", "   ", "Say in a few words what the person needs"),
        (
            "patient_birth_date",
            (date.today() + timedelta(days=2)).isoformat(),
            "The date of birth is in the future: check the year.",
        ),
        ("patient_birth_date", "27/03/1984", "Enter the date of birth as YYYY-MM-DD"),
        ("callback_number", "call me", "Enter a phone number with its area code"),
        ("task_type", "no_such_type", "That task type is no longer offered"),
        ("channel", "pigeon", "Select a valid choice"),
    ],
)
def test_each_bad_value_is_named_with_its_fix(client, clinic, field, value, message):
    client.force_login(clinic["maria"])

    response = client.post(NEW, submission(**{field: value}))

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in errors[field][0]


def test_every_required_field_of_the_type_is_checked_at_once(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(NEW, submission(task_type="prior_auth_request", patient_mrn=""))

    errors = response.context["form"].errors
    assert sorted(errors) == ["patient_mrn", "payer", "referring_provider"]
    assert errors["patient_mrn"] == [
        "A prior authorization request needs the patient's MRN: look it up in the EHR so "
        "that the team opens the right chart."
    ]


# --- submitting ------------------------------------------------------------------------------


def test_a_walk_in_is_stored_raw_then_routed_by_the_rules_to_another_team(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(
        NEW,
        submission(task_type="prior_auth_request", payer="Aetna", referring_provider="Dr. Okafor"),
    )

    task = Task.objects.get()
    inbound = InboundMessage.objects.get()
    assert inbound.content_type == form_adapter.CONTENT_TYPE
    assert inbound.channel == Channel.FORM and inbound.sender == "maria"
    assert inbound.status == InboundMessage.Status.PARSED and inbound.task == task
    stored = json.loads(bytes(inbound.payload))
    assert stored["subject"] == "Needs an MRI of the left knee authorized"
    assert stored["task_type"] == "prior_auth_request" and stored["payer"] == "Aetna"
    assert inbound.external_id == task.external_id == f"desk-{stored['submission_id']}"

    assert task.task_type == clinic["types"]["prior_auth_request"]
    assert task.request_type == "prior_auth_request"
    assert task.queue == clinic["auth_queue"]
    assert task.assignee == clinic["paula"]
    assert task.patient_mrn == "MRN-20417" and task.patient_birth_date == date(1984, 3, 27)
    assert "Payer: Aetna" in task.body and "Referring provider: Dr. Okafor" in task.body
    assert task.metadata["entered_by"] == "maria"
    # The rules decided, and the timeline says which rule matched on the chosen type.
    told = " ".join(
        " ".join([entry.headline, *entry.details]) for entry in selectors.task_timeline(task)
    )
    assert (
        "rule 'Front desk chose Prior authorization request' — channel 'form', request type "
        "'prior_auth_request'" in told
    )

    # Maria's team does not see the prior-authorization queue: back to the form, told where.
    assert response.status_code == 302 and response["Location"] == NEW
    assert messages_of(response) == [
        f"Logged as task #{task.pk}: Prior authorization request, P2, in Prior authorization, "
        "assigned to Paula Doe."
    ]


def test_a_call_for_the_front_desk_opens_the_new_task(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(
        NEW,
        submission(
            channel="phone",
            task_type="callback_request",
            subject="Wants a call back about parking",
            urgency="2",
        ),
    )

    task = Task.objects.get()
    assert task.channel == Channel.PHONE
    assert task.queue == clinic["front_queue"]
    assert task.priority == 2  # the urgency raised the type's P3
    assert response["Location"] == reverse("queues:task", args=[task.pk])
    assert (
        f"Logged as task #{task.pk}: Callback request, P2, in Front desk"
        in (messages_of(response)[0])
    )


def test_without_a_type_the_rules_decide_and_an_unclear_request_goes_to_review(client, clinic):
    client.force_login(clinic["maria"])

    response = client.post(NEW, submission(subject="Asked something we could not place"))

    task = Task.objects.get()
    assert task.request_type == ""
    assert task.queue == clinic["review"]
    assert messages_of(response) == [
        f"Logged as task #{task.pk}: Not classified yet, P3, in Needs review: the rules could "
        "not tell its type, so a person will."
    ]


def test_pressing_submit_twice_logs_one_task(client, clinic):
    client.force_login(clinic["maria"])
    data = submission(task_type="general_inquiry", subject="Where is the lab?")

    first = client.post(NEW, data)
    second = client.post(NEW, data)

    task = Task.objects.get()
    assert first["Location"] == second["Location"] == reverse("queues:task", args=[task.pk])
    assert messages_of(second)[-1] == (
        f"This was already logged as task #{task.pk}; nothing new was created."
    )
    assert list(InboundMessage.objects.values_list("status", flat=True).order_by("id")) == [
        "parsed",
        "resent",
    ]


def test_a_submission_that_passed_the_form_but_could_not_be_routed_is_kept(client, clinic):
    RuleSet.objects.update(status=RuleSet.Status.DRAFT)
    client.force_login(clinic["maria"])

    response = client.post(NEW, submission(task_type="general_inquiry", subject="Lost keys"))

    assert response.status_code == 503
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.RECEIVED
    assert json.loads(bytes(inbound.payload))["subject"] == "Lost keys"
    assert not Task.objects.exists()
    assert messages_of(response) == [
        f"Saved as intake message #{inbound.pk}, but no task was created: no routing rules are "
        "active. Ask a manager to activate a rule set. A supervisor will find it under Failed "
        "intake."
    ]


def test_the_page_renders_in_a_few_queries(client, clinic, django_assert_max_num_queries):
    client.force_login(clinic["maria"])

    # session, user, compliance role, workable queues, the active types; the session saved
    with django_assert_max_num_queries(8):
        response = client.get(NEW)

    assert response.status_code == 200


# --- the adapter -----------------------------------------------------------------------------


def parse(payload: bytes):
    return form_adapter.parse(payload, InboundMessageFactory.build(payload=payload))


def test_the_adapter_reads_a_stored_submission_into_a_draft(clinic):
    submission_id = str(uuid.uuid4())
    draft = parse(
        form_payload(
            channel="phone",
            submission_id=submission_id,
            task_type="callback_request",
            subject="  Call back about a bill  ",
            details="Prefers mornings.",
            callback_number="+1 555 014 2288 ext 12",
            patient_birth_date="1950-01-02",
            urgency=2,
        )
    )

    assert draft.channel == "phone"
    assert draft.subject == "Call back about a bill"
    assert draft.external_id == f"desk-{submission_id}"
    assert draft.request_type == "callback_request"
    assert draft.urgency == 2
    assert draft.patient_birth_date == date(1950, 1, 2)
    assert draft.body == "Prefers mornings.\n\nCallback number: +1 555 014 2288 ext 12"
    assert draft.source_system == "front-desk"
    assert draft.metadata == {
        "entered_by": "maria",
        "callback_number": "+1 555 014 2288 ext 12",
        "chosen_task_type": "callback_request",
    }


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (b"{not json", {"non_field_errors"}),
        (b'["a list"]', {"non_field_errors"}),
        (b"\xff\xfe", {"non_field_errors"}),
        (form_payload(subject=""), {"subject"}),
        (form_payload(channel="email"), {"channel"}),
        (
            form_payload(task_type="prior_auth_request"),
            {"patient_mrn", "payer", "referring_provider"},
        ),
        (form_payload(task_type="retired_type"), {"task_type"}),
        (form_payload(urgency=7), {"urgency"}),
        (form_payload(urgency="1"), {"urgency"}),
        (form_payload(patient_birth_date="1984-13-01"), {"patient_birth_date"}),
        (form_payload(patient_birth_date="1850-01-01"), {"patient_birth_date"}),
        (form_payload(patient_name=["not", "text"]), {"patient_name"}),
        (form_payload(subject="x" * 301), {"subject"}),
        (form_payload(site_id=999999), {"site_id"}),
        (form_payload(submission_id="not-a-uuid"), {"submission_id"}),
    ],
)
def test_the_adapter_names_every_field_to_fix(clinic, payload, errors):
    with pytest.raises(IntakeError) as raised:
        parse(payload)

    assert set(raised.value.errors) == errors
    assert all(messages for messages in raised.value.errors.values())


def test_the_types_needs_read_naturally():
    from queues.intake.form import _a

    assert _a("Prior authorization request") == "A prior authorization request"
    assert _a("Eligibility verification") == "An eligibility verification"
    assert _a("CT scan request").endswith("CT scan request")


def test_a_new_person_without_a_department_queue_is_refused(client, clinic):
    newcomer = person("nina")
    client.force_login(newcomer)

    assert client.get(NEW).status_code == 403
