"""The raw SQL the benchmark sends with the driver itself, for both databases.

Datetimes go to SQLite as the text Django stores (``YYYY-MM-DD HH:MM:SS.ffffff``
in UTC), so the raw rows compare and sort exactly like rows Django writes.
"""

from datetime import datetime, timedelta, timezone

#: MAX_RUN_TIME's default, which the claim's "lock expired" test uses.
LOCK_EXPIRY = timedelta(seconds=3600)

COLUMNS = "task_name, task_params, run_at, attempts, failed_at, last_error, locked_by, locked_at"

# Claims the earliest due row in one statement, as a worker must before it
# runs the task. The predicate and order are those of Task.objects.due(now),
# so the same index serves it; the scalar subquery runs once.
_CLAIM = """
UPDATE background_task SET locked_by = {p}, locked_at = {p} WHERE id = (
    SELECT id FROM background_task
    WHERE run_at <= {p} AND failed_at IS NULL AND (locked_at IS NULL OR locked_at < {p})
    ORDER BY run_at, id LIMIT 1{lock}
) RETURNING id, task_name, task_params
"""
CLAIM = {
    "postgresql": _CLAIM.format(p="%s", lock=" FOR UPDATE SKIP LOCKED"),
    "sqlite": _CLAIM.format(p="?", lock=""),
}
DELETE = {"postgresql": "DELETE FROM background_task WHERE id = %s", "sqlite": "DELETE FROM background_task WHERE id = ?"}

# The floor below the limit: claims and deletes the row in one statement and
# runs the task inside that transaction. A worker cannot work this way and
# keep a failed task, so this figure is shown but no target is measured against it.
_CLAIM_AND_DELETE = """
DELETE FROM background_task WHERE id = (
    SELECT id FROM background_task
    WHERE run_at <= {p} AND failed_at IS NULL AND (locked_at IS NULL OR locked_at < {p})
    ORDER BY run_at, id LIMIT 1{lock}
) RETURNING id, task_name, task_params
"""
CLAIM_AND_DELETE = {
    "postgresql": _CLAIM_AND_DELETE.format(p="%s", lock=" FOR UPDATE SKIP LOCKED"),
    "sqlite": _CLAIM_AND_DELETE.format(p="?", lock=""),
}

_INSERT = f"INSERT INTO background_task ({COLUMNS}) VALUES ({{p}}, {{p}}, {{p}}, 0, NULL, '', NULL, NULL) RETURNING id"
INSERT = {"postgresql": _INSERT.format(p="%s"), "sqlite": _INSERT.format(p="?")}

# Bulk fills. {rows} is a row source of one column x = 1..count.
_FILL = f"INSERT INTO background_task ({COLUMNS}) SELECT {{name}}, {{params}}, {{run_at}}, {{attempts}}, {{failed_at}}, {{error}}, NULL, NULL FROM {{rows}}"
ROWS = {
    "postgresql": "generate_series(1, {count}) AS g(x)",
    "sqlite": "(WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {count}) SELECT x FROM g)",
}


def fill_sql(vendor: str, count: int, name: str, failed: bool, first_token: int = 1) -> str:
    """Return an INSERT ... SELECT that adds ``count`` rows, with tokens from ``first_token`` up."""
    p = "%s" if vendor == "postgresql" else "?"
    return _FILL.format(
        name=f"'{name}'",
        params=f"'[[' || (x + {int(first_token) - 1}) || '],{{}}]'",
        run_at=p,
        attempts="25" if failed else "0",
        failed_at=p if failed else "NULL",
        error="'failed in the benchmark fill'" if failed else "''",
        rows=ROWS[vendor].format(count=int(count)),
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def param(vendor: str, value: datetime):
    """Return ``value`` as the driver of ``vendor`` should receive it."""
    if vendor == "postgresql":
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ")


def claim_params(vendor: str, at: datetime) -> tuple:
    """Return the parameters of :data:`CLAIM_AND_DELETE`: now, and when a lock taken then would have expired."""
    return param(vendor, at), param(vendor, at - LOCK_EXPIRY)


def lock_params(vendor: str, worker_id: str, at: datetime) -> tuple:
    """Return the parameters of :data:`CLAIM`: the lock to write, then those of the due test."""
    return (worker_id, param(vendor, at), *claim_params(vendor, at))
