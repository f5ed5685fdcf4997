"""Django settings for the background_task demo project.

Everything the demo writes (the SQLite database, reports, mail and the flaky
task's counter) goes under one folder: ``example/var/`` by default, or the
folder named by the EXAMPLE_VAR_DIR environment variable.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EXAMPLE_VAR_DIR") or BASE_DIR / "var").resolve()

# Created here because SQLite cannot create the folder of its database file,
# and migrate is the first command a fresh checkout runs.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "background_task",
    "reports",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "demo.sqlite3"),
        # The worker and the commands that store tasks write to this file from
        # several processes, and SQLite lets one writer in at a time.
        "OPTIONS": {
            # Seconds a connection waits for another's write lock before it
            # raises "database is locked" (Python's default is 5).
            "timeout": 20,
            # Every transaction.atomic() block takes the write lock at BEGIN,
            # where the timeout applies. A default (deferred) transaction that
            # reads and then writes fails at once if another connection holds
            # the lock at its first write.
            "transaction_mode": "IMMEDIATE",
            # Readers go on while a write is in progress. The mode is stored in
            # the file, so only the first connection changes anything.
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = True
TIME_ZONE = "UTC"

# The file backend writes each sent message into a file under this folder
# instead of talking to a mail server.
MAIL_DIR = VAR_DIR / "mail"
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(MAIL_DIR)},
        }
    }
else:
    # Django 6.1 replaced these two settings with MAILERS.
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(MAIL_DIR)
DEFAULT_FROM_EMAIL = "queue-demo@example.com"

#: Output locations of the demo's tasks.
REPORTS_DIR = VAR_DIR / "reports"
FLAKY_COUNTER_FILE = VAR_DIR / "flaky_runs.txt"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    # The handler sits on the root logger, not on "background_task": the
    # --log-level and --log-file options of process_tasks add their own handler
    # to "background_task" and stop propagation, so each line prints once.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # The worker logs each start, success, retry and final failure at INFO
        # or above; DEBUG adds a line for every task stored.
        "background_task": {"level": "INFO"},
        "reports": {"level": "INFO"},
    },
}
