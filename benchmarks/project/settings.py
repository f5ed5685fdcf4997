"""Settings of the benchmark project, chosen from environment variables.

BENCH_DATABASE_URL  ``sqlite:///path/to/file.sqlite3`` or ``postgresql://user@/db?host=/socket/dir``
BENCH_DEBUG         "1" for DEBUG = True (the memory measurement uses it)
BENCH_MARKS         file the benchmark tasks append one line per run to
BENCH_COUNT         "1" to count the statements and commits each connection sends
"""

import os

from benchmarks.urls import database_from_url

DATABASES = {"default": database_from_url(os.environ["BENCH_DATABASE_URL"])}
DEBUG = os.environ.get("BENCH_DEBUG") == "1"
INSTALLED_APPS = ["background_task", "benchmarks.project.benchapp"]
SECRET_KEY = "benchmark-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
