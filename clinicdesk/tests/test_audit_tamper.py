"""The audit trail is append-only at the database and tamper-evident: sealed rows are
hash-chained and `verify_audit` names the first broken link.

The application's own connection is the one these tests use. On the embedded server it is
also the superuser, which is how the tampering tests get past the triggers: they switch the
session to `session_replication_role = replica`, which skips ordinary triggers, as an
attacker with the server's superuser would. The sealing tests are transactional, because only
committed rows of finished transactions are sealed.
"""

from __future__ import annotations

import threading

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError

from clinicdesk.audit.chain import audit_seal, audit_verify
from clinicdesk.audit.models import AuditEvent, AuditLink, AuditSeal
from clinicdesk.audit.records import audit_event_record, record_task_access
from queues import services as queues_services
from queues.models import TaskEvent
from queues.tests.factories import TaskFactory

APPEND_ONLY_TABLES = [
    "queues_taskevent",
    "auditlog_logentry",
    "clinicdesk_auditevent",
    "clinicdesk_auditseal",
    "clinicdesk_auditlink",
]


def _timeline(events: int = 3):
    task = TaskFactory()
    for n in range(events):
        queues_services.task_comment(task_id=task.pk, actor="system:test", text=f"Note {n}")
    return task


def _as_superuser_without_triggers(sql: str, params=()) -> None:
    """Run the statements (separated by `;`) with the triggers off, as a superuser can."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for statement in filter(str.strip, sql.split(";")):
            cursor.execute(statement, params)


def _refused(sql: str, params=()) -> str:
    with (
        pytest.raises(DatabaseError) as refused,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # The test's own inserts leave foreign-key checks pending, and PostgreSQL refuses a
        # TRUNCATE before any trigger while they are: run them first.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql, params)
    return str(refused.value)


# --- Append-only -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_update_delete_and_truncate_are_refused_with_the_applications_role(table):
    task = _timeline(1)
    record_task_access("system:test", task, via="page")
    audit_event_record(kind=AuditEvent.Kind.LOGIN, actor="system:test")
    if table.startswith("clinicdesk_audit") and table != "clinicdesk_auditevent":
        # Seals need finished transactions; a hand-made one is enough to try to change.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO clinicdesk_auditseal (id, source, sealed_at, xid_from, xid_to, "
                "row_count, head_hash, prev_seal_hash, seal_hash) "
                "VALUES (1, 'taskevent', now(), 0, 1, 1, '\\x00', '\\x00', '\\x00')"
            )
            cursor.execute(
                "INSERT INTO clinicdesk_auditlink (seal_id, source, row_id, row_hash, "
                "chain_hash) VALUES (1, 'taskevent', 1, '\\x00', '\\x00')"
            )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        rows = cursor.fetchone()[0]
    assert rows >= 1

    assert "append-only" in _refused(f"UPDATE {table} SET id = id")
    assert "append-only" in _refused(f"DELETE FROM {table}")
    assert "append-only" in _refused(f"TRUNCATE {table} CASCADE")

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone()[0] == rows


@pytest.mark.django_db
def test_the_orm_cannot_change_or_delete_a_timeline_event_either():
    event = _timeline(1).events.first()
    event.reason = "rewritten"
    with pytest.raises(DatabaseError), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        TaskEvent.objects.filter(pk=event.pk).delete()
    event.refresh_from_db()
    assert event.reason == "Note 0"


@pytest.mark.django_db
def test_every_row_is_stamped_with_the_hash_of_its_content_when_written():
    task = _timeline(1)
    record_task_access("system:test", task, via="page")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT audit_hash = clinicdesk_hash_taskevent(t), length(audit_hash) "
            "FROM queues_taskevent t WHERE task_id = %s",
            [task.pk],
        )
        assert cursor.fetchall() == [(True, 32)]
        cursor.execute(
            "SELECT bool_and(audit_hash = clinicdesk_hash_logentry(g)) FROM auditlog_logentry g"
        )
        assert cursor.fetchone() == (True,)


# --- The chain -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_untouched_trail_verifies_and_sealing_twice_seals_nothing_new():
    task = _timeline(3)
    record_task_access("system:test", task, via="page")
    audit_event_record(kind=AuditEvent.Kind.LOGIN, actor="system:test")
    changes = LogEntry.objects.count()  # the factories' rows, and the read

    result = audit_verify()

    assert result.ok, result.breaks
    expected = {"taskevent": 3, "logentry": changes, "auditevent": 1}
    assert {s.source: s.rows for s in result.sealed} == expected
    assert result.checked == expected
    assert [s.rows for s in audit_seal()] == [0, 0, 0]
    assert AuditSeal.objects.count() == 3
    assert AuditLink.objects.count() == 4 + changes


@pytest.mark.django_db(transaction=True)
def test_an_edited_row_is_the_first_broken_link():
    task = _timeline(3)
    _, second, _ = task.events.order_by("id")
    audit_seal()

    _as_superuser_without_triggers(
        "UPDATE queues_taskevent SET reason = 'Nothing to see' WHERE id = %s", [second.pk]
    )
    result = audit_verify()

    assert not result.ok
    (problem,) = result.breaks
    assert (problem.source, problem.row_id) == ("taskevent", second.pk)
    assert "edited after it was sealed" in problem.problem


@pytest.mark.django_db(transaction=True)
def test_an_edit_that_also_rewrites_the_rows_own_hash_is_caught_by_the_chain():
    task = _timeline(2)
    first, _ = task.events.order_by("id")
    audit_seal()

    _as_superuser_without_triggers(
        "UPDATE queues_taskevent SET reason = 'Forged' WHERE id = %(id)s;"
        "UPDATE queues_taskevent t SET audit_hash = clinicdesk_hash_taskevent(t) "
        "WHERE id = %(id)s;",
        {"id": first.pk},
    )
    result = audit_verify()

    (problem,) = result.breaks
    assert problem.row_id == first.pk
    assert "edited" in problem.problem


@pytest.mark.django_db(transaction=True)
def test_a_deleted_row_is_the_first_broken_link():
    task = _timeline(3)
    _, second, _ = task.events.order_by("id")
    audit_seal()

    _as_superuser_without_triggers("DELETE FROM queues_taskevent WHERE id = %s", [second.pk])
    result = audit_verify()

    (problem,) = result.breaks
    assert (problem.source, problem.row_id) == ("taskevent", second.pk)
    assert problem.problem == "the row was deleted"


@pytest.mark.django_db(transaction=True)
def test_reordered_rows_are_the_first_broken_link():
    task = _timeline(3)
    first, _, third = task.events.order_by("id")
    audit_seal()

    # Swap the first and the third event, hashes and all: the timeline now reads backwards.
    _as_superuser_without_triggers(
        "UPDATE queues_taskevent SET id = -id WHERE id = %(a)s;"
        "UPDATE queues_taskevent SET id = %(a)s WHERE id = %(b)s;"
        "UPDATE queues_taskevent SET id = %(b)s WHERE id = -%(a)s;",
        {"a": first.pk, "b": third.pk},
    )
    result = audit_verify()

    (problem,) = result.breaks
    assert (problem.source, problem.row_id) == ("taskevent", first.pk)
    assert f"reordered: it holds what was sealed as row {third.pk}" in problem.problem


@pytest.mark.django_db(transaction=True)
def test_an_edited_access_record_and_a_removed_seal_are_caught():
    task = _timeline(1)
    record_task_access("system:test", task, via="page")
    audit_seal()
    _timeline(1)
    audit_seal()  # a second seal of the timeline

    _as_superuser_without_triggers(
        "UPDATE auditlog_logentry SET actor_id = NULL, additional_data = '{}'"
    )
    _as_superuser_without_triggers(
        "DELETE FROM clinicdesk_auditlink WHERE seal_id = (SELECT max(id) FROM "
        "clinicdesk_auditseal WHERE source = 'taskevent');"
        "DELETE FROM clinicdesk_auditseal WHERE id = (SELECT max(id) FROM "
        "clinicdesk_auditseal WHERE source = 'taskevent')"
    )
    result = audit_verify(seal=False)

    problems = {p.source: p for p in result.breaks}
    assert "edited after it was sealed" in problems["logentry"].problem
    assert "seal" in str(result.breaks[0])


@pytest.mark.django_db(transaction=True)
def test_a_row_edited_before_it_was_sealed_is_caught_by_its_own_hash():
    task = _timeline(1)
    event = task.events.get()
    _as_superuser_without_triggers(
        "UPDATE queues_taskevent SET actor_label = 'someone:else' WHERE id = %s", [event.pk]
    )

    result = audit_verify(seal=False)

    (problem,) = result.breaks
    assert (problem.source, problem.row_id) == ("taskevent", event.pk)
    assert "edited after it was written" in problem.problem


@pytest.mark.django_db(transaction=True)
def test_the_command_reports_the_broken_link_and_fails(capsys):
    task = _timeline(2)
    call_command("verify_audit")
    assert "The audit trail verifies" in capsys.readouterr().out

    _as_superuser_without_triggers(
        "DELETE FROM queues_taskevent WHERE id = %s", [task.events.order_by("id").first().pk]
    )
    with pytest.raises(CommandError, match="does not verify"):
        call_command("verify_audit")
    assert "row was deleted" in capsys.readouterr().err


@pytest.mark.django_db(transaction=True)
def test_a_row_committed_late_out_of_id_order_is_sealed_once_in_a_later_seal():
    """Inserters never wait for the chain: a transaction that took a lower id but commits
    after others is not skipped; the seal waits for it, and then takes it."""
    task, other = _timeline(0), _timeline(0)
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()
    late_id = []

    def slow_writer():
        try:
            with transaction.atomic():
                queues_services.task_comment(task_id=task.pk, actor="system:slow", text="late")
                late_id.append(TaskEvent.objects.filter(reason="late").get().pk)
                inserted.set()
                release.wait(10)
        finally:
            connections["default"].close()
            done.set()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(10)
    queues_services.task_comment(task_id=other.pk, actor="system:fast", text="early")
    early = TaskEvent.objects.get(reason="early")
    assert early.pk > late_id[0]

    # The slow transaction is still open: nothing at or after its start may be sealed yet.
    sealed = {s.source: s.rows for s in audit_seal()}
    assert sealed["taskevent"] == 0
    release.set()
    assert done.wait(10)
    writer.join()

    result = audit_verify()

    assert result.ok, result.breaks
    assert result.checked["taskevent"] == 2
    links = list(AuditLink.objects.filter(source="taskevent").values_list("row_id", flat=True))
    assert sorted(links) == sorted([late_id[0], early.pk])
