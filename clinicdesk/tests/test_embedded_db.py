import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from clinicdesk import embedded_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_pgdata(monkeypatch):
    # Under var/ like the real one, not pytest's tmp_path: pytest keeps its temporary root
    # private to its user (0700), and the server runs as the `pgserver` user when root runs
    # the tests, so it could not reach a data directory there.
    (ROOT / "var").mkdir(exist_ok=True)
    parent = Path(tempfile.mkdtemp(prefix="test-pgdata-", dir=ROOT / "var"))
    pgdata = parent / "pgdata"
    monkeypatch.setenv("CLINICDESK_PGDATA", str(pgdata))
    yield pgdata
    embedded_db.stop(ROOT)
    shutil.rmtree(parent, ignore_errors=True)


def test_embedded_server_starts_creates_the_database_and_is_reused(fresh_pgdata):
    started = time.monotonic()
    url = embedded_db.database_url(ROOT)
    assert (fresh_pgdata / "PG_VERSION").exists()
    with psycopg.connect(url) as connection:
        name, max_connections = connection.execute(
            "SELECT current_database(), current_setting('max_connections')"
        ).fetchone()
    assert name == "clinicdesk"
    assert int(max_connections) >= 300
    first_start = time.monotonic() - started

    started = time.monotonic()
    assert embedded_db.database_url(ROOT) == url
    assert time.monotonic() - started < max(1.0, first_start / 2)


def test_settings_use_the_embedded_server_without_database_url(fresh_pgdata):
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='clinicdesk.settings'; "
            "django.setup(); from django.db import connection; "
            "print(connection.vendor, connection.settings_dict['HOST'])",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    vendor, host = result.stdout.split()
    assert vendor == "postgresql"
    assert host.startswith(str(fresh_pgdata)) or "python_PostgresServer" in host


def test_embedded_data_survives_a_restart(fresh_pgdata):
    url = embedded_db.database_url(ROOT)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('still here')")
    embedded_db.stop(ROOT)
    url = embedded_db.database_url(ROOT)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT value FROM kept").fetchone() == ("still here",)
