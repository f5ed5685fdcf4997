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
FIELDS = Task._meta.concrete_fields
#: The columns the claims return, in the order of FIELDS, so a row needs no
#: lookup by column name.
RETURNED = ", ".join(f"task.{field.column}" for field in FIELDS)
#: The attribute names of FIELDS, as Model.from_db expects them.
ATTNAMES = [field.attname for field in FIELDS]

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
    RETURNING {RETURNED}, previous.locked_by, previous.locked_at
"""

#: PostgreSQL, for a busy worker: delete the row of the task that just
#: succeeded and claim the next due task, in one statement and so in one
#: round trip and one commit. The statement's snapshot still shows the row
#: it deletes, so the pick leaves that row out. A row that stays because the
#: lock was lost may be picked like any other. ``finished`` counts the
#: deleted rows, and the claim's columns are NULL when nothing is due.
FINISH_AND_CLAIM = f"""
    WITH finished AS (
        DELETE FROM {TABLE} WHERE id = %s AND locked_by = %s AND locked_at = %s
        RETURNING id
    ), previous AS MATERIALIZED (
        SELECT id, locked_by, locked_at FROM {TABLE}
        WHERE {DUE} AND id NOT IN (SELECT id FROM finished)
        ORDER BY run_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE {TABLE} AS task
        SET locked_by = %s, locked_at = %s
        FROM previous
        WHERE task.id = previous.id
        RETURNING {RETURNED}, previous.locked_by AS previous_locked_by, previous.locked_at AS previous_locked_at
    )
    SELECT (SELECT count(*) FROM finished), claimed.*
    FROM (VALUES (1)) AS one LEFT JOIN claimed ON true
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

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(CLAIM_SKIP_LOCKED, [*_due_params(connection, now), worker_id, now])
            return _claim_from_row(alias, cursor, worker_id, now)

    while True:
        rows = Task.objects.db_manager(alias).raw(EARLIEST_DUE, _due_params(connection, now))
        candidate = next(iter(rows), None)
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


def finishes_and_claims_at_once(alias: str) -> bool:
    """Return whether :func:`finish_and_claim_next` works on the database behind ``alias``."""
    return connections[alias].vendor == "postgresql"


def finish_and_claim_next(finished: Claim) -> tuple[bool, Claim | None]:
    """Delete the row of the succeeded task ``finished`` and claim the next due task, on PostgreSQL.

    Returns whether the row was deleted, which it is only while the worker
    still holds its lock, and the new claim, or None if no task is due.
    """
    alias = router.db_for_write(Task)
    connection = connections[alias]
    now = timezone.now()
    task = finished.task

    with connection.cursor() as cursor:
        cursor.execute(
            FINISH_AND_CLAIM,
            [
                task.pk, finished.worker_id, finished.locked_at,
                *_due_params(connection, now),
                finished.worker_id, now,
            ],
        )
        return _finished_and_claim_from_row(alias, cursor, finished.worker_id, now)


def _due_params(connection, now: datetime) -> list:
    return [_adapt(connection, now), _adapt(connection, now - conf.max_run_time())]


def _claim_from_row(alias: str, cursor, worker_id: str, now: datetime) -> Claim | None:
    row = cursor.fetchone()
    if row is None:
        return None
    return _claim_from_values(alias, row, worker_id, now)


def _finished_and_claim_from_row(alias: str, cursor, worker_id: str, now: datetime) -> tuple[bool, Claim | None]:
    finished, *claimed = cursor.fetchone()
    if claimed[0] is None:
        return finished == 1, None
    return finished == 1, _claim_from_values(alias, claimed, worker_id, now)


def _claim_from_values(alias: str, values: list, worker_id: str, now: datetime) -> Claim:
    # The values come in the order of FIELDS, then the previous lock.
    # PostgreSQL's driver returns each column as the field's Python type, so
    # none needs conversion.
    *task_values, previous_by, previous_at = values
    task = Task.from_db(alias, ATTNAMES, task_values)
    return _claim(task, worker_id, now, previous_by, previous_at)


def _claim(task: Task, worker_id: str, now: datetime, previous_by: str | None, previous_at: datetime | None) -> Claim:
    task.locked_by, task.locked_at = worker_id, now
    return Claim(task, worker_id, now, task.attempts, previous_by, previous_at)


def _adapt(connection, value: datetime | None):
    # Raw SQL skips the field's conversion, so it is done here: SQLite, for
    # one, stores a datetime as text in UTC and compares it as text.
    return connection.ops.adapt_datetimefield_value(value)
