"""The benchmark harness behind `make bench` (`python manage.py bench`).

A run has two parts:

1. **Calibration.** `pgbench -N` (the simple-update script, 8 clients, 2 threads) runs against a
   scratch database on the *same* PostgreSQL server the app uses. Its throughput, W, measures
   what this machine and this server can do; scenarios report their rates as a ratio to W so
   that runs on different machines can be compared.
2. **Scenarios.** Every app of ours may have a `<app>/benchmarks.py` module exposing
   `BENCHMARKS: dict[str, Callable[[BenchContext], dict[str, float | int | str]]]` (a callable
   may also take no argument). Each returns flat metrics; the harness adds the ratio to W of
   every rate (a metric whose name ends in `_per_s`), checks `target_<metric>` keys, prints
   one table and writes the same figures to `var/bench.json`.

Metric naming conventions (see docs/benchmarks.md):

- `<name>_per_s` (also `_per_second`, `_tps`): a rate, higher is better; ratio to W computed.
- `<name>_ms`, `<name>_us`, `<name>_s`: a duration, lower is better.
- `target_<metric>`: the target of `<metric>`. A number (direction from the unit: `<=` for a
  duration, `>=` otherwise) or a string such as `">= 1500"`, `"<= 20"` or `">= 0.5 W"` (a
  multiple of the calibration TPS).
- `ratio_to_w_<metric>`: a ratio the scenario computed itself; it replaces the computed one.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

MetricValue = float | int | str
Metrics = dict[str, MetricValue]
Benchmark = Callable[..., Mapping[str, Any]]

CALIBRATION_DATABASE = "clinicdesk_bench_calibration"
TEMPLATE_DATABASE = "clinicdesk_bench_template"
SCRATCH_PREFIX = "clinicdesk_bench_"
CALIBRATION_CLIENTS = 8
CALIBRATION_THREADS = 2
DEFAULT_CALIBRATION_SECONDS = 10
DEFAULT_CALIBRATION_SCALE = 10
W_KEY = "pgbench_N_tps_8_clients"

_RATE_RE = re.compile(r"_(per_s|per_sec|per_second|tps)(_(median|mean|min|max|p\d+))?$")
DURATION_SUFFIXES = ("_ms", "_us", "_ns", "_s", "_seconds")
# libpq connection keywords that may sit in DATABASES["default"]["OPTIONS"] and that Django
# itself consumes instead of passing on.
_DJANGO_ONLY_OPTIONS = {
    "assume_role",
    "isolation_level",
    "pool",
    "prepare_threshold",
    "server_side_binding",
}
_TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_TRANSACTIONS_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_TARGET_RE = re.compile(
    r"^\s*(?P<op><=|>=|<|>|==)?\s*(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"\s*(?:(?P<w>x?\s*W))?\s*$"
)


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 to 100) of `values`, linearly interpolated (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be between 0 and 100, not {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def measure_latencies(
    operation: Callable[[], object],
    *,
    seconds: float = 1.0,
    min_samples: int = 200,
    max_samples: int = 200_000,
    warmup: int = 20,
) -> list[float]:
    """Call `operation` repeatedly for about `seconds`; return each call's duration in seconds.

    At least `min_samples` and at most `max_samples` calls are timed, after `warmup` untimed
    calls.
    """
    for _ in range(warmup):
        operation()
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while len(samples) < max_samples and (len(samples) < min_samples or clock() < deadline):
        start = clock()
        operation()
        samples.append(clock() - start)
    return samples


def latency_metrics(prefix: str, samples: Sequence[float]) -> Metrics:
    """`<prefix>_median_ms`, `<prefix>_p99_ms` and `<prefix>_per_s` (1 / median) of durations."""
    mid = median(samples)
    return {
        f"{prefix}_median_ms": mid * 1000,
        f"{prefix}_p99_ms": percentile(samples, 99) * 1000,
        f"{prefix}_per_s": 1 / mid if mid > 0 else math.inf,
        f"{prefix}_samples": len(samples),
    }


# --- connection parameters -----------------------------------------------------------------


def _default_settings() -> dict[str, Any]:
    from django.db import connections

    return connections["default"].settings_dict


def conn_params(dbname: str | None = None) -> dict[str, Any]:
    """libpq/psycopg keyword arguments for the app's server (`DATABASES["default"]`).

    `dbname` defaults to the app database. HOST may be a Unix socket directory (the embedded
    server keeps it in OPTIONS["host"]).
    """
    db = _default_settings()
    params: dict[str, Any] = {
        key: value
        for key, value in (db.get("OPTIONS") or {}).items()
        if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, str | int | float)
    }
    params["dbname"] = dbname or db["NAME"]
    for setting, key in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if db.get(setting):
            params[key] = db[setting]
    if db.get("PORT"):
        params["port"] = str(db["PORT"])
    return params


def database_url(dbname: str | None = None) -> str:
    """A `postgresql://` URL (as `DATABASE_URL` takes it) for a database on the app's server."""
    params = conn_params(dbname)
    user = quote(str(params.pop("user", "")), safe="")
    password = quote(str(params.pop("password", "")), safe="")
    host = str(params.pop("host", ""))
    port = str(params.pop("port", ""))
    name = quote(str(params.pop("dbname")), safe="")
    query: dict[str, str] = {key: str(value) for key, value in params.items()}
    netloc = ""
    if user or password:
        netloc = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        query = {"host": host, **query}
    else:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    if port and host.startswith("/"):
        query["port"] = port
    suffix = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{netloc}/{name}{suffix}"


