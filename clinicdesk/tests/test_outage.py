"""With its database unreachable, the real application behind gunicorn answers 503 with
Retry-After: the standalone page for people, a JSON body for the API, the inbound webhooks and
the health check; never a 500 page or a trace, and one WARNING line per request in the log.

The server is started against a port where nothing listens (connection refused): the same
errors psycopg raises while PostgreSQL restarts. The restart itself (time to recover, nothing
acknowledged lost) is `make chaos`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest
from django.conf import settings

WEB_PORT = 8122
DEAD_DATABASE_PORT = 8123
TOKEN = "Token not-checked-the-database-is-down"


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (_port_is_free(WEB_PORT) and _port_is_free(DEAD_DATABASE_PORT)):
        pytest.skip(f"ports {WEB_PORT} and {DEAD_DATABASE_PORT} must be free on 127.0.0.1")
    log = tmp_path_factory.mktemp("outage") / "gunicorn.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": f"postgresql://clinicdesk@127.0.0.1:{DEAD_DATABASE_PORT}/clinicdesk",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "LOG_LEVEL": "INFO",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "clinicdesk.wsgi:application",
        f"--bind=127.0.0.1:{WEB_PORT}",
        "--workers=1",
        "--log-level=warning",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            try:  # the master listens before its worker has loaded the application
                _request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _request(method: str, path: str, *, body: bytes = b"", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", WEB_PORT, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def _assert_no_trace(body: str) -> None:
    for leak in ("Traceback", "OperationalError", "psycopg", "connection refused", "8123"):
        assert leak.lower() not in body.lower(), f"{leak!r} in the answer"


def test_signed_in_page_answers_the_unavailable_page(server):
    # The session cookie makes the idle-logoff middleware read the session, before any view.
    status, headers, body = _request(
        "GET", "/work/", headers={"Cookie": "sessionid=q3v9bk2m7x1c8z4n5w6e0r2t7y9u1i3o"}
    )

    assert status == 503
    assert headers["Retry-After"] == "30"
    assert headers["Content-Type"].startswith("text/html")
    assert "ClinicDesk is briefly unavailable" in body
    _assert_no_trace(body)


def test_api_intake_answers_json_that_tells_the_client_to_retry(server):
    payload = json.dumps({"channel": "api", "external_id": "outage-1", "subject": "Call back"})
    status, headers, body = _request(
        "POST",
        "/api/v1/intake/",
        body=payload.encode(),
        headers={"Authorization": TOKEN, "Content-Type": "application/json"},
    )

    assert status == 503
    assert headers["Retry-After"] == "30"
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["retry_after"] == 30
    assert "again" in answer["detail"]
    _assert_no_trace(body)


def test_inbound_webhook_and_health_check_answer_json_503(server):
    fhir = _request(
        "POST",
        "/api/v1/inbound/fhir/",
        body=b'{"resourceType": "Communication"}',
        headers={"Authorization": TOKEN, "Content-Type": "application/fhir+json"},
    )
    health = _request("GET", "/healthz")

    for status, headers, body in (fhir, health):
        assert status == 503
        assert headers["Retry-After"] == "30"
        assert json.loads(body)["retry_after"] == 30
        _assert_no_trace(body)


def test_outage_is_logged_once_per_request_without_trace_or_request_data(server):
    _request(
        "GET",
        "/work/?patient=Jane+Doe",
        headers={"Cookie": "sessionid=q3v9bk2m7x1c8z4n5w6e0r2t7y9u1i3o"},
    )
    time.sleep(0.3)  # the worker's log line reaches the file

    log = server.read_text()
    warnings = [line for line in log.splitlines() if "Database unavailable" in line]
    assert len(warnings) >= 4
    assert all(" WARNING clinicdesk.outage " in line for line in warnings)
    assert "Traceback" not in log
    assert "Internal Server Error" not in log
    assert "Service Unavailable" not in log
    assert "Jane" not in log
