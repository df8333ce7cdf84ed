"""`manage.py create_integration_client`: the token and secret are printed once and work; only
their hashes are stored; bad input names the flag and the fix."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.tests.factories import DepartmentFactory
from queues.intake import credentials
from queues.models import IntegrationClient

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("create_integration_client", *args, stdout=out)
    return out.getvalue()


def test_creates_a_client_and_prints_its_credentials_once():
    billing = DepartmentFactory(code="billing")
    output = run("ehr", "--channels", "api,fhir,phone", "--departments", "billing",
                 "--description", "Epic at Main Street")  # fmt: skip
    token = re.search(r"API token:\s+(\S+)", output).group(1)
    secret = re.search(r"Signing secret:\s+(\S+)", output).group(1)
    assert "shown only this once" in output
    client = IntegrationClient.objects.get(name="ehr")
    assert client.channels == ["api", "fhir", "phone"]
    assert client.description == "Epic at Main Street"
    assert list(client.user.groups.all()) == [billing.group]
    # Only hashes are kept, and they verify what was printed.
    assert token not in str(client.__dict__) and secret not in str(client.__dict__)
    assert client.token_hash == credentials.token_hash(token)
    body = b'{"resourceType": "Task"}'
    signature = credentials.sign(credentials.hashlib.sha256(secret.encode()).digest(), 1, body)
    assert signature == credentials.sign(bytes(client.signing_key), 1, body)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/queues/").status_code == 200


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ehr", "--channels", "api,pigeon"], "--channels: Unknown channel pigeon: use"),
        (["ehr", "--channels", ","], "--channels: Give at least one channel"),
        (["ehr", "--channels", "api", "--departments", "nowhere"], "--departments: no department"),
        (["Main EHR", "--channels", "api"], "NAME 'Main EHR' must be a slug"),
        (["ehr", "--channels", "api", "--description", "x" * 201], "--description"),
    ],
)
def test_bad_input_names_the_flag_and_the_fix(args, says):
    with pytest.raises(CommandError, match=re.escape(says)):
        run(*args)
    assert not IntegrationClient.objects.exists()


def test_a_name_already_taken_is_refused():
    run("ehr", "--channels", "api")
    with pytest.raises(CommandError, match="NAME: A client named 'ehr' exists"):
        run("ehr", "--channels", "fhir")