def _conninfo(dbname: str, *, with_password: bool = False) -> str:
    params = conn_params(dbname)
    if not with_password:
        params.pop("password", None)
    return make_conninfo(**{key: str(value) for key, value in params.items()})


def _admin_connection() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's `postgres` database, for CREATE/DROP DATABASE."""
    params = conn_params("postgres")
    return psycopg.connect(**params, autocommit=True)


def pg_bin(program: str) -> Path:
    """Path of a PostgreSQL client program (`pgbench`, `psql`, …) shipped with pgserver."""
    from clinicdesk.embedded_db import bin_dir

    path = bin_dir() / program
    if path.exists():
        return path
    found = shutil.which(program)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{program} is neither in {bin_dir()} nor on PATH")


def _drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _guard_name(name: str) -> None:
    app_db = _default_settings()["NAME"]
    if not name.startswith(SCRATCH_PREFIX) or name in {app_db, "postgres"}:
        raise ValueError(f"refusing to create or drop database {name!r}")


def _process_database_name(base: str) -> str:
    """`base` with this process's id appended, so that two runs at once never collide."""
    suffix = f"_p{os.getpid()}"
    return base[: 63 - len(suffix)] + suffix


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale_databases(admin: psycopg.Connection[Any]) -> None:
    """Drop scratch and calibration databases left behind by a run that was killed.

    Only for a server on this machine (a Unix socket), where a process id can be checked, and
    only databases nobody is connected to.
    """
    if not str(conn_params().get("host", "")).startswith("/"):
        return
    rows = admin.execute(
        "SELECT d.datname FROM pg_database d WHERE d.datname LIKE %s "
        "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
        (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    for (name,) in rows:
        match = re.search(r"_p(\d+)$", name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _guard_name(name)
            _drop_database(admin, name)


# --- scratch databases ---------------------------------------------------------------------


def _migrations_fingerprint() -> str:
    """A hash of every migration file of every installed app, plus the Django version."""
    import django
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    digest = hashlib.sha256(django.get_version().encode())
    for key in sorted(loader.disk_migrations):
        module = sys.modules[loader.disk_migrations[key].__module__]
        digest.update(repr(key).encode())
        if getattr(module, "__file__", None):
            digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:32]


def _database_comment(admin: psycopg.Connection[Any], name: str) -> str | None:
    row = admin.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        "WHERE datname = %s",
        (name,),
    ).fetchone()
    return None if row is None else row[0]


def _ensure_template(admin: psycopg.Connection[Any]) -> None:
    """Create (or re-create when migrations changed) the migrated template database.

    `migrate` runs in a child process whose DATABASE_URL points at the template, so nothing a
    migration does (RunPython included) can reach the app database.
    """
    fingerprint = f"clinicdesk-bench-template {_migrations_fingerprint()}"
    if _database_comment(admin, TEMPLATE_DATABASE) == fingerprint:
        return
    _drop_database(admin, TEMPLATE_DATABASE)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DATABASE)))
    from django.conf import settings

    env = {**os.environ, "DATABASE_URL": database_url(TEMPLATE_DATABASE)}
    result = subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "migrate", "--noinput"],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        _drop_database(admin, TEMPLATE_DATABASE)
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"migrate of the benchmark template database failed:\n{tail}")
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(TEMPLATE_DATABASE), sql.Literal(fingerprint)
        )
    )


