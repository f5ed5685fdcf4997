"""Database URLs: one string that names a SQLite file or a PostgreSQL database."""

from urllib.parse import parse_qs, quote, unquote, urlsplit


def database_from_url(url: str) -> dict:
    """Return a Django DATABASES entry for a ``sqlite:///`` or ``postgresql://`` URL.

    SQLite gets the example project's settings: a 20 second busy timeout and
    the default rollback journal.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path), "OPTIONS": {"timeout": 20}}
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"expected a sqlite:/// or postgresql:// URL; got {url!r}")
    query = parse_qs(parts.query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
    }


def psycopg_params(url: str, dbname: str | None = None) -> dict:
    """Return keyword arguments for ``psycopg.connect`` from a PostgreSQL URL."""
    entry = database_from_url(url)
    params = {
        "dbname": dbname or entry["NAME"],
        "user": entry["USER"] or None,
        "password": entry["PASSWORD"] or None,
        "host": entry["HOST"] or None,
        "port": entry["PORT"] or None,
    }
    return {key: value for key, value in params.items() if value is not None}


def with_database(url: str, dbname: str) -> str:
    """Return the PostgreSQL ``url`` pointed at the database ``dbname``."""
    parts = urlsplit(url)
    return parts._replace(path="/" + quote(dbname)).geturl()


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
