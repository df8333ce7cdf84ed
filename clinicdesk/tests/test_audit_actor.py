"""The actor of django-auditlog's field diffs, named through one receiver connected at start-up
(clinicdesk.audit.actor) instead of a receiver connected and disconnected per request."""

from __future__ import annotations

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.db.models.signals import pre_save
from django.urls import reverse

from accounts.tests.factories import UserFactory
from clinicdesk.audit.actor import audit_context
from queues.tests.factories import TaskTypeFactory

pytestmark = pytest.mark.django_db


def _rename(task_type, name: str) -> LogEntry:
    task_type.name = name
    task_type.save()
    return LogEntry.objects.get_for_object(task_type).order_by("-id").first()


def test_nested_contexts_name_the_inner_actor_then_the_outer_again():
    outer, inner = UserFactory(username="olga"), UserFactory(username="ivan")
    task_type = TaskTypeFactory(code="records_request")

    with audit_context({"actor": outer, "remote_addr": "10.0.0.1"}):
        with audit_context({"actor": inner, "remote_addr": "10.0.0.2"}):
            during = _rename(task_type, "Records request (inner)")
        after = _rename(task_type, "Records request (outer)")
    outside = _rename(task_type, "Records request")

    assert (during.actor, during.remote_addr) == (inner, "10.0.0.2")
    assert (after.actor, after.remote_addr) == (outer, "10.0.0.1")
    assert outside.actor is None and outside.remote_addr is None


def test_a_value_auditlogs_own_set_actor_left_behind_names_nobody_later():
    task_type = TaskTypeFactory(code="referral")
    with set_actor(UserFactory(username="gone")):
        pass  # auditlog leaves its context value set when the block ends

    entry = _rename(task_type, "Referral packet")

    assert entry.actor is None


def test_a_request_connects_no_receiver(client):
    """(Who acted in a request is in test_audit_records: the admin edit names the manager.)"""
    manager = UserFactory(username="robert", roles=["Manager"], is_staff=True)
    client.force_login(manager)
    receivers_before = len(pre_save.receivers)
    connected = []

    def spy(*args, **kwargs):  # would see every connect made while the request runs
        connected.append(kwargs)

    original = pre_save.connect
    pre_save.connect = lambda *args, **kwargs: spy(*args, **kwargs) or original(*args, **kwargs)
    try:
        response = client.get(reverse("admin:index"))
    finally:
        pre_save.connect = original

    assert response.status_code == 200
    assert connected == []
    assert len(pre_save.receivers) == receivers_before
