"""Database URLs: one string that names a SQLite file or a PostgreSQL database."""

from urllib.parse import quote, urlsplit

from spec.database_url import database_from_url


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
