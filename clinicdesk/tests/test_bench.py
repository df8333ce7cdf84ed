"""The benchmark harness: calibration, the built-in scenario, failures, scratch databases."""

from __future__ import annotations

import json
import os
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection

from clinicdesk import bench

PGBENCH_OUTPUT = """\
pgbench (16.2)
transaction type: <builtin: simple update>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
duration: 3 s
number of transactions actually processed: 16496
number of failed transactions: 0 (0.000%)
latency average = 1.455 ms
initial connection time = 7.880 ms
tps = 5497.372952 (without initial connection time)
"""


def test_percentile_and_median() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert bench.median(values) == 3.0
    assert bench.percentile(values, 0) == 1.0
    assert bench.percentile(values, 100) == 5.0
    assert bench.percentile(values, 25) == 2.0
    assert bench.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_parse_pgbench_output() -> None:
    parsed = bench.parse_pgbench_output(PGBENCH_OUTPUT)
    assert parsed == {"tps": 5497.372952, "latency_avg_ms": 1.455, "transactions": 16496}
    with pytest.raises(RuntimeError, match="no TPS line"):
        bench.parse_pgbench_output("connection to server failed")


def test_call_benchmark_with_and_without_context() -> None:
    context = bench.BenchContext(tps_w=100.0)
    assert bench.call_benchmark(lambda: {"a_per_s": 1}, context) == {"a_per_s": 1}
    assert bench.call_benchmark(lambda ctx: {"w": ctx.tps_w}, context) == {"w": 100.0}
    with pytest.raises(TypeError):
        bench.call_benchmark(lambda: [1, 2], context)
    assert bench.call_benchmark(lambda rounds=3: {"r": rounds}, context) == {"r": 3}
    assert bench.call_benchmark(lambda context=None: {"w": context.tps_w}, context) == {"w": 100.0}
    assert bench.call_benchmark(lambda: {"mix": {"a": 1, "b": True}}, context) == {
        "mix.a": 1,
        "mix.b": 1,
    }
    with pytest.raises(TypeError):
        bench.call_benchmark(lambda: {"a": None}, context)
    with pytest.raises(TypeError):
        bench.call_benchmark(lambda: {"a": [1]}, context)


def test_rate_and_duration_names() -> None:
    for name in ("claims_per_s", "x_per_second", "w_tps", "x_per_s_median", "a.b_per_s_p99"):
        assert bench.is_rate(name), name
    for name in ("claim_p99_ms", "samples", "per_step_s", "x_per_s_total"):
        assert not bench.is_rate(name), name
    assert bench.is_duration("claim_p99_ms")
    assert not bench.is_duration("claims_per_s")


def test_targets_and_ratios() -> None:
    result = bench.ScenarioResult(
        "claim",
        metrics={
            "claims_per_s": 500.0,
            "target_claims_per_s": ">= 0.25 W",
            "claim_p99_ms": 12.0,
            "target_claim_p99_ms": 10,
            "plan": "Index Scan",
            "lag_s": 1.0,
            "ratio_to_w_lag_s": 0.5,
        },
    )
    figures, rows = bench.annotate(result, tps_w=1000.0)
    by_metric = {row.metric: row for row in rows}
    assert figures["ratio_to_w_claims_per_s"] == 0.5
    assert by_metric["claims_per_s"].check == "ok"
    assert by_metric["claims_per_s"].target == ">= 0.25 W"
    assert by_metric["claim_p99_ms"].check == "MISSED"
    assert by_metric["claim_p99_ms"].target == "<= 10"
    assert by_metric["claim_p99_ms"].ratio == ""
    assert by_metric["lag_s"].ratio == "0.500"
    assert by_metric["plan"].value == "Index Scan"
    assert figures["status"] == "target missed"
    table = bench.render_table(rows)
    assert table.splitlines()[0].startswith("| scenario")
    assert "ratio to W" in table.splitlines()[0]


