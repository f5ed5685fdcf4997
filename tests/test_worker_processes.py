"""Real ``process_tasks`` processes sharing one queue."""

import signal
import subprocess
import time
from collections import Counter

import pytest
from django.db import connection

from background_task.models import Task
from tests.processes import django_admin, finish, start_worker, stop, wait_for_claim, wait_for_empty_queue, wait_for_log_line
from tests.taskapp.tasks import mark, print_and_mark, raise_system_exit, sleep_then_mark

pytestmark = pytest.mark.django_db(transaction=True)


def test_workers_run_each_task_once(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    tokens = [f"task-{number}" for number in range(300)]
    for token in tokens:
        mark(str(marks), token)

    workers = [start_worker(worker_env, "--sleep", "0.2", "--log-level", "INFO") for _ in range(3)]
    wait_for_empty_queue()
    logs = stop(workers)

    lines = marks.read_text().splitlines()
    runs = Counter(line.split()[0] for line in lines)
    assert set(runs) == set(tokens)
    assert max(runs.values()) == 1
    assert Task.objects.count() == 0
    assert not any("Traceback" in log for log in logs)
    assert all("stopped on request" in log for log in logs)


def test_workers_lock_with_distinct_ids(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    for number in range(60):
        mark(str(marks), f"task-{number}")

    workers = [start_worker(worker_env, "--sleep", "0.2") for _ in range(2)]
    wait_for_empty_queue()
    stop(workers)

    ids_by_pid: dict[str, set[str]] = {}
    for line in marks.read_text().splitlines():
        _, pid, locked_by = line.split()
        ids_by_pid.setdefault(pid, set()).add(locked_by)
    all_ids = [worker_id for ids in ids_by_pid.values() for worker_id in ids]
    assert len(all_ids) == len(set(all_ids))
    assert all(len(ids) == 1 for ids in ids_by_pid.values())


def test_duration_lets_task_finish(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    sleep_then_mark(str(marks), "slow", 2.0)

    worker = start_worker(worker_env, "--duration", "0.5", "--sleep", "0.1")
    finish(worker)

    assert marks.read_text().split()[0] == "slow"
    assert Task.objects.count() == 0


def test_sigterm_lets_task_finish(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    sleep_then_mark(str(marks), "slow", 2.0)
    worker = start_worker(worker_env, "--sleep", "0.1", "--log-level", "INFO")
    wait_for_claim()

    log = stop([worker])[0]

    assert marks.read_text().split()[0] == "slow"
    assert Task.objects.count() == 0
    assert "received SIGTERM" in log


def test_sigterm_during_start_up_claims_nothing(tmp_path, worker_env):
    """A stop signal that arrives while the worker imports its tasks stops it before any claim."""
    marks = tmp_path / "marks.txt"
    task = mark(str(marks), "due")
    worker_env["TESTS_TASK_IMPORT_DELAY"] = "3"
    worker = start_worker(worker_env, "--sleep", "0.1", "--log-level", "INFO")

    log = stop([worker])[0]

    row = Task.objects.get(pk=task.pk)
    assert "received SIGTERM" in log
    assert "stopped on request" in log
    assert row.attempts == 0
    assert row.locked_by is None
    assert not marks.exists()


def test_log_std_without_logging_config(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    print_and_mark(str(marks), "loud")
    worker = start_worker(worker_env, "--sleep", "0.1", "--log-std")
    wait_for_empty_queue()

    log = stop([worker])[0]

    assert marks.read_text().split() == ["loud"]
    assert "stdout: out loud" in log
    assert "stderr: err loud" in log
    assert "RecursionError" not in log


def test_missing_table_names_migrate(tmp_path, worker_env):
    worker_env["BACKGROUND_TASK_DATABASE_URL"] = f"sqlite://{tmp_path / 'empty.sqlite3'}"

    result = subprocess.run(
        [*django_admin(), "process_tasks", "--duration", "0.1"],
        env=worker_env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "python manage.py migrate background_task" in result.stderr


def test_second_sigterm_records_interrupted_run(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    task = sleep_then_mark(str(marks), "slow", 30.0)
    worker = start_worker(worker_env, "--sleep", "0.1", "--log-level", "INFO")
    wait_for_claim()

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    _, log = worker.communicate(timeout=60)

    row = Task.objects.get(pk=task.pk)
    assert worker.returncode != 0
    assert "received a second SIGTERM" in log
    assert row.attempts == 1
    assert "Task interrupted" in row.last_error
    assert row.locked_by is None
    assert not marks.exists()


def test_system_exit_in_task_keeps_worker(tmp_path, worker_env):
    marks = tmp_path / "marks.txt"
    failing = raise_system_exit(3)
    mark(str(marks), "after")
    worker = start_worker(worker_env, "--sleep", "0.1")
    deadline = time.monotonic() + 60
    while not marks.exists():
        assert time.monotonic() < deadline, "the task after the SystemExit never ran"
        time.sleep(0.05)

    stop([worker])

    row = Task.objects.get(pk=failing.pk)
    assert row.attempts == 1
    assert "SystemExit: 3" in row.last_error


def test_sigterm_wakes_idle_worker(worker_env):
    worker = start_worker(worker_env, "--sleep", "300", "--log-level", "DEBUG")
    wait_for_log_line(worker, "found no due task")
    started = time.monotonic()

    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)

    assert worker.returncode == 0
    # Far below the 300 s --sleep: the signal ended the wait.
    assert time.monotonic() - started < 60


def test_new_task_wakes_idle_worker(tmp_path, worker_env):
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL notifies idle workers; SQLite workers poll every --sleep seconds")
    marks = tmp_path / "marks.txt"
    worker = start_worker(worker_env, "--sleep", "300", "--log-level", "DEBUG")
    wait_for_log_line(worker, "found no due task")

    mark(str(marks), "woken")
    deadline = time.monotonic() + 60
    while not marks.exists():
        assert time.monotonic() < deadline, "the idle worker did not wake for the new task"
        time.sleep(0.05)

    stop([worker])
    assert marks.read_text().split()[0] == "woken"


def test_duplicate_task_name_is_one_line_error(tmp_path, worker_env):
    """Two tasks registered under one name stop process_tasks with a CommandError, not a traceback."""
    app = tmp_path / "dupapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text(
        "from background_task import background\n\n\n"
        "@background(name='dup.task')\ndef first():\n    pass\n\n\n"
        "@background(name='dup.task')\ndef second():\n    pass\n"
    )
    (tmp_path / "dupsettings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\nINSTALLED_APPS = [*INSTALLED_APPS, 'dupapp']  # noqa: F405\n"
    )
    env = dict(
        worker_env,
        DJANGO_SETTINGS_MODULE="dupsettings",
        PYTHONPATH=f"{tmp_path}:{worker_env['PYTHONPATH']}",
    )

    result = subprocess.run(
        [*django_admin(), "process_tasks", "--duration", "0.1"],
        env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "CommandError" in result.stderr
    assert "'dup.task'" in result.stderr
    assert "Traceback" not in result.stderr
