"""Timed loops run in a process of their own: ``python -m benchmarks.probe WHAT --url URL --count N``.

limit      the raw-driver worker: claim the earliest due row with one statement,
           run the task, delete the row, commit; until the queue is empty
floor      the same, but claiming and deleting the row in one statement
insert     the raw-driver enqueue: one INSERT ... RETURNING id and one commit per task
enqueue    N calls of the decorated no-op task through Django, each committed
           on its own (``--atomic``: all in one transaction)
explain    the plan of the worker's claim query, as Django builds it

Each prints one JSON object on stdout.
"""

import argparse
import json
import sqlite3
import sys
import time

from benchmarks import sql
from benchmarks.marks import write_mark
from benchmarks.urls import database_from_url, psycopg_params


def raw_connection(vendor: str, url: str):
    if vendor == "sqlite":
        # isolation_level=None leaves transactions to the SQL, as Django does.
        return sqlite3.connect(database_from_url(url)["NAME"], timeout=20, isolation_level=None)
    import psycopg

    return psycopg.connect(**psycopg_params(url))


def limit(vendor: str, url: str, count: int) -> dict:
    """Drain up to ``count`` tasks with the least work a worker must do; return how many ran.

    Per task: one statement claims the earliest due row, the task runs, one
    statement deletes the row, and one commit ends the transaction.
    """
    connection = raw_connection(vendor, url)
    cursor = connection.cursor()
    done = 0
    while done < count:
        begin(vendor, cursor)
        cursor.execute(sql.CLAIM[vendor], sql.lock_params(vendor, "limit-loop", sql.now()))
        row = cursor.fetchone()
        if row is None:
            end(vendor, connection, cursor, commit=False)
            break
        if vendor == "sqlite":
            cursor.fetchall()

        task_id, name, params = row
        run_task(name, params)
        cursor.execute(sql.DELETE[vendor], (task_id,))
        end(vendor, connection, cursor, commit=True)
        done += 1
    connection.close()
    return {"done": done}


def floor(vendor: str, url: str, count: int) -> dict:
    """Drain up to ``count`` tasks claiming and deleting each row in one statement; return how many ran."""
    connection = raw_connection(vendor, url)
    cursor = connection.cursor()
    done = 0
    while done < count:
        begin(vendor, cursor)
        cursor.execute(sql.CLAIM_AND_DELETE[vendor], sql.claim_params(vendor, sql.now()))
        row = cursor.fetchone()
        if row is None:
            end(vendor, connection, cursor, commit=False)
            break
        if vendor == "sqlite":
            cursor.fetchall()

        _, name, params = row
        run_task(name, params)
        end(vendor, connection, cursor, commit=True)
        done += 1
    connection.close()
    return {"done": done}


def run_task(name: str, params: str) -> None:
    args, kwargs = json.loads(params)
    TASKS[name](*args, **kwargs)


TASKS = {"bench.noop": write_mark}


def begin(vendor: str, cursor) -> None:
    # psycopg opens a transaction by itself; sqlite3 in autocommit needs BEGIN.
    if vendor == "sqlite":
        cursor.execute("BEGIN")


def end(vendor: str, connection, cursor, commit: bool) -> None:
    if vendor == "sqlite":
        cursor.execute("COMMIT" if commit else "ROLLBACK")
    elif commit:
        connection.commit()
    else:
        connection.rollback()


def insert(vendor: str, url: str, count: int) -> dict:
    """Insert ``count`` rows, one statement and one commit each; return the rate."""
    connection = raw_connection(vendor, url)
    if vendor == "postgresql":
        connection.autocommit = True
    cursor = connection.cursor()
    statement = sql.INSERT[vendor]
    started = time.perf_counter()
    for number in range(count):
        params = json.dumps([[number], {}], separators=(",", ":"))
        cursor.execute(statement, ("bench.noop", params, sql.param(vendor, sql.now())))
        cursor.fetchone()
        if vendor == "sqlite":
            cursor.fetchall()
    elapsed = time.perf_counter() - started
    connection.close()
    return {"rate": count / elapsed}


def enqueue(count: int, atomic: bool) -> dict:
    """Call the decorated no-op task ``count`` times; return calls per second."""
    import django

    django.setup()
    from django.db import transaction

    from benchmarks.project.benchapp.tasks import noop

    noop(-1).delete()  # the first call opens the connection; leave it out of the timing
    started = time.perf_counter()
    if atomic:
        with transaction.atomic():
            for number in range(count):
                noop(number)
    else:
        for number in range(count):
            noop(number)
    elapsed = time.perf_counter() - started
    return {"rate": count / elapsed}


def explain() -> dict:
    """Return the plan of the claim query the worker sends, and the SQL."""
    import django

    django.setup()
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone

    from background_task import locking

    now = timezone.now()
    due = [connection.ops.adapt_datetimefield_value(value) for value in (now, now - timedelta(hours=1))]
    if connection.vendor == "postgresql":
        statement = locking.CLAIM_SKIP_LOCKED
        explain_sql, params = f"EXPLAIN (ANALYZE, BUFFERS) {statement}", [*due, "explain", due[0]]
    else:
        statement = locking.EARLIEST_DUE
        explain_sql, params = f"EXPLAIN QUERY PLAN {statement}", due

    # ANALYZE runs the claim, so the transaction is rolled back.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(explain_sql, params)
            plan = "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())
        transaction.set_rollback(True)
    return {"sql": " ".join(statement.split()), "plan": plan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    parser.add_argument("mode", choices=["limit", "floor", "insert", "enqueue", "explain"])
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--atomic", action="store_true")
    options = parser.parse_args(argv)
    vendor = "sqlite" if (options.url or "").startswith("sqlite") else "postgresql"

    if options.mode == "limit":
        result = limit(vendor, options.url, options.count)
    elif options.mode == "floor":
        result = floor(vendor, options.url, options.count)
    elif options.mode == "insert":
        result = insert(vendor, options.url, options.count)
    elif options.mode == "enqueue":
        result = enqueue(options.count, options.atomic)
    else:
        result = explain()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