@pytest.mark.django_db(transaction=True)
def test_command_calibrates_and_runs_orm_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    stdout = StringIO()
    call_command(
        "bench",
        "--only",
        "orm_roundtrip",
        "--calibration-seconds",
        "2",
        "--calibration-scale",
        "1",
        "--json",
        str(out),
        stdout=stdout,
    )
    report = json.loads(out.read_text())
    calibration = report["calibration"]
    assert calibration[bench.W_KEY] > 0
    assert calibration["duration_s"] == 2
    assert calibration["scale"] == 1
    assert calibration["pgbench_version"].startswith("pgbench (PostgreSQL)")
    assert calibration["cpu_count"] >= 1
    assert calibration["postgres_version"]
    assert set(report["scenarios"]) == {"orm_roundtrip"}
    metrics = report["scenarios"]["orm_roundtrip"]
    assert metrics["status"] == "ok"
    for prefix in ("select_1", "insert_select"):
        assert metrics[f"{prefix}_per_s"] > 0
        assert 0 < metrics[f"{prefix}_median_ms"] <= metrics[f"{prefix}_p99_ms"]
        assert metrics[f"ratio_to_w_{prefix}_per_s"] > 0
    text = stdout.getvalue()
    assert "orm_roundtrip" in text
    assert "ratio to W" in text
    # The calibration database is gone again.
    with psycopg.connect(**bench.conn_params("postgres")) as admin:
        leftover = admin.execute(
            "SELECT datname FROM pg_database WHERE datname = %s",
            (f"{bench.CALIBRATION_DATABASE}_p{os.getpid()}",),
        ).fetchall()
    assert leftover == []


@pytest.mark.django_db(transaction=True)
def test_failing_scenario_fails_the_command_after_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(context: bench.BenchContext) -> dict[str, float]:
        raise ValueError("scenario exploded")

    monkeypatch.setattr(
        bench,
        "discover_benchmarks",
        lambda: {"boom": boom, "fine": lambda: {"things_per_s": 10.0}},
    )
    out = tmp_path / "bench.json"
    with pytest.raises(CommandError, match="boom"):
        call_command("bench", "--skip-calibration", "--json", str(out), stdout=StringIO())
    report = json.loads(out.read_text())
    assert report["scenarios"]["boom"]["status"] == "failed"
    assert "scenario exploded" in report["scenarios"]["boom"]["error"]
    assert report["scenarios"]["fine"]["things_per_s"] == 10.0
    assert report["scenarios"]["fine"]["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_skip_calibration_reuses_an_earlier_w(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"calibration": {bench.W_KEY: 1000.0}, "scenarios": {}}))
    monkeypatch.setattr(bench, "discover_benchmarks", lambda: {"r": lambda: {"x_per_s": 250}})
    call_command("bench", "--skip-calibration", "--json", str(out), stdout=StringIO())
    report = json.loads(out.read_text())
    assert report["calibration"]["reused"] is True
    assert report["scenarios"]["r"]["ratio_to_w_x_per_s"] == 0.25


@pytest.mark.django_db(transaction=True)
def test_scratch_database_is_migrated_and_isolated() -> None:
    app_database = connection.settings_dict["NAME"]
    context = bench.BenchContext()
    with context.scratch_database("test probe") as scratch:
        assert scratch.name.startswith("clinicdesk_bench_test_probe_p")
        assert connection.settings_dict["NAME"] == scratch.name
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == scratch.name
            cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'queues'")
            assert cursor.fetchone()[0] >= 1
        Group.objects.create(name="bench scratch probe")
        assert Group.objects.filter(name="bench scratch probe").exists()
    assert connection.settings_dict["NAME"] == app_database
    assert not Group.objects.filter(name="bench scratch probe").exists()
    with psycopg.connect(**bench.conn_params("postgres")) as admin:
        row = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (scratch.name,)
        ).fetchone()
    assert row is None