def _clear_process_caches() -> None:
    """Forget ids cached from one database before talking to another."""
    from django.contrib.contenttypes.models import ContentType
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    ContentType.objects.clear_cache()
    for alias in caches:
        cache = caches[alias]
        if isinstance(cache, LocMemCache):  # never a shared cache such as Redis
            cache.clear()


@dataclass(frozen=True)
class ScratchDatabase:
    """A fresh, migrated database on the app's server, alive inside `scratch_database()`."""

    name: str
    alias: str
    url: str
    params: dict[str, Any]


def scratch_database_name(name: str) -> str:
    """`clinicdesk_bench_<name>_p<pid>`: lower case, safe characters, at most 63 bytes."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "scratch"
    if not cleaned.startswith(SCRATCH_PREFIX):
        cleaned = SCRATCH_PREFIX + cleaned
    return _process_database_name(cleaned)


@contextlib.contextmanager
def scratch_database(
    name: str, *, as_default: bool = True, keep: bool = False
) -> Iterator[ScratchDatabase]:
    """A fresh PostgreSQL database with the project's migrations applied, dropped on exit.

    It is created on the same server as the app database (`clinicdesk_bench_<name>_p<pid>`) by
    `CREATE DATABASE … TEMPLATE` of a migrated template that is rebuilt whenever a migration
    changes. Inside the block it is registered as the connection alias `bench_<name>`; with
    `as_default` (the default) Django's `default` alias points at it too, so the ORM and every
    service function work on the scratch data and the app data stays untouched. Threads that
    the scenario starts inside the block connect to the scratch database as well; they must
    close their connections (`django.db.connections.close_all()`) before the block ends.
    """
    from django.db import connections

    db_name = scratch_database_name(name)
    _guard_name(db_name)
    alias = f"bench_{db_name.removeprefix(SCRATCH_PREFIX).rsplit('_p', 1)[0]}"
    if alias in connections.settings:
        raise RuntimeError(f"scratch database {name!r} is already open")
    default = connections["default"]
    if as_default and default.in_atomic_block:
        raise RuntimeError("scratch_database(as_default=True) cannot be used inside atomic()")
    with _admin_connection() as admin:
        admin.execute("SELECT pg_advisory_lock(hashtext(%s))", (TEMPLATE_DATABASE,))
        try:
            _drop_stale_databases(admin)
            _ensure_template(admin)
            _drop_database(admin, db_name)
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(db_name), sql.Identifier(TEMPLATE_DATABASE)
                )
            )
        finally:
            admin.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TEMPLATE_DATABASE,))

    settings_dict = copy.deepcopy(default.settings_dict)
    settings_dict["NAME"] = db_name
    settings_dict["CONN_MAX_AGE"] = 0
    connections.settings[alias] = settings_dict
    original_name = default.settings_dict["NAME"]
    scratch = ScratchDatabase(
        name=db_name, alias=alias, url=database_url(db_name), params=conn_params(db_name)
    )
    try:
        if as_default:
            default.close()
            # The same in-place switch Django's test runner makes for the test database:
            # every connection to `default` opened from now on, in any thread, goes here.
            default.settings_dict["NAME"] = db_name
            _clear_process_caches()
        yield scratch
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(KeyError, AttributeError):
            del connections[alias]
        connections.settings.pop(alias, None)
        if as_default:
            with contextlib.suppress(Exception):
                default.close()
            default.settings_dict["NAME"] = original_name
            _clear_process_caches()
        if not keep:
            with _admin_connection() as admin:
                _drop_database(admin, db_name)


# --- the context a scenario receives --------------------------------------------------------


@dataclass
class BenchContext:
    """What a scenario gets: the calibration, W, and helpers.

    `calibration` is the dict written under "calibration" in var/bench.json; `tps_w` is W, the
    `pgbench -N` TPS with 8 clients (None when calibration was skipped and no earlier run's
    figure could be reused).
    """

    calibration: dict[str, Any] = field(default_factory=dict)
    tps_w: float | None = None
    verbosity: int = 1
    stdout: TextIO | None = None

    # Statistics, also available as module functions.
    percentile = staticmethod(percentile)
    median = staticmethod(median)
    measure_latencies = staticmethod(measure_latencies)
    latency_metrics = staticmethod(latency_metrics)

    def conn_params(self, dbname: str | None = None) -> dict[str, Any]:
        return conn_params(dbname)

    def database_url(self, dbname: str | None = None) -> str:
        return database_url(dbname)

    def pg_bin(self, program: str) -> Path:
        return pg_bin(program)

    def scratch_database(
        self, name: str, *, as_default: bool = True, keep: bool = False
    ) -> contextlib.AbstractContextManager[ScratchDatabase]:
        return scratch_database(name, as_default=as_default, keep=keep)

    def ratio_to_w(self, rate: float) -> float | None:
        """`rate` (per second) divided by W, or None without a calibration."""
        if not self.tps_w:
            return None
        return rate / self.tps_w

    def log(self, message: str) -> None:
        if self.verbosity >= 2 and self.stdout is not None:
            self.stdout.write(f"    {message}\n")
            self.stdout.flush()


# --- calibration ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def machine_facts() -> dict[str, Any]:
    import django

    facts: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "django_version": django.get_version(),
    }
    with contextlib.suppress(AttributeError):
        facts["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        with _admin_connection() as admin:
            row = admin.execute("SHOW server_version").fetchone()
            facts["postgres_version"] = row[0] if row else None
    except psycopg.Error as exc:
        facts["postgres_version"] = f"unknown ({exc.__class__.__name__})"
    return facts


def parse_pgbench_output(output: str) -> dict[str, float]:
    match = _TPS_RE.search(output)
    if not match:
        raise RuntimeError(f"no TPS line in pgbench output:\n{output.strip()[-2000:]}")
    parsed = {"tps": float(match.group(1))}
    if latency := _LATENCY_RE.search(output):
        parsed["latency_avg_ms"] = float(latency.group(1))
    if transactions := _TRANSACTIONS_RE.search(output):
        parsed["transactions"] = int(transactions.group(1))
    return parsed


def _run_pgbench(args: list[str], *, timeout: float) -> str:
    env = dict(os.environ)
    password = conn_params().get("password")
    if password:
        env["PGPASSWORD"] = str(password)
    result = subprocess.run(
        [str(pg_bin("pgbench")), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()[-2000:]
        raise RuntimeError(f"pgbench {' '.join(args[:2])} failed ({result.returncode}):\n{output}")
    return result.stdout + result.stderr


def run_pgbench(args: list[str], *, dbname: str, timeout: float) -> str:
    """Run the pgbench shipped with the server against `dbname` (on the app's server) with
    `args` before the database; its output, or RuntimeError when it fails."""
    return _run_pgbench([*args, _conninfo(dbname)], timeout=timeout)


def calibrate(
    seconds: int = DEFAULT_CALIBRATION_SECONDS, scale: int = DEFAULT_CALIBRATION_SCALE
) -> dict[str, Any]:
    """Measure W: `pgbench -N` TPS, 8 clients, 2 threads, on a scratch database."""
    if seconds < 1 or scale < 1:
        raise ValueError("calibration seconds and scale must be at least 1")
    version = subprocess.run(
        [str(pg_bin("pgbench")), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    database = _process_database_name(CALIBRATION_DATABASE)
    _guard_name(database)
    target = _conninfo(database)
    with _admin_connection() as admin:
        _drop_stale_databases(admin)
        _drop_database(admin, database)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        _run_pgbench(["-i", "-q", "-s", str(scale), target], timeout=600)
        output = _run_pgbench(
            [
                "-N",
                "-c",
                str(CALIBRATION_CLIENTS),
                "-j",
                str(CALIBRATION_THREADS),
                "-T",
                str(seconds),
                target,
            ],
            timeout=seconds + 300,
        )
    finally:
        with _admin_connection() as admin:
            _drop_database(admin, database)
    parsed = parse_pgbench_output(output)
    return {
        W_KEY: parsed["tps"],
        "pgbench_latency_avg_ms": parsed.get("latency_avg_ms"),
        "pgbench_transactions": parsed.get("transactions"),
        "pgbench_version": version,
        "pgbench_command": (
            f"pgbench -N -c {CALIBRATION_CLIENTS} -j {CALIBRATION_THREADS} -T {seconds}"
        ),
        "clients": CALIBRATION_CLIENTS,
        "threads": CALIBRATION_THREADS,
        "duration_s": seconds,
        "scale": scale,
    }


# --- discovery ------------------------------------------------------------------------------


def _our_app_configs() -> list[Any]:
    from django.apps import apps
    from django.conf import settings

    base = Path(settings.BASE_DIR).resolve()
    ours = []
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if path.is_relative_to(base) and not path.is_relative_to(base / ".venv"):
            ours.append(config)
    return ours


def _import_failure(module_name: str, exc: BaseException) -> Benchmark:
    def failed() -> Metrics:
        raise ImportError(f"cannot import {module_name}: {exc!r}") from exc

    return failed


def discover_benchmarks() -> dict[str, Benchmark]:
    """Built-in scenarios first, then `BENCHMARKS` of every `<app>/benchmarks.py` of ours.

    A name that two apps both use is qualified with the app label. A module that fails to
    import becomes a scenario named `<app>.benchmarks` that fails with the import error.
    """
    found: dict[str, Benchmark] = dict(BUILTIN_BENCHMARKS)
    for config in _our_app_configs():
        module_name = f"{config.name}.benchmarks"
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
            module = importlib.import_module(module_name)
        except Exception as exc:
            found[module_name] = _import_failure(module_name, exc)
            continue
        declared = getattr(module, "BENCHMARKS", None)
        if not isinstance(declared, Mapping):
            found[module_name] = _import_failure(
                module_name, TypeError("BENCHMARKS must be a dict of name -> callable")
            )
            continue
        for name, function in declared.items():
            key = f"{config.label}.{name}" if name in found else str(name)
            found[key] = function
    return found


def _takes_context(function: Benchmark) -> bool:
    """True unless the callable can be called with no argument (a parameter named `context`
    or `ctx` gets the context even when it has a default)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) and (
            parameter.default is parameter.empty or parameter.name in {"context", "ctx"}
        ):
            return True
    return False


