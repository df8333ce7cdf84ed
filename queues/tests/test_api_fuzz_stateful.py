"""The API followed from answer to answer: schemathesis walks the schema's OpenAPI links (intake →
the task → its actions → …) against the running server over HTTP, as an integration client
and as a signed-in person, and every answer is documented: no server error, and a status
code, content type and body that the schema describes."""

from __future__ import annotations

import pytest
import schemathesis
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, Phase, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import Bundle, get_state_machine_test, rule
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.stateful.state_machine import StepInput

from queues.api.serializers import ACTION_SERIALIZERS
from queues.tests.test_api_intake import make_client
from queues.tests.test_task_page import build_clinic, submit

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A fixed CSRF secret, sent as the cookie and the header, as a browser's script would.
CSRF = "stateful0fuzzing0csrf0secret0032"
SCENARIOS = 25
SETTINGS = dict(
    # Generation only, as schemathesis runs its state machines: the server's state moves on
    # with every call, so a scenario replayed (to shrink it) would not meet the same answers.
    phases=[Phase.generate],
    stateful_step_count=8,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# Requests the clinic's rules route to Billing, whose tasks the client may see, or to Needs
# review, which it may not (a 404 when a walk follows the link); a resend of one of them (the
# same external id) answers 200 with the same task.
REQUESTS = st.fixed_dictionaries(
    {
        "channel": st.just("api"),
        "external_id": st.sampled_from(["walk-1", "walk-2"]) | st.uuids().map(str),
        "subject": st.sampled_from(
            ["Claim denied for the March visit", "Claim denied, we want to appeal", "Hello"]
        ),
        "patient": st.fixed_dictionaries({"mrn": st.sampled_from(["MRN-1", "MRN-2"])}),
    }
)


def state_machine(base_url: str, *, headers=None, cookies=None, intake: bool = True):
    """The schema's links as a state machine, every call made with the caller's credentials
    and checked with the conformance checks only. Walks start at intake (when the caller may
    submit), the task list and Next task; the actions on a task id drawn at random (a 404)
    are left to the stateless test of the schema, so that the walks follow real tasks."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json").exclude(
        path_regex="^/api/v1/inbound/"  # the signed webhooks (FHIR, email) have their own tests
    )
    operation = schema["/api/v1/intake/"]["POST"]
    # Intake starts a walk. schemathesis reads its `external_id` as a reference to a resource
    # that nothing produces, and so does not start walks there by itself.
    requests = operation.as_strategy(media_type="application/json") | REQUESTS.flatmap(
        lambda body: operation.as_strategy(body=body, media_type="application/json")
    )
    machine = schema.as_state_machine()
    members = {name: None for name in machine.root_rules if "_task_id_" in name}
    if intake:

        @rule(target=Bundle("intake"), case=requests)
        def submit(self, case):
            # The answer lands in the bundles of intake's links, as any other step's.
            self.recorder.record_case(case=case)
            return self.step(StepInput.initial(case))

        members["submit"] = submit

    class Walk(machine):
        scenarios = 0

        def teardown(self):
            type(self).scenarios += 1
            super().teardown()

        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": headers or {}, "cookies": cookies or {}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    for name, value in members.items():
        setattr(Walk, name, value)
    return Walk


def walk(machine) -> None:
    """Run `SCENARIOS` scenarios. Hypothesis stops a run when a scenario's draws differ from
    an earlier one's with the same start (the server answered otherwise the second time): the
    walk then goes on with the next seed, as schemathesis' own runner does. Check failures
    are raised as they are."""
    for attempt in range(5):
        remaining = SCENARIOS - machine.scenarios
        if remaining <= 0:
            return
        test = get_state_machine_test(
            machine, settings=hypothesis_settings(max_examples=remaining, **SETTINGS), _min_steps=2
        )
        try:
            seed(attempt)(test)()
        except FlakyStrategyDefinition:
            continue
    assert machine.scenarios >= SCENARIOS // 2, f"only {machine.scenarios} scenarios ran"


@pytest.fixture
def clinic():
    clinic = build_clinic()
    for n in range(3):
        submit(f"Claim denied #{n}")
    submit("Claim denied, we want to appeal")
    return clinic


def test_links_followed_as_an_integration_client_answer_as_documented(live_server, clinic):
    _, token = make_client(
        "walker",
        channels=["api", "phone", "fax", "portal"],
        departments=[clinic["billing_queue"].department],
    )
    walk(state_machine(live_server.url, headers={"Authorization": f"Token {token}"}))


def test_links_followed_as_a_signed_in_person_answer_as_documented(live_server, clinic):
    browser = Client()
    browser.force_login(clinic["alice"])
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    walk(
        state_machine(
            live_server.url,
            headers={"X-CSRFToken": CSRF, "Referer": live_server.url},
            cookies={settings.SESSION_COOKIE_NAME: session, settings.CSRF_COOKIE_NAME: CSRF},
            intake=False,  # staff log requests with the front-desk form
        )
    )


@pytest.mark.django_db
def test_the_schema_links_each_answer_naming_a_task_to_the_calls_on_it():
    document = Client().get("/api/schema/?format=json").json()
    created = document["paths"]["/api/v1/intake/"]["post"]["responses"]["201"]["links"]
    assert created["GetTask"] == {
        "operationId": "tasks_retrieve",
        "parameters": {"task_id": "$response.body#/id"},
        "description": "The task of this answer: `tasks_retrieve`.",
    }
    listed = document["paths"]["/api/v1/tasks/"]["get"]["responses"]["200"]["links"]
    assert listed["Resolve"]["parameters"] == {"task_id": "$response.body#/results/0/id"}
    held = document["paths"]["/api/v1/tasks/{task_id}/hold/"]["post"]["responses"]["200"]
    assert set(held["links"]) == {"GetTask", *map(str.capitalize, ACTION_SERIALIZERS)}
