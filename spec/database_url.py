"""Reading a database URL into a Django DATABASES entry.

The spec suite, the implementation tests and the benchmark all take their
database as one URL: ``sqlite:///path/to/file.sqlite3`` or
``postgresql://user@/dbname?host=/path/to/socket``.
"""

from urllib.parse import parse_qs, unquote, urlsplit

#: Seconds a SQLite connection waits for another writer's lock before it
#: raises "database is locked"; several worker processes share one file.
SQLITE_TIMEOUT = 20

#: The OPTIONS of a SQLite database that several processes write to, the
#: settings docs/howto/sqlite.rst recommends and the demo project uses:
#:
#: * ``timeout`` is the busy timeout: a connection that finds the write lock
#:   taken waits up to this many seconds before it raises "database is locked".
#: * ``transaction_mode`` IMMEDIATE makes every ``transaction.atomic()`` begin
#:   with ``BEGIN IMMEDIATE``, which takes the write lock at once and so waits
#:   out the timeout there. A deferred transaction that reads and then writes
#:   would instead fail at its first write, without waiting, when another
#:   connection wrote in between.
#: * ``PRAGMA journal_mode=WAL`` lets readers go on while a writer holds the
#:   lock. The mode is stored in the database file, so this only changes the
#:   file on the first connection.
#:
#: ``transaction_mode`` and ``init_command`` need Django 5.1 or newer.
SQLITE_OPTIONS = {
    "timeout": SQLITE_TIMEOUT,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL;",
}


def database_from_url(url: str) -> dict:
    """Return a DATABASES entry for a ``sqlite:///`` or ``postgresql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path),
            "OPTIONS": dict(SQLITE_OPTIONS),
        }
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"Expected a sqlite:/// or postgresql:// database URL; got {url!r}.")

    query = parse_qs(parts.query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
    }
