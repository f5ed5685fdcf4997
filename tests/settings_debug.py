"""Settings for worker processes of tests/test_reliability_load.py: DEBUG on, database options from the environment.

With ``DEBUG = True`` Django logs every query on the connection, which is
what a worker must reset between tasks. Two environment variables change the
default database:

``BACKGROUND_TASK_CONN_MAX_AGE``
   ``CONN_MAX_AGE`` in seconds, or ``none`` to keep the connection open for
   the life of the process (Django's ``None``). Unset, Django's 0 stays.
``BACKGROUND_TASK_SQLITE_TIMEOUT``
   The SQLite busy timeout in seconds, so that a test can hold the write
   lock for longer than it without waiting long. Ignored on PostgreSQL.
"""

import os

from tests.settings import *  # noqa: F403

DEBUG = True

_conn_max_age = os.environ.get("BACKGROUND_TASK_CONN_MAX_AGE")
if _conn_max_age is not None:
    DATABASES["default"]["CONN_MAX_AGE"] = None if _conn_max_age == "none" else float(_conn_max_age)  # noqa: F405

_sqlite_timeout = os.environ.get("BACKGROUND_TASK_SQLITE_TIMEOUT")
if _sqlite_timeout is not None and DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["OPTIONS"]["timeout"] = float(_sqlite_timeout)  # noqa: F405
