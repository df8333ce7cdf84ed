"""The OpenAPI schema is accurate: schemathesis generates requests from `/api/schema/` and
sends them to the app in-process (WSGI); no answer is a server error, and every answer has a
status code, content type and body that the schema documents."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from queues.tests.test_api_intake import make_client
from queues.tests.test_task_page import build_clinic, submit

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation: the read endpoints and intake most; every action a few.
EXAMPLES = {
    "POST /api/v1/intake/": 150,
    "GET /api/v1/tasks/": 60,
    "GET /api/v1/tasks/{task_id}/": 30,
    "GET /api/v1/queues/": 5,
}
ACTION_EXAMPLES = 10


@pytest.fixture
def in_process_wsgi():
    """Keep the test's connection open across WSGI calls, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_the_schema_documents_what_the_api_answers(in_process_wsgi):
    clinic = build_clinic()
    for n in range(3):
        submit(f"Claim denied #{n}")
    _, token = make_client(
        "fuzzer",
        channels=["api", "phone", "fax", "portal"],
        departments=[clinic["billing_queue"].department],
    )
    schema = schemathesis.openapi.from_wsgi("/api/schema/", in_process_wsgi)
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if operation.path.startswith("/api/v1/inbound/"):
            continue  # the signed webhooks (FHIR, email) have their own tests

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES.get(label, ACTION_EXAMPLES),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            response = case.call(headers={"Authorization": f"Token {token}"})
            case.validate_response(response, checks=CHECKS)

        check()
        tested.append(label)
    assert set(EXAMPLES) < set(tested)
    assert len(tested) == len(EXAMPLES) + 10  # nine actions and Next task


def test_the_schema_and_docs_are_served(db):
    client = APIClient()
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["clientToken"]["name"] == "Authorization"
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["errors"]["type"] == "object"
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/docs/redoc/").status_code == 200
