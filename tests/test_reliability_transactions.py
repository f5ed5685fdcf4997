"""Tasks stored inside database transactions, and the queue on a second database alias.

Calling a task function stores its row with an ordinary ``Task.objects.create``
on the alias that the database routers give the Task model, which is
``default`` without a router. The row is therefore part of whatever
transaction the caller has open on that alias. It disappears when that
transaction rolls back, and no other connection, a worker's included, can
read it before the transaction commits.

The ``test_*`` functions run on the single database of ``spec.settings``.
The ``multidb_*`` functions need two aliases and a router
(``tests.settings_multidb``). A pytest process fixes its settings when it
starts, so :func:`test_multi_database_scenarios` runs them in a pytest
process of their own, and this process does not collect them.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from background_task import run_due_tasks
from background_task.models import Task
from tests.conftest import database_url
from tests.processes import django_admin, start_worker, stop
from tests.reliability_report import Record
from tests.taskapp.transaction_tasks import mark, note_group

pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: How many tasks each phase of the worker tests stores in one transaction.
TASKS_PER_TRANSACTION = 5

#: How many idle polls a worker must log while a transaction is open before
#: the test takes it as having looked at the queue during the transaction.
POLLS_WHILE_OPEN = 3

#: The message an idle worker logs at DEBUG each time it found no due task.
IDLE_POLL_MESSAGE = "found no due task"


class Rollback(Exception):
    """Raised inside ``transaction.atomic()`` to roll the block back."""


# ---------------------------------------------------------------------------
# Helpers


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Poll ``condition`` until it returns true or ``timeout`` seconds pass; return whether it did."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def idle_polls(log: Path) -> int:
    """Return how many times the worker logging to ``log`` has found no due task."""
    if not log.exists():
        return 0
    return log.read_text(encoding="utf-8").count(IDLE_POLL_MESSAGE)


def wait_for_polls_after(log: Path, seen: int, more: int = POLLS_WHILE_OPEN) -> int:
    """Wait until the worker has logged ``more`` idle polls beyond ``seen``; return the new count.

    A poll logged as number ``seen + 1`` may have started before the caller
    wrote anything, but every later one started after the caller read
    ``seen``. With ``more`` of at least 2, the worker has therefore looked at
    the queue at least once after the caller's writes.
    """
    assert wait_until(lambda: idle_polls(log) >= seen + more), f"the worker logged no {more} more idle polls"
    return idle_polls(log)


def runs(marks: Path) -> Counter[str]:
    """Count the runs of each token in the marks file that the tasks append to."""
    if not marks.exists():
        return Counter()
    return Counter(line.split()[0] for line in marks.read_text(encoding="utf-8").splitlines())


def store_marks(marks: Path, prefix: str, count: int = TASKS_PER_TRANSACTION) -> list[str]:
    """Store ``count`` mark tasks with tokens ``<prefix>-<n>``; return the tokens."""
    tokens = [f"{prefix}-{number}" for number in range(count)]
    for token in tokens:
        mark(str(marks), token)
    return tokens


def count_rows(other) -> int:
    """Count the task rows through the database connection ``other``, in autocommit."""
    with other.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {Task._meta.db_table}")
        return cursor.fetchone()[0]


def debug_worker(env: dict[str, str], log: Path):
    """Start a worker that polls every 0.1 s and logs each idle poll to ``log``.

    The log goes to a file rather than a pipe, so a test that reads it late
    never blocks a worker on a full pipe.
    """
    return start_worker(env, "--sleep", "0.1", "--log-file", str(log), "--log-level", "DEBUG")


# ---------------------------------------------------------------------------
# One database


def test_rolled_back_enqueue_leaves_no_row(tmp_path):
    """A task stored inside ``transaction.atomic()`` that rolls back leaves no row."""
    with pytest.raises(Rollback), transaction.atomic():
        task = mark(str(tmp_path / "marks.txt"), "rolled-back")
        assert task._state.db == "default"
        assert Task.objects.filter(pk=task.pk).exists()
        raise Rollback

    assert Task.objects.count() == 0


def test_rolled_back_savepoint_drops_only_its_task(tmp_path):
    """A nested ``atomic()`` that rolls back drops the tasks stored in it, and keeps the outer block's."""
    marks = str(tmp_path / "marks.txt")
    with transaction.atomic():
        kept = mark(marks, "kept")
        with pytest.raises(Rollback), transaction.atomic():
            mark(marks, "dropped")
            raise Rollback

    assert list(Task.objects.values_list("pk", flat=True)) == [kept.pk]


