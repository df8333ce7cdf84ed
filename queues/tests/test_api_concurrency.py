"""Twenty resends of one request, at the same moment, each on its own database connection:
exactly one task, and every answer carries its id (one 201, the others 200)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from queues.models import InboundMessage, Task
from queues.tests.test_api_intake import make_client, payload
from queues.tests.test_task_page import build_clinic

SENDERS = 20


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_resends_make_one_task():
    build_clinic()
    _, token = make_client()
    barrier = threading.Barrier(SENDERS)
    answers: list[tuple[int, dict]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
            connection.ensure_connection()  # connect first, so that the posts really race
            barrier.wait(timeout=30)
            response = client.post("/api/v1/intake/", payload(), format="json")
            with lock:
                answers.append((response.status_code, response.json()))
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not failures, failures
    task = Task.objects.get(channel="api", external_id="msg-1001")
    assert sorted(code for code, _ in answers) == [200] * (SENDERS - 1) + [201]
    assert {body["id"] for _, body in answers} == {task.pk}
    outcomes = InboundMessage.objects.values_list("status", flat=True)
    assert sorted(outcomes) == ["parsed"] + ["resent"] * (SENDERS - 1)
