"""Django settings for the specification suite.

SQLite by default, on a real file. Set BACKGROUND_TASK_DATABASE_URL to run on
PostgreSQL instead, for example
``postgresql://user@/dbname?host=/tmp/pg-socket`` for a unix socket.
"""

import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


def database_from_url(url: str) -> dict:
    """Return a DATABASES entry for a ``postgresql://`` or ``sqlite:///`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path)}
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"BACKGROUND_TASK_DATABASE_URL must start with postgresql:// or sqlite:///; got {url!r}.")

    query = parse_qs(parts.query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
    }


SCRATCH = Path(os.environ.get("BACKGROUND_TASK_SCRATCH", tempfile.gettempdir()))
DATABASE_URL = os.environ.get("BACKGROUND_TASK_DATABASE_URL")

if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SCRATCH / f"background_task_spec_{os.getpid()}.sqlite3"),
            "OPTIONS": {"timeout": 20},
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