def flatten_metrics(result: Mapping[str, Any], prefix: str = "") -> Metrics:
    """Check a scenario's figures; a nested dict becomes `outer.inner` keys."""
    metrics: Metrics = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            metrics.update(flatten_metrics(value, prefix=f"{name}."))
            continue
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float | str):
            raise TypeError(f"metric {name!r} must be a number or a string, not {value!r}")
        metrics[name] = value
    return metrics


def call_benchmark(function: Benchmark, context: BenchContext) -> Metrics:
    """Call a scenario with the context, or with nothing if it takes no argument."""
    result = function(context) if _takes_context(function) else function()
    if not isinstance(result, Mapping):
        raise TypeError(f"a benchmark must return a dict of metrics, not {type(result).__name__}")
    return flatten_metrics(result)


# --- the built-in self-check scenario --------------------------------------------------------


def orm_roundtrip(context: BenchContext) -> Metrics:
    """Single-connection round trips through Django: `SELECT 1`, and INSERT + SELECT of a row.

    The write goes to a temporary table inside `transaction.atomic()`, committed each time, so
    it touches nothing in the app's schema.
    """
    from django.db import connection, transaction

    seconds = 1.0
    with connection.cursor() as cursor:

        def select_one() -> None:
            cursor.execute("SELECT 1")
            cursor.fetchone()

        select = measure_latencies(select_one, seconds=seconds)
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS bench_roundtrip "
            "(id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL)"
        )
        counter = iter(range(10**9))

        def insert_select() -> None:
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO bench_roundtrip (payload, at) VALUES (%s, now()) RETURNING id",
                    [f"row {next(counter)}"],
                )
                row_id = cursor.fetchone()[0]
                cursor.execute(
                    "SELECT id, payload, at FROM bench_roundtrip WHERE id = %s", [row_id]
                )
                cursor.fetchone()

        write = measure_latencies(insert_select, seconds=seconds)
        cursor.execute("DROP TABLE IF EXISTS bench_roundtrip")
    context.log(f"select_1: {len(select)} samples, insert_select: {len(write)} samples")
    return {**latency_metrics("select_1", select), **latency_metrics("insert_select", write)}


