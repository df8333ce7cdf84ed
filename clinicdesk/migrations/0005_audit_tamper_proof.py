"""Make the audit trail tamper-evident at the database (see docs/decisions.md, "Audit trail:
append-only tables, a content hash on insert and a chain built by sealing").

Every audited table (the task timeline, auditlog's entries, our AuditEvent) gets two columns
that Django does not map, filled by a BEFORE INSERT trigger:

- `audit_hash`: sha256 of the row's content, fixed when the row is written;
- `audit_xid`: the inserting transaction's id, so that the sealing job can tell which rows
  are final (their transaction ended) whatever order transactions commit in.

Triggers refuse UPDATE, DELETE and TRUNCATE on all of them and on the seal tables. The hash
functions take the table's row type and name every column they cover, so that a column added
later does not change the hash of rows written before it.
"""

from django.db import migrations

# One canonical text per row: a JSON array in a fixed column order. Times are hashed as epoch
# seconds (with microseconds), which no session time zone can change; jsonb prints itself
# canonically.
FUNCTIONS = r"""
CREATE FUNCTION clinicdesk_audit_digest(parts jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(parts::text, 'UTF8'))
$$;

CREATE FUNCTION clinicdesk_hash_taskevent(r queues_taskevent) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT clinicdesk_audit_digest(jsonb_build_array(
        r.id, r.task_id, extract(epoch FROM r.created_at), r.kind, r.actor_id, r.actor_label,
        r.from_queue_id, r.to_queue_id, r.from_user_id, r.to_user_id, r.rule_id,
        r.rule_set_version, r.reason, r.explanation))
$$;

CREATE FUNCTION clinicdesk_hash_logentry(r auditlog_logentry) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT clinicdesk_audit_digest(jsonb_build_array(
        r.id, r.content_type_id, r.object_pk, r.object_id, r.object_repr, r.serialized_data,
        r.action, r.changes_text, r.changes, r.actor_id, r.cid, host(r.remote_addr),
        r.remote_port, extract(epoch FROM r.timestamp), r.additional_data, r.actor_email))
$$;

CREATE FUNCTION clinicdesk_hash_auditevent(r clinicdesk_auditevent) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT clinicdesk_audit_digest(jsonb_build_array(
        r.id, extract(epoch FROM r.at), r.kind, r.user_id, r.actor_label, host(r.ip),
        r.method, r.path, r.status_code, r.detail))
$$;

-- The chain: each link's hash is sha256(previous link's hash || the row's hash). As an
-- aggregate it runs as a window over rows in chain order, in one statement.
CREATE FUNCTION clinicdesk_chain_step(state bytea, row_hash bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IS NULL THEN row_hash
                ELSE sha256(state || coalesce(row_hash, ''::bytea)) END
$$;
CREATE AGGREGATE clinicdesk_chain(bytea) (SFUNC = clinicdesk_chain_step, STYPE = bytea);

CREATE FUNCTION clinicdesk_seal_hash(s clinicdesk_auditseal) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(s.prev_seal_hash || clinicdesk_audit_digest(jsonb_build_array(
        s.id, s.source, s.xid_from, s.xid_to, s.row_count, encode(s.head_hash, 'hex'))))
$$;
"""

STAMP = r"""
CREATE FUNCTION clinicdesk_stamp_{name}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.audit_xid := pg_current_xact_id()::text::bigint;
    NEW.audit_hash := clinicdesk_hash_{name}(NEW);
    RETURN NEW;
END;
$$;
"""

# Existing rows (an upgraded database) are hashed once and belong to no transaction that
# could still be running (xid 0), so the first seal takes them all.
COLUMNS = r"""
ALTER TABLE {table} ADD COLUMN audit_hash bytea, ADD COLUMN audit_xid bigint;
UPDATE {table} t SET audit_hash = clinicdesk_hash_{name}(t), audit_xid = 0;
ALTER TABLE {table} ALTER COLUMN audit_hash SET NOT NULL, ALTER COLUMN audit_xid SET NOT NULL;
CREATE TRIGGER {name}_audit_stamp BEFORE INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION clinicdesk_stamp_{name}();
-- Only the sealing job reads by xid: a BRIN index costs inserts nearly nothing.
CREATE INDEX {name}_audit_xid ON {table} USING brin (audit_xid);
"""

