"""Timed loops run in a process of their own: ``python -m benchmarks.probe WHAT --url URL --count N``.

limit      the raw-driver worker: claim-and-delete the earliest due row with
           one statement, run the task, commit; until the queue is empty
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
    """Drain up to ``count`` tasks with the least work per task; return how many ran."""
    connection = raw_connection(vendor, url)
    functions = {"bench.noop": write_mark}
    claim = sql.CLAIM[vendor]
    done = 0
    cursor = connection.cursor()
    while done < count:
        if vendor == "sqlite":
            cursor.execute("BEGIN")
        cursor.execute(claim, sql.claim_params(vendor, sql.now()))
        row = cursor.fetchone()
        if row is None:
            connection.rollback() if vendor == "postgresql" else cursor.execute("ROLLBACK")
            break
        if vendor == "sqlite":
            cursor.fetchall()
        _, name, params = row
        args, kwargs = json.loads(params)
        functions[name](*args, **kwargs)
        if vendor == "sqlite":
            cursor.execute("COMMIT")
        else:
            connection.commit()
        done += 1
    connection.close()
    return {"done": done}


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
    from django.db import connection, transaction
    from django.utils import timezone

    from background_task.models import Task

    with transaction.atomic():
        due = Task.objects.due(timezone.now())
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        query = due[:1]
        options = {"analyze": True, "buffers": True} if connection.vendor == "postgresql" else {}
        plan = query.explain(**options)
        statement = str(query.query)
        transaction.set_rollback(True)
    return {"sql": statement, "plan": plan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    parser.add_argument("mode", choices=["limit", "insert", "enqueue", "explain"])
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--atomic", action="store_true")
    options = parser.parse_args(argv)
    vendor = "sqlite" if (options.url or "").startswith("sqlite") else "postgresql"

    if options.mode == "limit":
        result = limit(vendor, options.url, options.count)
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
