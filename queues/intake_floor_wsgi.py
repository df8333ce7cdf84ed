"""The floor under `POST /api/v1/intake/`, for `make bench` only: a bare WSGI application
served by the same gunicorn that runs only what any intake must, on plain psycopg, with
nothing decided and no Django in the request: find the client by its token's hash, keep the
raw payload (committed before anything reads it), read the staff routing chooses from, and
write the task, its timeline and the payload's link in one statement (a copy of a task the
product wrote). What `intake_api_16_clients` measures can be read against it.

Configured by the scenario through the environment: FLOOR_DSN, FLOOR_SQL (the statements,
JSON) and FLOOR_TEMPLATE (the task, payload and queue copied, JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import psycopg

_local = threading.local()


def _settings() -> tuple[str, dict, dict]:
    return (
        os.environ["FLOOR_DSN"],
        json.loads(os.environ["FLOOR_SQL"]),
        json.loads(os.environ["FLOOR_TEMPLATE"]),
    )


DSN, SQL, TEMPLATE = _settings() if "FLOOR_DSN" in os.environ else ("", {}, {})


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg.connect(DSN, autocommit=True, prepare_threshold=0)
    return conn


def _answer(start_response, status: str, body: bytes):
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def application(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        return _answer(start_response, "200 OK", b"{}")
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = json.loads(raw)
    token = environ.get("HTTP_AUTHORIZATION", "").split()[-1:] or [""]
    cursor = _connection().cursor()
    cursor.execute(SQL["client"], [hashlib.sha256(token[0].encode()).hexdigest()])
    if cursor.fetchone() is None:
        return _answer(start_response, "401 Unauthorized", b"{}")
    cursor.execute(
        SQL["inbound"],
        {"payload": raw, "external_id": body["external_id"], "template": TEMPLATE["inbound"]},
    )
    (inbound_id,) = cursor.fetchone()
    patient = (body.get("patient") or {}).get("mrn", "")
    cursor.execute(SQL["candidates"], {"patient": patient, "queue_id": TEMPLATE["queue"]})
    cursor.fetchall()
    cursor.execute(
        SQL["write"],
        {
            "external_id": body["external_id"],
            "patient": patient,
            "template": TEMPLATE["task"],
            "inbound": inbound_id,
        },
    )
    (task_id,) = cursor.fetchone()
    return _answer(start_response, "201 Created", json.dumps({"id": task_id}).encode())
