"""End-to-end test of the demo project in example/, run as a user runs it.

Each step is a real ``manage.py`` subprocess on a SQLite file in a temporary
folder, with real task output checked afterwards. The test uses no Django
test database, so it runs the same whatever BACKGROUND_TASK_DATABASE_URL is.
"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
MANAGE_PY = REPOSITORY_ROOT / "example" / "manage.py"

#: Long enough for the flaky task's two retries, 6 s and then 21 s after its failures.
WORKER_DURATION = 35


def demo_environment(var_dir: Path) -> dict[str, str]:
    """Return an environment that points the demo at ``var_dir`` and finds background_task in this checkout."""
    env = os.environ.copy()
    # pytest-django exports spec.settings here, which would replace the demo's settings.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["EXAMPLE_VAR_DIR"] = str(var_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), env.get("PYTHONPATH")]))
    return env


def manage(var_dir: Path, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``example/manage.py`` with ``arguments`` in this test's Python and return the finished process."""
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), *arguments],
        cwd=MANAGE_PY.parent,
        env=demo_environment(var_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def manage_ok(var_dir: Path, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``manage.py`` like :func:`manage` and fail the test, showing its output, unless it exits 0."""
    result = manage(var_dir, *arguments, timeout=timeout)
    assert result.returncode == 0, f"manage.py {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def stored_rows(var_dir: Path) -> list[tuple]:
    """Return (task_name, attempts, failed_at) of every task row in the demo's database."""
    with sqlite3.connect(var_dir / "demo.sqlite3") as connection:
        return connection.execute("SELECT task_name, attempts, failed_at FROM background_task").fetchall()


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """Run the demo's four steps once; return the var folder, the worker's run and the report's run."""
    var_dir = tmp_path_factory.mktemp("demo-var")
    manage_ok(var_dir, "migrate")
    manage_ok(var_dir, "enqueue_demo")
    worker = manage_ok(
        var_dir, "process_tasks", "--duration", str(WORKER_DURATION), "--sleep", "1", "--log-level", "INFO",
        timeout=WORKER_DURATION + 60,
    )
    report = manage(var_dir, "demo_report", "--check")
    return var_dir, worker, report


def test_report_counts_readme_words(finished_demo):
    var_dir, _, _ = finished_demo
    readme = REPOSITORY_ROOT / "README.rst"
    text = readme.read_text(encoding="utf-8")

    report = json.loads((var_dir / "reports" / "README.rst.json").read_text(encoding="utf-8"))

    assert report["source"] == str(readme)
    assert report["words"] == len(text.split())
    assert report["lines"] == len(text.splitlines())


def test_report_per_documentation_file(finished_demo):
    var_dir, _, _ = finished_demo

    names = sorted(path.name for path in (var_dir / "reports").glob("*.json"))

    assert "README.rst.json" in names
    assert "docs__index.rst.json" in names
    assert "example__README.rst.json" in names


def test_summary_mail_sent(finished_demo):
    var_dir, _, _ = finished_demo

    mail_files = list((var_dir / "mail").iterdir())

    assert len(mail_files) == 1
    message = mail_files[0].read_text(encoding="utf-8")
    assert "Subject: Word counts of" in message
    assert "To: you@example.com" in message
    assert "README.rst" in message


def test_flaky_task_retried_twice(finished_demo):
    var_dir, worker, _ = finished_demo

    assert (var_dir / "flaky_runs.txt").read_text(encoding="utf-8").strip() == "3"
    retries = [line for line in worker.stderr.splitlines() if "reports.tasks.flaky_step failed on attempt" in line]
    assert len(retries) == 2, worker.stderr
    assert "Flaky step succeeded on run 3" in worker.stderr


def test_queue_empty_afterwards(finished_demo):
    var_dir, _, report = finished_demo

    assert stored_rows(var_dir) == []
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Tasks left in the queue: 0" in report.stdout
    assert "Tasks failed for good: 0" in report.stdout


def test_report_check_fails_before_worker(tmp_path):
    manage_ok(tmp_path, "migrate")
    manage_ok(tmp_path, "enqueue_demo")

    report = manage(tmp_path, "demo_report", "--check")

    assert report.returncode == 1
    assert "The demo did not finish" in report.stderr
    assert "tasks are still queued" in report.stderr


def test_enqueue_rejects_missing_source_root(tmp_path):
    manage_ok(tmp_path, "migrate")

    result = manage(tmp_path, "enqueue_demo", "--source-root", str(tmp_path / "missing"))

    assert result.returncode == 1
    assert "is not a folder" in result.stderr
    assert stored_rows(tmp_path) == []
