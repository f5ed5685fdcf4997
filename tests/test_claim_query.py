"""The claim query: its index, its locking clause and its cost per task."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_task import locking
from background_task.locking import claim_next_task
from background_task.models import Task
from background_task.worker import Worker
from tests.taskapp.tasks import mark

pytestmark = pytest.mark.django_db


def fill_future_and_failed(future: int, failed: int) -> None:
    now = timezone.now()
    rows = [Task(task_name="tests.mark", task_params="[[],{}]", run_at=now + timedelta(days=1, seconds=n)) for n in range(future)]
    rows += [
        Task(task_name="tests.mark", task_params="[[],{}]", run_at=now - timedelta(seconds=n), attempts=25, failed_at=now)
        for n in range(failed)
    ]
    Task.objects.bulk_create(rows, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE background_task")


def claim_plan() -> str:
    """Return the database's plan for the statement that picks the next task."""
    now = timezone.now()
    params = [
        connection.ops.adapt_datetimefield_value(now),
        connection.ops.adapt_datetimefield_value(now - timedelta(hours=1)),
    ]
    if connection.vendor == "postgresql":
        sql, params = f"EXPLAIN {locking.CLAIM_SKIP_LOCKED}", [*params, "test-worker", params[0]]
    else:
        sql = f"EXPLAIN QUERY PLAN {locking.EARLIEST_DUE}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())


def test_claim_uses_partial_index():
    fill_future_and_failed(future=20_000, failed=5_000)
    mark("/dev/null", "due")

    plan = claim_plan()

    assert "background_task_claim_idx" in plan, plan


def test_claim_skips_locked_rows_where_supported(tmp_path):
    mark(str(tmp_path / "marks.txt"), "due")

    with CaptureQueriesContext(connection) as queries:
        claim = claim_next_task("test-worker")

    assert claim is not None
    skip_locked = any("FOR UPDATE SKIP LOCKED" in query["sql"] for query in queries.captured_queries)
    # PostgreSQL has SKIP LOCKED; SQLite relies on the conditional UPDATE alone.
    assert skip_locked == (connection.vendor == "postgresql")


def test_every_row_lock_skips_locked_rows(tmp_path):
    """On PostgreSQL, every statement of a drain that locks rows with FOR UPDATE also uses SKIP LOCKED."""
    for number in range(3):
        mark(str(tmp_path / "marks.txt"), f"task-{number}")

    with CaptureQueriesContext(connection) as queries:
        Worker().run_until_idle()

    locking_statements = [query["sql"] for query in queries.captured_queries if "FOR UPDATE" in query["sql"]]
    if connection.vendor == "postgresql":
        assert len(locking_statements) >= 3
    assert all("FOR UPDATE SKIP LOCKED" in statement for statement in locking_statements)


def test_claim_update_is_conditional(tmp_path):
    """Without SKIP LOCKED, the UPDATE takes the row only if it still carries the lock it was read with."""
    mark(str(tmp_path / "marks.txt"), "due")

    with CaptureQueriesContext(connection) as queries:
        claim_next_task("test-worker")

    updates = [query["sql"] for query in queries.captured_queries if "UPDATE" in query["sql"]]
    assert len(updates) == 1
    if connection.vendor == "postgresql":
        assert len(queries.captured_queries) == 1
    else:
        assert "locked_by IS" in updates[0]
        assert "locked_at IS" in updates[0]


def test_claim_locks_one_row_of_many(tmp_path):
    """One claim locks exactly one row, even inside a transaction with many rows due."""
    for number in range(20):
        mark(str(tmp_path / "marks.txt"), f"task-{number}")

    with transaction.atomic():
        first = claim_next_task("test-worker")
        second = claim_next_task("test-worker")

    locked = list(Task.objects.filter(locked_by="test-worker").order_by("id").values_list("id", flat=True))
    assert locked == sorted([first.task.pk, second.task.pk])
    assert first.task.pk < second.task.pk


def test_drain_statements_per_task(tmp_path):
    tasks = 5
    for number in range(tasks):
        mark(str(tmp_path / "marks.txt"), f"task-{number}")
    # Each task reads its own row once; those queries are the tasks', not the worker's.
    task_queries = tasks

    with CaptureQueriesContext(connection) as queries:
        claimed = Worker().run_until_idle()

    statements = [
        query["sql"] for query in queries.captured_queries
        if query["sql"].split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")
    ]
    assert claimed == tasks
    # On PostgreSQL, one statement per task deletes the finished row and
    # claims the next. Elsewhere, per task: the DELETE and the claim's SELECT
    # and UPDATE. Either way one more statement finds nothing due.
    per_task = 1 if connection.vendor == "postgresql" else 3
    assert len(statements) - task_queries == per_task * tasks + 1, statements
