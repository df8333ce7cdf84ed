"""The fault run's own embedded PostgreSQL (var/pgdata-chaos): a fresh database, and a stop
and start of the server in the middle of the run. Never the development server."""

from __future__ import annotations

from pathlib import Path

from clinicdesk import embedded_db

DATABASE_NAME = "clinicdesk_chaos"


def fresh_database(pgdata: Path) -> str:
    """Drop and create the run's database; returns its URL."""
    server = embedded_db._server(pgdata)
    server.psql(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE);")
    server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return server.get_uri(DATABASE_NAME)


def stop_server(pgdata: Path) -> None:
    from pgserver._commands import pg_ctl

    server = embedded_db._server(pgdata)
    # Fast: open connections are cut, as when a managed database fails over.
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=server.system_user, timeout=60)


def start_server(pgdata: Path) -> None:
    embedded_db._server(pgdata)
