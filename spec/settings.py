"""Django settings for the specification suite.

SQLite by default, on a real file. Set BACKGROUND_TASK_DATABASE_URL to run on
PostgreSQL instead, for example
``postgresql://user@/dbname?host=/tmp/pg-socket`` for a unix socket.
"""

import os
import tempfile
from pathlib import Path

import django

from spec.database_url import SQLITE_OPTIONS, database_from_url

SCRATCH = Path(os.environ.get("BACKGROUND_TASK_SCRATCH", tempfile.gettempdir()))
DATABASE_URL = os.environ.get("BACKGROUND_TASK_DATABASE_URL")

if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SCRATCH / f"background_task_spec_{os.getpid()}.sqlite3"),
            "OPTIONS": dict(SQLITE_OPTIONS),
            "TEST": {"NAME": str(SCRATCH / f"background_task_spec_test_{os.getpid()}.sqlite3")},
        }
    }

INSTALLED_APPS = [
    "background_task",
    "spec",
]
SECRET_KEY = "specification-suite-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

if django.VERSION >= (6, 1):
    # Django 6.1 replaces EMAIL_BACKEND with MAILERS and warns when a project
    # sends mail without it, as the welcome-mail example in tests/ does. The
    # test runner swaps each mailer for its in-memory backend.
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