def test_rejected_call_keeps_transaction_usable(tmp_path):
    """A call rejected for its arguments sends no SQL, so the caller's transaction goes on.

    On PostgreSQL, a failed statement would abort the whole transaction, and
    the next call in the block would raise instead of storing its task.
    """
    marks = str(tmp_path / "marks.txt")
    with transaction.atomic():
        mark(marks, "before")
        with pytest.raises(TypeError):
            mark(marks, {"not", "json"})
        with pytest.raises(TypeError):
            mark(marks)
        mark(marks, "after")

    stored = sorted(json.loads(params)[0][1] for params in Task.objects.values_list("task_params", flat=True))
    assert stored == ["after", "before"]


def test_other_connection_sees_task_after_commit(tmp_path):
    """A second connection does not see a stored task until the storing transaction commits."""
    other = connections.create_connection("default")
    try:
        with transaction.atomic():
            mark(str(tmp_path / "marks.txt"), "pending")
            seen_while_open = count_rows(other)
            seen_by_caller = Task.objects.count()
        seen_after_commit = count_rows(other)
    finally:
        other.close()

    assert seen_by_caller == 1
    assert seen_while_open == 0
    assert seen_after_commit == 1


def test_worker_waits_for_commit(tmp_path, worker_env, reliability):
    """A polling worker runs no task of an open transaction, none of a rolled-back one, and each committed one once.

    The test keeps a transaction open while a real ``process_tasks`` worker
    polls the queue three times. Then the transaction rolls back, and a
    second one commits.
    """
    marks, log = tmp_path / "marks.txt", tmp_path / "worker.log"
    worker = debug_worker(worker_env, log)
    try:
        # The worker has connected and looked at the empty queue once.
        polls = wait_for_polls_after(log, 0, more=1)

        with pytest.raises(Rollback), transaction.atomic():
            rolled_back = store_marks(marks, "rolled-back")
            polls = wait_for_polls_after(log, polls)
            raise Rollback
        polls = wait_for_polls_after(log, polls)
        rows_after_rollback = Task.objects.count()

        with transaction.atomic():
            committed = store_marks(marks, "committed")
            polls = wait_for_polls_after(log, polls)
            runs_before_commit = sum(runs(marks).values())

        wait_until(lambda: set(committed) <= set(runs(marks)))
        wait_until(lambda: not Task.objects.exists())
    finally:
        logs = stop([worker])

    counted = runs(marks)
    left_locked = Task.objects.filter(locked_by__isnull=False).count()
    reliability.record_runs(
        "Tasks stored in a transaction while a worker polls", counted, committed,
        left_locked=left_locked,
        rolled_back=len(rolled_back),
        rolled_back_runs=sum(counted[token] for token in rolled_back),
        runs_before_commit=runs_before_commit,
    )

    assert runs_before_commit == 0
    assert rows_after_rollback == 0
    assert all(counted[token] == 0 for token in rolled_back)
    assert all(counted[token] == 1 for token in committed)
    assert left_locked == 0
    assert Task.objects.count() == 0
    assert "Traceback" not in logs[0]


def test_commit_wakes_idle_postgresql_worker(tmp_path, worker_env):
    """On PostgreSQL, an idle worker hears of a task when the storing transaction commits, not before.

    The worker waits up to 300 s between polls. If the notification came
    while the transaction was still open, the worker would wake, find
    nothing, and wait 300 s more, far past this test's 60 s limit.
    """
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL notifies idle workers; SQLite workers poll every --sleep seconds")
    marks, log = tmp_path / "marks.txt", tmp_path / "worker.log"
    worker = start_worker(worker_env, "--sleep", "300", "--log-file", str(log), "--log-level", "DEBUG")
    try:
        wait_for_polls_after(log, 0, more=1)
        with transaction.atomic():
            mark(str(marks), "woken")
            # Gives a notification sent too early the time to wake the worker.
            time.sleep(1)
            polls_while_open = idle_polls(log)
        ran = wait_until(lambda: runs(marks)["woken"] == 1, timeout=60)
    finally:
        stop([worker])

    assert polls_while_open == 1
    assert ran