BUILTIN_BENCHMARKS: dict[str, Benchmark] = {"orm_roundtrip": orm_roundtrip}


# --- results, table and JSON -----------------------------------------------------------------


def is_rate(metric: str) -> bool:
    """`x_per_s`, `x_tps`, … also with a statistic after it (`x_per_s_median`, `x_tps_p99`)."""
    return bool(_RATE_RE.search(metric)) or metric in {"tps", "per_s"}


def is_duration(metric: str) -> bool:
    return not is_rate(metric) and metric.endswith(DURATION_SUFFIXES)


@dataclass(frozen=True)
class Target:
    op: str
    value: float
    relative_to_w: bool
    text: str

    def threshold(self, tps_w: float | None) -> float | None:
        if not self.relative_to_w:
            return self.value
        return self.value * tps_w if tps_w else None

    def met(self, measured: float, tps_w: float | None) -> bool | None:
        threshold = self.threshold(tps_w)
        if threshold is None:
            return None
        return {
            "<=": measured <= threshold,
            ">=": measured >= threshold,
            "<": measured < threshold,
            ">": measured > threshold,
            "==": measured == threshold,
        }[self.op]


def parse_target(metric: str, raw: MetricValue) -> Target | None:
    default_op = "<=" if is_duration(metric) else ">="
    if isinstance(raw, int | float):
        return Target(default_op, float(raw), False, f"{default_op} {format_value(raw)}")
    match = _TARGET_RE.match(raw)
    if not match:
        return None
    op = match.group("op") or default_op
    relative = bool(match.group("w"))
    value = float(match.group("num"))
    text = f"{op} {format_value(value)}{' W' if relative else ''}"
    return Target(op, value, relative, text)


