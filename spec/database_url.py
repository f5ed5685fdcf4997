"""Reading a database URL into a Django DATABASES entry.

The spec suite, the implementation tests and the benchmark all take their
database as one URL: ``sqlite:///path/to/file.sqlite3`` or
``postgresql://user@/dbname?host=/path/to/socket``.
"""

from urllib.parse import parse_qs, unquote, urlsplit

#: Seconds a SQLite connection waits for another writer's lock before it
#: raises "database is locked"; several worker processes share one file.
SQLITE_TIMEOUT = 20


def database_from_url(url: str) -> dict:
    """Return a DATABASES entry for a ``sqlite:///`` or ``postgresql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path),
            "OPTIONS": {"timeout": SQLITE_TIMEOUT},
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