# ---------------------------------------------------------------------------
# Two databases, run by test_multi_database_scenarios


def test_multi_database_scenarios(tmp_path, reliability):
    """The ``multidb_*`` scenarios pass in a pytest process with ``tests.settings_multidb``."""
    scenarios = sorted(name for name in globals() if name.startswith("multidb_"))
    report = tmp_path / "multidb-reliability.json"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [
        sys.executable, "-m", "pytest", str(Path(__file__).relative_to(REPO_ROOT)),
        "--ds", "tests.settings_multidb", "-o", "python_functions=multidb_*",
        "-p", "no:cacheprovider", "-q", f"--reliability-report={report}",
    ]

    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if report.exists():
        for data in json.loads(report.read_text(encoding="utf-8"))["records"]:
            reliability.records.append(Record(**data))

    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_counts(result.stdout) == expected_counts(scenarios), result.stdout


def summary_counts(output: str) -> dict[str, int]:
    """Return the test outcomes counted in pytest's closing summary line, such as {"passed": 5, "skipped": 1}.

    Other counts on that line, such as warnings, are left out.
    """
    lines = output.strip().splitlines()
    pattern = r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)\b"
    return {outcome: int(number) for number, outcome in re.findall(pattern, lines[-1] if lines else "")}


def expected_counts(scenarios: list[str]) -> dict[str, int]:
    """Return the summary counts that a run of ``scenarios`` must show on this run's database."""
    expected_failures = sum(1 for name in scenarios if has_mark(globals()[name], "xfail"))
    # The trigger scenario checks a PostgreSQL feature and skips itself on SQLite.
    skipped = 0 if connection.vendor == "postgresql" else 1
    counts = {"passed": len(scenarios) - expected_failures - skipped, "skipped": skipped, "xfailed": expected_failures}
    return {outcome: number for outcome, number in counts.items() if number}


def has_mark(function: Callable, name: str) -> bool:
    """Return whether ``function`` carries the pytest mark ``name``."""
    return any(marker.name == name for marker in getattr(function, "pytestmark", []))


def two_database_worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    """Return the environment of a worker with ``tests.settings_multidb`` on this run's test databases."""
    return {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.settings_multidb",
        "BACKGROUND_TASK_DATABASE_URL": database_url("default"),
        "BACKGROUND_TASK_BILLING_DATABASE_URL": database_url("billing"),
    }