def format_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= 48 else text[:45] + "..."
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_ratio(ratio: float) -> str:
    if not math.isfinite(ratio):
        return str(ratio)
    if abs(ratio) < 1:
        return f"{ratio:.3f}"
    if abs(ratio) < 100:
        return f"{ratio:.2f}"
    return f"{ratio:,.0f}"


def _rounded(value: MetricValue) -> MetricValue:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value


@dataclass
class ScenarioResult:
    name: str
    metrics: Metrics = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    elapsed_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class Row:
    scenario: str
    metric: str
    value: str
    target: str = ""
    ratio: str = ""
    check: str = ""


def annotate(result: ScenarioResult, tps_w: float | None) -> tuple[Metrics, list[Row]]:
    """The JSON figures (metrics + computed ratios + status) and the table rows of a result."""
    if result.failed:
        figures: Metrics = {"status": "failed", "error": result.error or ""}
        figures["elapsed_s"] = round(result.elapsed_s, 3)
        return figures, [Row(result.name, "(error below)", "", check="FAILED")]
    metrics = result.metrics
    figures = {key: _rounded(value) for key, value in metrics.items()}
    rows: list[Row] = []
    plain = [
        key for key in metrics if not key.startswith(("target_", "ratio_to_w_")) and key != "status"
    ]
    orphans = [
        key.removeprefix("target_")
        for key in metrics
        if key.startswith("target_") and key.removeprefix("target_") not in metrics
    ]
    missed = 0
    for metric in plain + orphans:
        value = metrics.get(metric)
        row = Row(result.name, metric, "" if value is None else format_value(value))
        given_ratio = metrics.get(f"ratio_to_w_{metric}")
        if isinstance(given_ratio, int | float):
            row.ratio = format_ratio(float(given_ratio))
        elif isinstance(value, int | float) and is_rate(metric) and tps_w:
            ratio = value / tps_w
            figures[f"ratio_to_w_{metric}"] = _rounded(ratio)
            row.ratio = format_ratio(ratio)
        raw_target = metrics.get(f"target_{metric}")
        if raw_target is not None:
            target = parse_target(metric, raw_target)
            if target is None:
                row.target = format_value(raw_target)
            else:
                row.target = target.text
                if value is None:
                    row.check = "no value"
                    missed += 1
                elif isinstance(value, int | float):
                    met = target.met(float(value), tps_w)
                    row.check = {True: "ok", False: "MISSED", None: "no W"}[met]
                    missed += met is False
        rows.append(row)
    figures["status"] = "ok" if not missed else "target missed"
    figures["elapsed_s"] = round(result.elapsed_s, 3)
    return figures, rows


