"""Claiming a due task for one worker, and the worker ids that locks carry.

The claim is the statement a worker sends most, so it is written as SQL
here: building and compiling the same queryset for every task costs more
than the database takes to run it. The rows it may pick are those of
:meth:`TaskQuerySet.due <background_task.models.TaskQuerySet.due>`, and
the partial index ``background_task_claim_idx`` serves it.
"""

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router
from django.utils import timezone

from background_task import conf
from background_task.models import Task

TABLE = Task._meta.db_table

DUE = "failed_at IS NULL AND run_at <= %s AND (locked_at IS NULL OR locked_at < %s)"

#: PostgreSQL: pick, lock and mark the earliest due row in one statement.
#: SKIP LOCKED passes over rows that other workers are claiming at this
#: moment, and ``previous`` hands back the lock the row carried before.
#: MATERIALIZED runs the pick once: as a plain subquery, a plan could run
#: it again for each row it joins and lock one more row each time.
CLAIM_SKIP_LOCKED = f"""
    WITH previous AS MATERIALIZED (
        SELECT id, locked_by, locked_at FROM {TABLE}
        WHERE {DUE}
        ORDER BY run_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {TABLE} AS task
    SET locked_by = %s, locked_at = %s
    FROM previous
    WHERE task.id = previous.id
    RETURNING task.*, previous.locked_by AS previous_locked_by, previous.locked_at AS previous_locked_at
"""

#: Elsewhere: read the earliest due row, then take it with a conditional UPDATE.
EARLIEST_DUE = f"SELECT * FROM {TABLE} WHERE {DUE} ORDER BY run_at, id LIMIT 1"
TAKE_IF_UNCHANGED = f"""
    UPDATE {TABLE} SET locked_by = %s, locked_at = %s
    WHERE id = %s AND locked_by IS %s AND locked_at IS %s
"""


def new_worker_id() -> str:
    """Return an id unique across hosts and processes: ``<host>:<pid>:<random>``."""
    host = socket.gethostname()[:40]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Claim:
    """A task a worker has locked, with what the row held before the claim."""

    task: Task
    worker_id: str
    locked_at: datetime
    #: The failed attempts recorded before this run.
    attempts: int
    #: The lock the row carried before this claim; set only when that lock had expired.
    expired_lock_by: str | None
    expired_lock_at: datetime | None


def claim_next_task(worker_id: str) -> Claim | None:
    """Lock the earliest due task for ``worker_id`` and return it, or None if none is due.

    On PostgreSQL this is one UPDATE with SELECT ... FOR UPDATE SKIP LOCKED,
    so workers do not wait on each other's row locks. Elsewhere the row is
    read, then taken with an UPDATE that only succeeds if the row still
    carries the lock it was read with, so two workers cannot both take it.
    Both run in autocommit or in the caller's transaction.
    """
    alias = router.db_for_write(Task)
    connection = connections[alias]
    now = timezone.now()
    due_params = [_adapt(connection, now), _adapt(connection, now - conf.max_run_time())]

    if connection.features.has_select_for_update_skip_locked:
        rows = Task.objects.db_manager(alias).raw(CLAIM_SKIP_LOCKED, [*due_params, worker_id, _adapt(connection, now)])
        claimed = next(iter(rows), None)
        if claimed is None:
            return None
        return _claim(claimed, worker_id, now, claimed.previous_locked_by, claimed.previous_locked_at)

    while True:
        candidate = next(iter(Task.objects.db_manager(alias).raw(EARLIEST_DUE, due_params)), None)
        if candidate is None:
            return None

        with connection.cursor() as cursor:
            cursor.execute(
                TAKE_IF_UNCHANGED,
                [
                    worker_id, _adapt(connection, now),
                    candidate.pk, candidate.locked_by, _adapt(connection, candidate.locked_at),
                ],
            )
            if cursor.rowcount == 1:
                return _claim(candidate, worker_id, now, candidate.locked_by, candidate.locked_at)
        # Another worker changed the row between the read and the update: pick again.


def _claim(task: Task, worker_id: str, now: datetime, previous_by: str | None, previous_at: datetime | None) -> Claim:
    task.locked_by, task.locked_at = worker_id, now
    return Claim(task, worker_id, now, task.attempts, previous_by, previous_at)


def _adapt(connection, value: datetime | None):
    # Raw SQL skips the field's conversion, so it is done here: SQLite, for
    # one, stores a datetime as text in UTC and compares it as text.
    return connection.ops.adapt_datetimefield_value(value)