def group_model():
    """Return auth's Group, which only ``tests.settings_multidb`` installs."""
    from django.contrib.auth.models import Group

    return Group


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_task_row_goes_to_routed_alias(tmp_path):
    """A call stores its row on the alias that the router gives Task, and ``default`` has no task table."""
    task = mark(str(tmp_path / "marks.txt"), "routed")

    assert task._state.db == "billing"
    assert Task.objects.using("billing").filter(pk=task.pk).exists()
    assert Task._meta.db_table not in connections["default"].introspection.table_names()


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_notify_trigger_only_on_routed_alias():
    """On PostgreSQL, migrating creates the trigger that wakes idle workers on the routed alias only."""
    if connections["billing"].vendor != "postgresql":
        pytest.skip("the notify trigger exists only on PostgreSQL")
    triggers = {}
    for alias in ("default", "billing"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'background_task_notify'")
            triggers[alias] = cursor.fetchone()[0]

    assert triggers == {"default": 0, "billing": 1}


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_rollback_on_task_alias_drops_task_and_data(tmp_path):
    """With the queue on the alias of the caller's data, one rollback drops both the data and the task."""
    group = group_model()
    with pytest.raises(Rollback), transaction.atomic(using="billing"):
        group.objects.using("billing").create(name="acme")
        note_group(str(tmp_path / "marks.txt"), "billing", "acme")
        raise Rollback

    assert not group.objects.using("billing").exists()
    assert Task.objects.count() == 0


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_worker_waits_for_commit_on_task_alias(tmp_path, worker_env, reliability):
    """A worker on the routed alias runs a task only after its transaction commits, and then finds the data stored with it."""
    group = group_model()
    marks, log = tmp_path / "marks.txt", tmp_path / "worker.log"
    worker = debug_worker(two_database_worker_env(worker_env), log)
    try:
        polls = wait_for_polls_after(log, 0, more=1)
        with transaction.atomic(using="billing"):
            names = [f"customer-{number}" for number in range(TASKS_PER_TRANSACTION)]
            for name in names:
                group.objects.using("billing").create(name=name)
                note_group(str(marks), "billing", name)
            wait_for_polls_after(log, polls)
            runs_before_commit = sum(runs(marks).values())

        wait_until(lambda: set(names) <= set(runs(marks)))
        wait_until(lambda: not Task.objects.exists())
    finally:
        stop([worker])

    counted = runs(marks)
    lines = marks.read_text(encoding="utf-8").splitlines() if marks.exists() else []
    left_locked = Task.objects.filter(locked_by__isnull=False).count()
    reliability.record_runs(
        "Tasks stored in a transaction on a routed alias while a worker polls", counted, names,
        left_locked=left_locked,
        runs_before_commit=runs_before_commit,
    )

    assert runs_before_commit == 0
    assert sorted(lines) == sorted(f"{name} found" for name in names)
    assert left_locked == 0


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_rollback_on_other_alias_keeps_task(tmp_path):
    """With the queue on another alias, rolling back the caller's data leaves its task stored.

    The task row was written in autocommit on ``billing`` while the
    transaction on ``default`` was open, so the rollback does not reach it,
    and a worker later runs the task without its data.
    """
    group = group_model()
    marks = tmp_path / "marks.txt"
    with pytest.raises(Rollback), transaction.atomic(using="default"):
        group.objects.create(name="acme")
        note_group(str(marks), "default", "acme")
        raise Rollback

    assert not group.objects.exists()
    assert Task.objects.count() == 1
    assert run_due_tasks() == 1
    assert marks.read_text(encoding="utf-8").splitlines() == ["acme missing"]


@pytest.mark.django_db(transaction=True, databases=["default", "billing"])
def multidb_on_commit_stores_task_after_commit(tmp_path):
    """``transaction.on_commit(using=...)`` stores the task only once the caller's data is committed."""
    group = group_model()
    marks = tmp_path / "marks.txt"
    with pytest.raises(Rollback), transaction.atomic(using="default"):
        group.objects.create(name="rolled-back")
        transaction.on_commit(partial(note_group, str(marks), "default", "rolled-back"), using="default")
        raise Rollback
    rows_after_rollback = Task.objects.count()

    with transaction.atomic(using="default"):
        group.objects.create(name="acme")
        transaction.on_commit(partial(note_group, str(marks), "default", "acme"), using="default")
        rows_before_commit = Task.objects.count()
    rows_after_commit = Task.objects.count()

    assert rows_after_rollback == 0
    assert rows_before_commit == 0
    assert rows_after_commit == 1
    assert run_due_tasks() == 1
    assert marks.read_text(encoding="utf-8").splitlines() == ["acme found"]


def multidb_missing_table_names_routed_alias(tmp_path, worker_env):
    """With the queue routed to an alias where it is not migrated, process_tasks names the migrate command for that alias."""
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.settings_multidb",
        "BACKGROUND_TASK_DATABASE_URL": f"sqlite://{tmp_path / 'default.sqlite3'}",
        "BACKGROUND_TASK_BILLING_DATABASE_URL": f"sqlite://{tmp_path / 'billing.sqlite3'}",
    }

    result = subprocess.run(
        [*django_admin(), "process_tasks", "--duration", "0.1"],
        env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "python manage.py migrate background_task --database=billing" in result.stderr
