"""Settings with two database aliases, and a router that keeps the task queue on the second.

``default`` is the database of ``tests.settings``: an SQLite file, or
BACKGROUND_TASK_DATABASE_URL. ``billing`` is BACKGROUND_TASK_BILLING_DATABASE_URL,
or else a database next to ``default``: a second SQLite file, or on the same
PostgreSQL server a database whose name ends in ``_billing``.
:class:`tests.routers.TaskRouter` sends the Task model to ``billing``.

``django.contrib.auth`` provides a model, Group, on both aliases, which the
tests use as the data that the code storing a task writes next to it.

The test databases are named after "multidb", so a pytest run with these
settings never shares one with a pytest run of ``spec.settings`` on the same
PostgreSQL server.
"""

import hashlib
import os
from pathlib import Path

from spec.database_url import database_from_url
from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.contenttypes", "django.contrib.auth"]  # noqa: F405
DATABASE_ROUTERS = ["tests.routers.TaskRouter"]


def _sqlite_sibling(path: str, suffix: str) -> str:
    """Return ``path`` with ``suffix`` added to the file name's stem."""
    file = Path(path)
    return str(file.with_name(f"{file.stem}{suffix}{file.suffix}"))


def _postgres_test_name(name: str, suffix: str) -> str:
    """Return ``test_<name><suffix>``, with ``name`` replaced by a hash if that passes 63 bytes.

    PostgreSQL cuts longer names to 63 bytes, which could make two test
    databases, or this one and the test database of ``spec.settings``, the same.
    """
    test_name = f"test_{name}{suffix}"
    if len(test_name.encode()) <= 63:
        return test_name
    return f"test_{hashlib.sha256(name.encode()).hexdigest()[:16]}{suffix}"


def _default_database(default: dict) -> dict:
    """Return ``default`` with a test database of its own.

    An SQLite test database is a file, never Django's in-memory default,
    because worker processes must open it too.
    """
    if default["ENGINE"].endswith("sqlite3"):
        test_name = default.get("TEST", {}).get("NAME") or _sqlite_sibling(default["NAME"], "_test")
    else:
        test_name = _postgres_test_name(default["NAME"], "_multidb")
    return {**default, "TEST": {"NAME": test_name}}


def _billing_database(default: dict) -> dict:
    """Return the ``billing`` alias: from its URL, or next to ``default`` (already given its TEST NAME)."""
    url = os.environ.get("BACKGROUND_TASK_BILLING_DATABASE_URL")
    if url:
        return database_from_url(url)
    if default["ENGINE"].endswith("sqlite3"):
        return {
            **default,
            "NAME": _sqlite_sibling(default["NAME"], "_billing"),
            "TEST": {"NAME": _sqlite_sibling(default["TEST"]["NAME"], "_billing")},
        }
    return {
        **default,
        "NAME": f"{default['NAME']}_billing",
        "TEST": {"NAME": _postgres_test_name(default["NAME"], "_multidb_billing")},
    }


_default = _default_database(DATABASES["default"])  # noqa: F405
DATABASES = {"default": _default, "billing": _billing_database(_default)}
