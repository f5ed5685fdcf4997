"""The claim query: its index, its locking clause and its cost per task."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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
    due = Task.objects.due(timezone.now())
    if connection.features.has_select_for_update_skip_locked:
        due = due.select_for_update(skip_locked=True)
    return due[:1].explain()


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


def test_claim_update_is_conditional(tmp_path):
    mark(str(tmp_path / "marks.txt"), "due")

    with CaptureQueriesContext(connection) as queries:
        claim_next_task("test-worker")

    updates = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"locked_by" IS NULL' in updates[0]
    assert '"locked_at" IS NULL' in updates[0]


def test_drain_costs_three_statements_per_task(tmp_path):
    tasks = 5
    for number in range(tasks):
        mark(str(tmp_path / "marks.txt"), f"task-{number}")
    # Each task reads its own row once; those queries are the tasks', not the worker's.
    task_queries = tasks

    with CaptureQueriesContext(connection) as queries:
        claimed = Worker().run_until_idle()

    statements = [
        query["sql"] for query in queries.captured_queries
        if query["sql"].split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT")
    ]
    assert claimed == tasks
    # Per task: the claim's SELECT and UPDATE, and the DELETE; then one
    # SELECT that finds nothing due.
    assert len(statements) - task_queries == 3 * tasks + 1, statements
