"""The benchmark still runs: ``python -m benchmarks run --quick`` end to end, with no timing checks."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

MEASUREMENTS = [
    "insert_limit", "enqueue_autocommit", "enqueue_atomic",
    "limit", "drain_1_worker", "drain_2_workers", "drain_4_workers",
    "limit_deep", "drain_1_worker_deep",
    "pickup_default_sleep", "pickup_fast_sleep",
    "memory_before", "memory_after", "drain_1_worker_debug",
    "success_statements", "success_commits", "failure_statements", "failure_commits",
]


def run_quick(tmp_path, *options: str) -> dict:
    report = tmp_path / "benchmark.json"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--json", str(report), *options],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "drain_1_worker" in result.stdout
    return json.loads(report.read_text())


def check_database(document: dict, database: str) -> None:
    result = document["results"][database]
    measurements = result["measurements"]
    for name in MEASUREMENTS:
        assert measurements[name]["median"] > 0, name
        assert measurements[name]["min"] <= measurements[name]["median"] <= measurements[name]["max"]
    assert measurements["drain_2_workers"]["duplicates"] == 0
    assert measurements["drain_4_workers"]["duplicates"] == 0
    assert measurements["drain_1_worker"]["left"] == 0
    assert result["figures"]["drain_1_vs_limit"] > 0
    assert result["claim_plan_deep_table"]["plan"]
    verdicts = [verdict for verdict in document["targets"] if verdict["database"] == database]
    assert verdicts
    assert all(verdict["result"] in ("PASS", "MISS") for verdict in verdicts)


def test_quick_benchmark(tmp_path):
    postgres_url = os.environ.get("BACKGROUND_TASK_DATABASE_URL", "")
    if postgres_url.startswith("postgres"):
        # Reuse the server the tests run on; the benchmark makes its own database there.
        document = run_quick(tmp_path, "--databases", "sqlite,postgresql", "--postgres-url", postgres_url)
        check_database(document, "postgresql")
    else:
        document = run_quick(tmp_path, "--databases", "sqlite")
    check_database(document, "sqlite")
    assert document["quick"] is True


def test_bad_database_name_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--databases", "oracle"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--databases takes sqlite and/or postgresql" in result.stderr
