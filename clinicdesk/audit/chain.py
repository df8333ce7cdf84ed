"""The hash chain over the append-only tables: sealing and verifying.

Inserting stays cheap and concurrent: a BEFORE INSERT trigger stamps each row with the
sha256 of its content and its transaction id (clinicdesk migration 0005); no inserting
transaction waits for another. Linking happens later, in `audit_seal`, run by a schedule and
by `verify_audit`: it takes the rows whose inserting transactions have all ended (transaction
id below the oldest one still running), appends them in id order to `AuditLink`, each link
carrying sha256(previous link's hash || the row's hash), and closes the batch with an
`AuditSeal` that chains to the seal before it. Rows that commit late, out of id order, are
simply in a later seal: every row falls in exactly one seal's transaction-id range.

`audit_verify` recomputes every row's content hash and the chain, in SQL (bounded memory
whatever the size), and reports the first broken link of each table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.db import connection, transaction

# source → (table, the SQL function hashing one of its rows)
SOURCES: dict[str, tuple[str, str]] = {
    "taskevent": ("queues_taskevent", "clinicdesk_hash_taskevent"),
    "logentry": ("auditlog_logentry", "clinicdesk_hash_logentry"),
    "auditevent": ("clinicdesk_auditevent", "clinicdesk_hash_auditevent"),
}
SOURCE_NAMES = {
    "taskevent": "task timeline",
    "logentry": "change and access log",
    "auditevent": "sign-in and denial log",
}
SEAL_LOCK = "clinicdesk.audit_seal"

# The oldest transaction of this database still running (its 64-bit id), or the next id to be
# handed out when none is: every transaction below it has ended. Only this database's
# transactions can write our rows, so a long transaction in another database on the same
# server (pg_snapshot_xmin would count it) does not hold sealing back. pg_stat_activity gives
# 32-bit ids; they are widened with the epoch of the snapshot's xmax. A session of another
# database role shows no xid to a role without pg_read_all_stats: were one to write audit
# rows, a row could miss its seal, and verify would then report it as behind the seal.
HORIZON = """
WITH snap AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
running AS (
    SELECT (snap.xmax & ~4294967295::bigint) | a.backend_xid::text::bigint AS xid, snap.xmax
    FROM snap JOIN pg_stat_activity a
      ON a.datname = current_database() AND a.backend_xid IS NOT NULL
)
SELECT least(
    (SELECT xmax FROM snap),
    (SELECT min(CASE WHEN xid > xmax THEN xid - 4294967296 ELSE xid END) FROM running)
)
"""


def genesis(source: str) -> bytes:
    """The hash a table's chain starts from."""
    return hashlib.sha256(f"clinicdesk audit chain: {source}".encode()).digest()


@dataclass(frozen=True)
class SealResult:
    source: str
    rows: int
    seal_id: int | None


@dataclass(frozen=True)
class Break:
    """The first broken link of one table's chain, in words."""

    source: str
    row_id: int | None
    problem: str
    seal_id: int | None = None

    def __str__(self) -> str:
        where = f"{SOURCE_NAMES.get(self.source, self.source)} ({SOURCES[self.source][0]})"
        row = f" row {self.row_id}" if self.row_id is not None else ""
        seal = f" (seal {self.seal_id})" if self.seal_id else ""
        return f"{where}{row}{seal}: {self.problem}"


@dataclass
class VerifyResult:
    sealed: list[SealResult] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    breaks: list[Break] = field(default_factory=list)
    head: bytes = b""

    @property
    def ok(self) -> bool:
        return not self.breaks