def render_table(rows: Sequence[Row]) -> str:
    headers = Row("scenario", "metric", "value", "target", "ratio to W", "check")
    columns = ["scenario", "metric", "value", "target", "ratio", "check"]
    right = {"value", "ratio"}
    table = [headers, *rows]
    widths = {c: max(len(getattr(r, c)) for r in table) for c in columns}
    if not any(r.check for r in rows):
        columns.remove("check")

    def line(row: Row) -> str:
        cells = []
        for column in columns:
            text = getattr(row, column)
            width = widths[column]
            cells.append(text.rjust(width) if column in right else text.ljust(width))
        return "| " + " | ".join(cells) + " |"

    separator = "|" + "|".join(
        "-" * (widths[c] + 1) + ":" if c in right else "-" * (widths[c] + 2) for c in columns
    )
    return "\n".join([line(headers), separator + "|", *(line(r) for r in rows)])


def calibration_summary(calibration: Mapping[str, Any]) -> str:
    if calibration.get("error"):
        return f"Calibration failed: {calibration['error']}"
    tps = calibration.get(W_KEY)
    if not tps:
        return "Calibration: skipped (no W, no ratios)"
    reused = " (reused from an earlier run)" if calibration.get("reused") else ""
    return (
        f"Calibration: W = {format_value(float(tps))} TPS{reused}, "
        f"{calibration.get('pgbench_command', 'pgbench -N')}, scale {calibration.get('scale')}, "
        f"{calibration.get('pgbench_version', '')}\n"
        f"Machine: {calibration.get('date')}, {calibration.get('cpu_count')} CPU "
        f"({calibration.get('cpu_model')}), {calibration.get('memory_gib')} GiB, "
        f"PostgreSQL {calibration.get('postgres_version', '?')}, "
        f"Python {calibration.get('python_version')}"
    )


# --- the run --------------------------------------------------------------------------------


@dataclass
class BenchRun:
    calibration: dict[str, Any]
    results: list[ScenarioResult]
    rows: list[Row]
    report: dict[str, Any]

    @property
    def failures(self) -> list[ScenarioResult]:
        return [r for r in self.results if r.failed]

    @property
    def calibration_failed(self) -> bool:
        return bool(self.calibration.get("error"))

    @property
    def targets_missed(self) -> list[str]:
        return [
            name
            for name, figures in self.report["scenarios"].items()
            if figures.get("status") == "target missed"
        ]


