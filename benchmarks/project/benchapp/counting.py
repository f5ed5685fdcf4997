"""Counting the statements and commits a process sends, for the queries-per-task figure.

Installed only when BENCH_COUNT=1. It counts on Django's side of the driver:

* statements: every SQL statement Django executes, plus one BEGIN for each
  transaction Django opens (PostgreSQL's driver sends that BEGIN itself, as
  its own round trip) and one COMMIT or ROLLBACK for each it ends;
* commits: transactions that end with a commit, counting a write statement
  (INSERT, UPDATE, DELETE, or a WITH query that contains one) run in
  autocommit mode as one, since the database commits it on its own.

A read in autocommit mode is a transaction of its own on the server too,
but writes nothing, so it is not counted as a commit.
"""

_counts = {"statements": 0, "commits": 0}
_WRITES = ("INSERT", "UPDATE", "DELETE")


def snapshot() -> tuple[int, int]:
    """Return the statements and commits counted so far."""
    return _counts["statements"], _counts["commits"]


def install() -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(_instrument)


def _instrument(sender, connection, **kwargs) -> None:
    if getattr(connection, "_bench_counted", False):
        return
    connection._bench_counted = True
    connection.execute_wrappers.append(_count_statement)

    commit, rollback, set_autocommit = connection._commit, connection._rollback, connection._set_autocommit

    def counted_commit():
        _counts["statements"] += 1
        _counts["commits"] += 1
        return commit()

    def counted_rollback():
        _counts["statements"] += 1
        return rollback()

    def counted_set_autocommit(autocommit):
        if not autocommit:
            # PostgreSQL: the driver sends BEGIN before the next statement.
            _counts["statements"] += 1
        return set_autocommit(autocommit)

    connection._commit = counted_commit
    connection._rollback = counted_rollback
    connection._set_autocommit = counted_set_autocommit


def _count_statement(execute, sql, params, many, context):
    _counts["statements"] += 1
    if _writes(sql) and context["connection"].get_autocommit():
        _counts["commits"] += 1
    return execute(sql, params, many, context)


def _writes(sql: str) -> bool:
    """Return whether ``sql`` writes: it starts with a write, or is a WITH query that contains one."""
    words = sql.split()
    if not words:
        return False
    if words[0].upper() == "WITH":
        return any(word.upper() in _WRITES for word in words)
    return words[0].upper() in _WRITES
