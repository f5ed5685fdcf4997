import os
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """Return a URL for the test database that a worker process can open."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite://{settings_dict['NAME']}"
    user = settings_dict["USER"] or ""
    host = settings_dict["HOST"] or ""
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] and not host.startswith("/") else ""
    if host.startswith("/"):
        return f"postgresql://{user}@/{settings_dict['NAME']}?host={host}"
    return f"postgresql://{user}@{host}{port}/{settings_dict['NAME']}"


@pytest.fixture
def worker_env():
    """Environment for a ``manage.py``-style worker process on the test database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["BACKGROUND_TASK_DATABASE_URL"] = database_url()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def django_admin() -> list[str]:
    """Return the command that runs django-admin with this interpreter."""
    return [sys.executable, "-m", "django"]