def _previous_calibration(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        previous = json.loads(path.read_text()).get("calibration") or {}
        if previous.get(W_KEY):
            return dict(previous)
    return None


def _close_connections() -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def run(
    *,
    only: Sequence[str] = (),
    skip_calibration: bool = False,
    calibration_seconds: int = DEFAULT_CALIBRATION_SECONDS,
    calibration_scale: int = DEFAULT_CALIBRATION_SCALE,
    json_path: Path | None = None,
    stdout: TextIO | None = None,
    verbosity: int = 1,
) -> BenchRun:
    """Calibrate, run the selected scenarios, write the JSON report; never raises for a
    failing scenario (the caller decides the exit status from `BenchRun.failures`)."""
    out = stdout or sys.stdout

    def say(message: str) -> None:
        if verbosity >= 1:
            out.write(message + "\n")
            out.flush()

    from django.conf import settings

    default_path = Path(settings.BASE_DIR) / "var" / "bench.json"
    json_path = json_path or default_path
    calibration: dict[str, Any] = {}
    if skip_calibration:
        for candidate in dict.fromkeys([json_path, default_path]):
            previous = _previous_calibration(candidate)
            if previous:
                calibration = {**previous, "reused": True, "reused_from": str(candidate)}
                say(f"Calibration skipped: reusing W from {candidate}")
                break
        else:
            say("Calibration skipped: no earlier W, ratios left out")
            calibration = machine_facts()
    else:
        say(
            f"Calibrating: pgbench -N, {CALIBRATION_CLIENTS} clients, {CALIBRATION_THREADS} "
            f"threads, {calibration_seconds} s, scale {calibration_scale} ..."
        )
        try:
            calibration = calibrate(calibration_seconds, calibration_scale)
        except Exception as exc:
            calibration = {"error": f"{exc.__class__.__name__}: {exc}"}
        calibration.update(machine_facts())
    tps_w = calibration.get(W_KEY) or None
    context = BenchContext(
        calibration=calibration,
        tps_w=float(tps_w) if tps_w else None,
        verbosity=verbosity,
        stdout=out,
    )

    benchmarks = discover_benchmarks()
    selected = {
        name: function
        for name, function in benchmarks.items()
        if not only or any(part.lower() in name.lower() for part in only)
    }
    if only and not selected:
        say(f"No scenario matches {', '.join(only)}; known: {', '.join(benchmarks)}")

    results: list[ScenarioResult] = []
    for name, function in selected.items():
        say(f"Running {name} ...")
        result = ScenarioResult(name)
        start = time.perf_counter()
        try:
            result.metrics = call_benchmark(function, context)
        except Exception as exc:
            result.error = f"{exc.__class__.__name__}: {exc}"
            result.traceback = traceback.format_exc()
            if verbosity >= 2:
                out.write(result.traceback)
        finally:
            result.elapsed_s = time.perf_counter() - start
            _close_connections()
        results.append(result)

    scenarios: dict[str, Metrics] = {}
    rows: list[Row] = []
    for result in results:
        figures, result_rows = annotate(result, context.tps_w)
        scenarios[result.name] = figures
        rows.extend(result_rows)
    report = {
        "calibration": {key: _rounded(value) for key, value in calibration.items()},
        "scenarios": scenarios,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(json_path)

    say("")
    say(calibration_summary(report["calibration"]))
    if rows:
        say("")
        say(render_table(rows))
    failures = [r for r in results if r.failed]
    if failures:
        say("")
        for failure in failures:
            say(f"FAILED {failure.name}: {failure.error}")
        if verbosity < 2:
            say("(-v 2 shows the tracebacks)")
    say("")
    say(f"Wrote {json_path}")
    return BenchRun(calibration=calibration, results=results, rows=rows, report=report)