def audit_seal() -> list[SealResult]:
    """Link every final, not yet linked row of each audited table into the chain.

    One sealer at a time (an advisory lock); inserters never take it. Safe to run any time,
    as often as wanted: with nothing new it writes nothing.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # The horizon first, before this transaction writes anything (and so has no id of its
        # own): every transaction below it has ended, committed or not, so the rows stamped
        # below it are all visible now and no more can appear.
        cursor.execute(HORIZON)
        (horizon,) = cursor.fetchone()
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [SEAL_LOCK])
        return [_seal_source(cursor, source, horizon) for source in SOURCES]


def _seal_source(cursor, source: str, horizon: int) -> SealResult:
    table, _ = SOURCES[source]
    cursor.execute(
        "SELECT xid_to, head_hash FROM clinicdesk_auditseal WHERE source = %s "
        "ORDER BY id DESC LIMIT 1",
        [source],
    )
    last = cursor.fetchone()
    xid_from, prev_head = (last[0], bytes(last[1])) if last else (0, genesis(source))
    if horizon <= xid_from:
        return SealResult(source, 0, None)
    cursor.execute("SELECT nextval(pg_get_serial_sequence('clinicdesk_auditseal', 'id'))")
    (seal_id,) = cursor.fetchone()
    # The links first (the seal's foreign key is checked at commit), then the seal, which
    # needs the last link's hash: no row is ever updated.
    cursor.execute(
        f"""
        INSERT INTO clinicdesk_auditlink (seal_id, source, row_id, row_hash, chain_hash)
        SELECT %(seal)s, %(source)s, id, h, chain FROM (
            SELECT ord, id, h,
                   clinicdesk_chain(h) OVER (ORDER BY ord, id ROWS UNBOUNDED PRECEDING) AS chain
            FROM (
                SELECT 0 AS ord, NULL::bigint AS id, %(prev)s::bytea AS h
                UNION ALL
                SELECT 1, id, audit_hash FROM {table}
                WHERE audit_xid >= %(lo)s AND audit_xid < %(hi)s
            ) rows
        ) chained
        WHERE ord = 1
        ORDER BY id
        """,
        {"seal": seal_id, "source": source, "prev": prev_head, "lo": xid_from, "hi": horizon},
    )
    rows = cursor.rowcount
    if rows == 0:
        # Nothing new: no seal (the next one starts where the last one stopped).
        return SealResult(source, 0, None)
    cursor.execute(
        "SELECT chain_hash FROM clinicdesk_auditlink WHERE seal_id = %s ORDER BY id DESC LIMIT 1",
        [seal_id],
    )
    (head,) = cursor.fetchone()
    cursor.execute(
        """
        INSERT INTO clinicdesk_auditseal
            (id, source, sealed_at, xid_from, xid_to, row_count, head_hash, prev_seal_hash,
             seal_hash)
        SELECT s.id, s.source, s.sealed_at, s.xid_from, s.xid_to, s.row_count, s.head_hash,
               s.prev_seal_hash, clinicdesk_seal_hash(s)
        FROM (
            SELECT %(id)s::bigint AS id, %(source)s::varchar AS source, now() AS sealed_at,
                   %(lo)s::bigint AS xid_from, %(hi)s::bigint AS xid_to,
                   %(rows)s::integer AS row_count, %(head)s::bytea AS head_hash,
                   coalesce((SELECT seal_hash FROM clinicdesk_auditseal
                             ORDER BY id DESC LIMIT 1), %(genesis)s::bytea) AS prev_seal_hash,
                   NULL::bytea AS seal_hash
        ) s
        """,
        {
            "id": seal_id,
            "source": source,
            "lo": xid_from,
            "hi": horizon,
            "rows": rows,
            "head": bytes(head),
            "genesis": genesis("seals"),
        },
    )
    return SealResult(source, rows, seal_id)


def audit_verify(*, seal: bool = True) -> VerifyResult:
    """Seal what is final, then check the whole chain: the seals, every sealed row, and the
    rows not sealed yet. Read-only apart from the sealing."""
    result = VerifyResult()
    if seal:
        result.sealed = audit_seal()
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One snapshot for the whole walk, so that a seal committed meanwhile is either
            # wholly seen or not at all.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        seal_break = _verify_seals(cursor)
        if seal_break is not None:
            result.breaks.append(seal_break)
        for source in SOURCES:
            checked, problem = _verify_source(cursor, source)
            result.checked[source] = checked
            if problem is not None:
                result.breaks.append(problem)
        cursor.execute("SELECT seal_hash FROM clinicdesk_auditseal ORDER BY id DESC LIMIT 1")
        row = cursor.fetchone()
        result.head = bytes(row[0]) if row else genesis("seals")
    return result


def _verify_seals(cursor) -> Break | None:
    cursor.execute(
        """
        SELECT id, source, problem FROM (
            SELECT s.id, s.source,
                CASE
                    WHEN s.seal_hash IS DISTINCT FROM clinicdesk_seal_hash(s)
                        THEN 'the seal was altered'
                    WHEN s.prev_seal_hash IS DISTINCT FROM coalesce(
                            lag(s.seal_hash) OVER (ORDER BY s.id), %(genesis)s::bytea)
                        THEN 'a seal before it was removed or altered'
                    WHEN s.xid_from IS DISTINCT FROM coalesce(
                            lag(s.xid_to) OVER (PARTITION BY s.source ORDER BY s.id), 0)
                        THEN 'a seal of this table before it was removed'
                    WHEN s.row_count <> (SELECT count(*) FROM clinicdesk_auditlink l
                                         WHERE l.seal_id = s.id)
                        THEN 'links of the seal were removed or added'
                    WHEN s.head_hash IS DISTINCT FROM (
                            SELECT l.chain_hash FROM clinicdesk_auditlink l
                            WHERE l.seal_id = s.id ORDER BY l.id DESC LIMIT 1)
                        THEN 'the last link of the seal was altered'
                END AS problem
            FROM clinicdesk_auditseal s
        ) checked
        WHERE problem IS NOT NULL
        ORDER BY id
        LIMIT 1
        """,
        {"genesis": genesis("seals")},
    )
    row = cursor.fetchone()
    if row is None:
        return None
    seal_id, source, problem = row
    return Break(source if source in SOURCES else "logentry", None, problem, seal_id)


def _verify_source(cursor, source: str) -> tuple[int, Break | None]:
    table, hash_fn = SOURCES[source]
    cursor.execute(
        f"""
        WITH walk AS (
            SELECT l.id AS link_id, l.seal_id, l.row_id, l.row_hash, l.chain_hash,
                   clinicdesk_chain(l.row_hash) OVER (ORDER BY l.id ROWS UNBOUNDED PRECEDING)
                       AS recomputed_chain,
                   t.id IS NULL AS missing, t.audit_hash AS stored,
                   CASE WHEN t.id IS NOT NULL THEN {hash_fn}(t) END AS recomputed
            FROM (
                SELECT 0::bigint AS id, NULL::bigint AS seal_id, NULL::bigint AS row_id,
                       %(genesis)s::bytea AS row_hash, %(genesis)s::bytea AS chain_hash
                UNION ALL
                SELECT id, seal_id, row_id, row_hash, chain_hash FROM clinicdesk_auditlink
                WHERE source = %(source)s
            ) l
            LEFT JOIN {table} t ON t.id = l.row_id
        )
        SELECT seal_id, row_id, row_hash,
               missing, stored, recomputed, recomputed_chain = chain_hash
        FROM walk
        WHERE link_id > 0 AND (
            missing OR recomputed IS DISTINCT FROM row_hash
            OR stored IS DISTINCT FROM row_hash OR recomputed_chain IS DISTINCT FROM chain_hash)
        ORDER BY link_id
        LIMIT 1
        """,
        {"source": source, "genesis": genesis(source)},
    )
    row = cursor.fetchone()
    if row is not None:
        seal_id, row_id, sealed_hash, missing, stored, recomputed, chain_ok = row
        return _count(cursor, source), Break(
            source,
            row_id,
            _diagnose(cursor, source, row_id, sealed_hash, missing, stored, recomputed, chain_ok),
            seal_id,
        )
    checked = _count(cursor, source)
    # Rows the chain does not hold: below the last seal's horizon every row must be linked
    # (one that is not was inserted behind the seal or had its stamp rewritten); above it,
    # each row must still match the hash it was written with.
    cursor.execute(
        f"""
        SELECT t.id, t.audit_xid < s.xid_to AS behind_seal
        FROM {table} t
        LEFT JOIN LATERAL (
            SELECT xid_to FROM clinicdesk_auditseal WHERE source = %(source)s
            ORDER BY id DESC LIMIT 1
        ) s ON true
        WHERE (s.xid_to IS NOT NULL AND t.audit_xid < s.xid_to AND NOT EXISTS (
                   SELECT 1 FROM clinicdesk_auditlink l
                   WHERE l.source = %(source)s AND l.row_id = t.id))
           OR ((s.xid_to IS NULL OR t.audit_xid >= s.xid_to)
               AND t.audit_hash IS DISTINCT FROM {hash_fn}(t))
        ORDER BY t.id
        LIMIT 1
        """,
        {"source": source},
    )
    row = cursor.fetchone()
    if row is None:
        return checked, None
    row_id, behind_seal = row
    problem = (
        "the row is not in the chain although it is older than the last seal: it was "
        "inserted behind the seal or its stamp was rewritten"
        if behind_seal
        else "the row was edited after it was written (not sealed yet)"
    )
    return checked, Break(source, row_id, problem)


def _count(cursor, source: str) -> int:
    cursor.execute("SELECT count(*) FROM clinicdesk_auditlink WHERE source = %s", [source])
    return cursor.fetchone()[0]


def _diagnose(cursor, source, row_id, sealed_hash, missing, stored, recomputed, chain_ok) -> str:
    if missing:
        return "the row was deleted"
    if stored is not None and bytes(stored) != bytes(sealed_hash):
        # The row carries the hash another row was sealed with: rows swapped places.
        cursor.execute(
            "SELECT row_id FROM clinicdesk_auditlink WHERE source = %s AND row_hash = %s "
            "AND row_id <> %s LIMIT 1",
            [source, bytes(stored), row_id],
        )
        moved = cursor.fetchone()
        if moved is not None:
            return f"the row was reordered: it holds what was sealed as row {moved[0]}"
    if recomputed is not None and bytes(recomputed) != bytes(sealed_hash):
        return "the row was edited after it was sealed"
    if not chain_ok:
        return "the chain link was altered"
    return "the row's stored hash was rewritten"