APPEND_ONLY = r"""
CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION clinicdesk_refuse_change();
"""
NO_TRUNCATE = r"""
CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION clinicdesk_refuse_change();
"""

HASHED = {
    "taskevent": "queues_taskevent",
    "logentry": "auditlog_logentry",
    "auditevent": "clinicdesk_auditevent",
}

FORWARD = "\n".join(
    [
        FUNCTIONS,
        *(STAMP.format(name=name) for name in HASHED),
        # The timeline's UPDATE/DELETE trigger (queues 0002) refuses the backfill: lift it
        # for this transaction only.
        "ALTER TABLE queues_taskevent DISABLE TRIGGER taskevent_append_only;",
        *(COLUMNS.format(name=name, table=table) for name, table in HASHED.items()),
        "ALTER TABLE queues_taskevent ENABLE TRIGGER taskevent_append_only;",
        NO_TRUNCATE.format(name="taskevent", table="queues_taskevent"),
        *(
            APPEND_ONLY.format(name=name, table=table) + NO_TRUNCATE.format(name=name, table=table)
            for name, table in [
                ("logentry", "auditlog_logentry"),
                ("auditevent", "clinicdesk_auditevent"),
                ("auditseal", "clinicdesk_auditseal"),
                ("auditlink", "clinicdesk_auditlink"),
            ]
        ),
        # The audit search reads the timeline by time across all tasks, newest first.
        "CREATE INDEX taskevent_audit_time ON queues_taskevent (created_at, id);",
        # A rule's history: the tasks it routed.
        "CREATE INDEX taskevent_audit_rule ON queues_taskevent (rule_id, created_at, id) "
        "WHERE rule_id IS NOT NULL;",
    ]
)

REVERSE = "\n".join(
    [
        "DROP INDEX IF EXISTS taskevent_audit_rule;",
        "DROP INDEX IF EXISTS taskevent_audit_time;",
        *(
            f"DROP TRIGGER IF EXISTS {name}_append_only ON {table};"
            f"DROP TRIGGER IF EXISTS {name}_no_truncate ON {table};"
            for name, table in [
                ("logentry", "auditlog_logentry"),
                ("auditevent", "clinicdesk_auditevent"),
                ("auditseal", "clinicdesk_auditseal"),
                ("auditlink", "clinicdesk_auditlink"),
            ]
        ),
        "DROP TRIGGER IF EXISTS taskevent_no_truncate ON queues_taskevent;",
        *(
            f"DROP TRIGGER IF EXISTS {name}_audit_stamp ON {table};"
            f"ALTER TABLE {table} DROP COLUMN IF EXISTS audit_hash, "
            f"DROP COLUMN IF EXISTS audit_xid;"
            f"DROP FUNCTION IF EXISTS clinicdesk_stamp_{name}();"
            f"DROP FUNCTION IF EXISTS clinicdesk_hash_{name}({table});"
            for name, table in HASHED.items()
        ),
        "DROP FUNCTION IF EXISTS clinicdesk_seal_hash(clinicdesk_auditseal);",
        "DROP AGGREGATE IF EXISTS clinicdesk_chain(bytea);",
        "DROP FUNCTION IF EXISTS clinicdesk_chain_step(bytea, bytea);",
        "DROP FUNCTION IF EXISTS clinicdesk_audit_digest(jsonb);",
    ]
)


class Migration(migrations.Migration):
    dependencies = [
        ("clinicdesk", "0004_audit_tables"),
        # clinicdesk_refuse_change() and the timeline's UPDATE/DELETE trigger.
        ("queues", "0002_taskevent_append_only"),
        ("queues", "0006_task_sla_version_db_default"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
