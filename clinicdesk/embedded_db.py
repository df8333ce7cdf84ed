"""The embedded PostgreSQL that development and tests use when no DATABASE_URL is set.

The server comes from the `pgserver` package, keeps its data under `var/pgdata` and is left
running between processes (`cleanup_mode=None`), so a second `make run` or a test run reuses it
in well under a second. `python -m clinicdesk.embedded_db stop` stops it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATABASE_NAME = "clinicdesk"

# Settings that suit a small clinic server and the concurrency tests and benchmarks
# (32 concurrent workers plus a q2 cluster plus the web server).
SERVER_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "512MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "effective_cache_size": "4GB",
    "random_page_cost": "1.1",
}


def data_dir(base_dir: Path) -> Path:
    return Path(os.environ.get("CLINICDESK_PGDATA", base_dir / "var" / "pgdata"))


def _server(pgdata: Path):
    import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    # get_server() caches its handle per process; make sure the server behind it still runs
    # (someone may have stopped it since).
    with server._lock:
        server.ensure_postgres_running()
    return server


def _tune(server, pgdata: Path) -> None:
    from pgserver._commands import pg_ctl

    current = dict(
        line.split("|", 1)
        for line in server.psql(
            "\\pset tuples_only on\n\\pset format unaligned\n"
            "SELECT name || '|' || setting || coalesce(unit, '') FROM pg_settings "
            f"WHERE name IN ({', '.join(repr(k) for k in SERVER_SETTINGS)});"
        ).splitlines()
        if "|" in line
    )
    if current.get("max_connections") == SERVER_SETTINGS["max_connections"]:
        return
    statements = "".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in SERVER_SETTINGS.items())
    server.psql(statements)
    pg_ctl(["-w", "restart"], pgdata=pgdata, user=server.system_user, timeout=60)
    server.ensure_postgres_running()


def database_url(base_dir: Path) -> str:
    """Start the embedded server if it is not running, create the database, return its URL."""
    pgdata = data_dir(base_dir)
    server = _server(pgdata)
    marker = pgdata / ".clinicdesk-tuned"
    if not marker.exists():
        _tune(server, pgdata)
        marker.write_text("tuned\n")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';").strip()
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return server.get_uri(DATABASE_NAME)


def bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def stop(base_dir: Path) -> None:
    from pgserver._commands import pg_ctl

    pgdata = data_dir(base_dir)
    if not (pgdata / "postmaster.pid").exists():
        print("The embedded PostgreSQL is not running.")
        return
    server = _server(pgdata)
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=server.system_user)
    print("The embedded PostgreSQL stopped.")


if __name__ == "__main__":
    base = Path(__file__).resolve().parent.parent
    command = sys.argv[1] if len(sys.argv) > 1 else "url"
    if command == "url":
        print(database_url(base))
    elif command == "stop":
        stop(base)
    else:
        sys.exit("usage: python -m clinicdesk.embedded_db [url|stop]")
