"""One load run, end to end, as `manage.py load` runs it.

Everything runs in processes of its own against an embedded PostgreSQL of its own
(`var/pgdata-load`, a fresh `clinicdesk_load` database each run): the development database is
never touched. Steps: start that server and create the database; migrate, collect the static
files, build the clinic and write the plan (`manage.py load --prepare`), declare the job
schedules; start gunicorn and a django-q2 cluster, each in its own process group; run Locust
headless; stop both groups; print the table; run the checks (`manage.py load --check`); stop
the database server. Files of the run go to `var/load/<UTC time>/`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clinicdesk.load import report

DATABASE = "clinicdesk_load"
SEED_RATE_PER_HOUR = 250  # the demo morning: 250 requests in its first hour
INTAKE_USERS = 2
SPAWN_RATE = 10
STOP_SECONDS = 20
SETTLE_SECONDS = 30  # as the locustfile counts the steady part


@dataclass
class Options:
    minutes: float = 10.0
    users: int = 50
    rate_scale: float = 10.0
    port: int = 8100
    workers: int = 0  # 0: 2 * cores + 1
    out: Path | None = None
    keep_database: bool = False  # leave the load server running afterwards (to inspect it)

    @property
    def intake_per_hour(self) -> float:
        return SEED_RATE_PER_HOUR * self.rate_scale

    @property
    def intake_items(self) -> int:
        """Enough requests for the run at its rate, with room to spare."""
        return math.ceil(self.intake_per_hour * self.minutes / 60 * 1.2) + 20

    @property
    def gunicorn_workers(self) -> int:
        return self.workers or 2 * (os.cpu_count() or 1) + 1


@dataclass
class Result:
    out: Path
    rows: list[report.Row] = field(default_factory=list)
    steady_rows: list[report.Row] = field(default_factory=list)
    steady_seconds: float = 0.0
    checks_passed: bool = False
    errors: int = 0

    @property
    def ok(self) -> bool:
        return self.checks_passed and self.errors == 0 and bool(self.rows)


class RunError(Exception):
    """A step of the run failed; the message says which, and where its log is."""


def run(base_dir: Path, options: Options, say: Callable[[str], None] = print) -> Result:
    started = datetime.now(UTC)
    out = options.out or base_dir / "var" / "load" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    pgdata = base_dir / "var" / "pgdata-load"
    result = Result(out=out)
    _require_free_port(options.port)

    say(
        f"Load run: {options.users} staff, intake {options.intake_per_hour:.0f}/hour, "
        f"{options.minutes:g} min, http://127.0.0.1:{options.port}/ (files in {out})"
    )
    database_url = fresh_database(base_dir, pgdata)
    env = child_env(base_dir, pgdata, database_url, options.port)
    try:
        _prepare(base_dir, options, env, out, say)
        _drive(base_dir, options, env, out, say)
        result.rows = report.read_stats(out / "locust_stats.csv")
        result.errors = report.total_errors(result.rows)
        steady = _read_json(out / "extra.json").get("steady", {})
        result.steady_rows = report.steady_rows(steady)
        result.steady_seconds = steady.get("seconds", 0)
        say("")
        say("The whole run (Locust), answer times in ms:")
        say(report.format_table(result.rows))
        say("")
        say(
            f"The steady part ({result.steady_seconds:.0f} s, from {SETTLE_SECONDS} s after the "
            "last sign-in):"
        )
        say(report.format_table(result.steady_rows))
        say("")
        say("Checks:")
        result.checks_passed = _check(base_dir, env, out, say)
    finally:
        if not options.keep_database:
            stop_database(base_dir, pgdata)
    write_summary(out, options, result, started)
    return result


def _manage(base_dir: Path) -> list[str]:
    return [sys.executable, str(base_dir / "manage.py")]


def _prepare(base_dir: Path, options: Options, env: dict, out: Path, say) -> None:
    say("Preparing the database (migrate, static files, clinic, schedules)…")
    manage = _manage(base_dir)
    _step([*manage, "migrate", "--noinput", "-v", "0"], env, out / "migrate.log")
    _step([*manage, "collectstatic", "--noinput", "-v", "0"], env, out / "static.log")
    _step(
        [
            *manage,
            "load",
            "--prepare",
            str(out),
            "--users",
            str(options.users),
            "--intake-items",
            str(options.intake_items),
            "--intake-per-hour",
            str(options.intake_per_hour),
            "--intake-users",
            str(INTAKE_USERS),
        ],
        env,
        out / "prepare.log",
    )
    _step([*manage, "setup_schedules"], env, out / "schedules.log")


def _drive(base_dir: Path, options: Options, env: dict, out: Path, say) -> None:
    """gunicorn and the job cluster up, Locust for the run's length, both stopped again."""
    bin_dir = Path(sys.executable).parent
    groups: list[tuple[str, subprocess.Popen]] = []
    say(f"Starting gunicorn ({options.gunicorn_workers} workers) and the job cluster…")
    try:
        command = [
            str(bin_dir / "gunicorn"),
            "clinicdesk.wsgi",
            "--workers",
            str(options.gunicorn_workers),
            "--bind",
            f"127.0.0.1:{options.port}",
        ]
        gunicorn = _start(command, env, out / "gunicorn.log")
        groups.append(("gunicorn", gunicorn))
        cluster = _start([*_manage(base_dir), "qcluster"], env, out / "qcluster.log")
        groups.append(("the job cluster", cluster))
        _wait_ready(options.port, gunicorn, out / "gunicorn.log")
        say(f"Running Locust for {options.minutes:g} min…")
        with (out / "locust.log").open("w") as log:
            locust = subprocess.run(
                [
                    str(bin_dir / "locust"),
                    "-f",
                    str(base_dir / "clinicdesk" / "load" / "locustfile.py"),
                    "--headless",
                    "-u",
                    str(options.users + INTAKE_USERS),
                    "-r",
                    str(SPAWN_RATE),
                    "-t",
                    f"{max(1, round(options.minutes * 60))}s",
                    "--host",
                    f"http://127.0.0.1:{options.port}",
                    "--csv",
                    str(out / "locust"),
                    "--only-summary",
                    "--stop-timeout",
                    "15",
                    "--exit-code-on-error",
                    "0",
                    "--loglevel",
                    "WARNING",
                ],
                env={**env, "LOAD_PLAN": str(out / "plan.json"), "LOAD_OUT": str(out)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base_dir,
                check=False,
            )
        if locust.returncode != 0:
            raise RunError(
                f"Locust stopped with exit code {locust.returncode}: see {out}/locust.log"
            )
    finally:
        stopped = [f"{name} ({stop_group(process)})" for name, process in reversed(groups)]
        say(f"Stopped {', '.join(stopped)}.")


def _check(base_dir: Path, env: dict, out: Path, say) -> bool:
    checks = subprocess.run(
        [*_manage(base_dir), "load", "--check", str(out)],
        env=env,
        cwd=base_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in checks.stdout.splitlines():
        say(f"  {line}")
    if checks.returncode not in (0, 1):
        (out / "check.log").write_text(checks.stdout + checks.stderr)
        raise RunError(f"The checks could not run: see {out}/check.log")
    return checks.returncode == 0


# --- the database ----------------------------------------------------------------------------


def fresh_database(base_dir: Path, pgdata: Path) -> str:
    """Start the load run's own embedded server (if it is not running) and create an empty
    `clinicdesk_load` database on it; return its URL."""
    import psycopg

    env = {**os.environ, "CLINICDESK_PGDATA": str(pgdata)}
    server = subprocess.run(
        [sys.executable, "-m", "clinicdesk.embedded_db", "url"],
        env=env,
        cwd=base_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if server.returncode != 0:
        raise RunError(f"The load run's PostgreSQL did not start:\n{server.stderr}")
    admin_url = server.stdout.strip().splitlines()[-1]
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    path, _, query = admin_url.partition("?")
    return f"{path.rsplit('/', 1)[0]}/{DATABASE}" + (f"?{query}" if query else "")


def stop_database(base_dir: Path, pgdata: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "clinicdesk.embedded_db", "stop"],
        env={**os.environ, "CLINICDESK_PGDATA": str(pgdata)},
        cwd=base_dir,
        capture_output=True,
        check=False,
    )


def child_env(base_dir: Path, pgdata: Path, database_url: str, port: int) -> dict[str, str]:
    """Production settings (DEBUG off, a secret key, one allowed host) over plain HTTP on the
    loopback, on the load run's database."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CLINICDESK_PGDATA=str(pgdata),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        SECURE_HSTS_SECONDS="0",
        SITE_URL=f"http://127.0.0.1:{port}",
        # Escalation notices would go to an SMTP server that is not there.
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(base_dir),
        PYTHONWARNINGS="ignore::UserWarning",
    )
    return env


# --- processes -------------------------------------------------------------------------------


def _step(command: list[str], env: dict, log: Path) -> None:
    with log.open("w") as output:
        done = subprocess.run(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        raise RunError(f"`{' '.join(command[1:4])}` failed: see {log}")


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in a session (and process group) of its own, so that stopping it stops every
    process it forked (gunicorn's workers, the cluster's)."""
    return subprocess.Popen(
        command,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_group(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> str:
    """SIGTERM to the group's leader (gunicorn's master, the cluster's main process), which
    stops its own children in order; SIGKILL to the whole group if anything is left after
    `timeout`. Returns, once no process of the group runs, the signal that it took."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGTERM:
                os.kill(process.pid, sig)
            else:
                os.killpg(process.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader: a zombie still counts as a member
            if not group_alive(process.pid):
                process.wait()  # the leader is gone or a zombie: this returns at once
                return sig.name
            time.sleep(0.1)
    return "still running"


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting to be reaped do not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _require_free_port(port: int) -> None:
    with socket.socket() as probe:
        # As gunicorn binds: a previous run's connections in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RunError(f"Port {port} is in use: choose another with --port.") from None


def _wait_ready(port: int, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/accounts/login/"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RunError(f"gunicorn stopped at start: see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RunError(f"gunicorn did not answer within {timeout:.0f} s: see {log}")


# --- what the run leaves ---------------------------------------------------------------------


def machine() -> str:
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GB"
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU{memory}, {platform.system()} {platform.machine()}"


def write_summary(out: Path, options: Options, result: Result, started: datetime) -> None:
    (out / "tables.md").write_text(
        f"{report.format_table(result.rows, markdown=True)}\n\n"
        f"{report.format_table(result.steady_rows, markdown=True)}\n"
    )
    checks_path = out / "checks.json"
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "out"},
            "intake_per_hour": options.intake_per_hour,
            "gunicorn_workers": options.gunicorn_workers,
        },
        "rows": [asdict(row) for row in result.rows],
        "steady_seconds": result.steady_seconds,
        "steady_rows": [asdict(row) for row in result.steady_rows],
        "errors": result.errors,
        "checks": _read_json(checks_path) or [],
        "ok": result.ok,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else {}
