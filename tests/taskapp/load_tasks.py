"""Tasks for tests/test_reliability_load*.py.

Each task writes one line per run to a file of the worker process that ran
it, ``<folder>/runs-<pid>.txt``, so the tests count runs outside the
database. The lines are short and written with one ``os.write`` on an
``O_APPEND`` file, as :func:`tests.taskapp.marks.append_line` does.
"""

import os

from django.db import connection

from background_task import background
from tests.taskapp.marks import append_line

#: The DB-API connections that tasks in this process have run on, in order.
#: Strong references, because sqlite3 connections take no weak ones: a
#: connection closed and then freed could otherwise pass for a new one that
#: Python placed at the same address.
_connections_seen: list[object] = []


def _connection_number() -> int:
    """Return the number of the connection this task runs on, 1 for the first one a task used."""
    connection.ensure_connection()
    raw = connection.connection
    for number, seen in enumerate(_connections_seen, start=1):
        if seen is raw:
            return number
    _connections_seen.append(raw)
    return len(_connections_seen)


def runs_file(folder: str) -> str:
    """Return the path of this process's runs file in ``folder``."""
    return os.path.join(folder, f"runs-{os.getpid()}.txt")


@background(name="tests.load.count")
def count(folder: str, token: int) -> None:
    """Append ``<token>`` to this worker's runs file in ``folder``."""
    append_line(runs_file(folder), str(token))


@background(name="tests.load.observe")
def observe(folder: str, token: int, sample_memory: bool) -> None:
    """Append what this run saw of the worker: ``<token> <connection> <backend> <queries> <rss>``.

    ``connection`` numbers the database connection the task runs on: 1 for
    the first connection a task of this worker used, 2 for the next one, and
    so on. ``backend`` is the PostgreSQL server process that serves this connection
    (``-`` on other databases), ``queries`` the length of Django's query log
    when the task started, and ``rss`` the worker's resident set size in KiB
    when ``sample_memory`` is true (``-`` otherwise).
    """
    queries = len(connection.queries_log)
    number = _connection_number()
    backend = _backend_pid()
    rss = _rss_kib() if sample_memory else "-"
    append_line(runs_file(folder), f"{token} {number} {backend} {queries} {rss}")


def _backend_pid() -> str:
    if connection.vendor != "postgresql":
        return "-"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return str(cursor.fetchone()[0])


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmRSS line")
