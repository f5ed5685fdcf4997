"""The databases a run measures: a SQLite file, and a PostgreSQL database on a server.

Each target creates its own empty database, creates the queue's table with
``migrate`` and can empty, fill and inspect it with the raw driver.
"""

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import sql
from benchmarks.urls import psycopg_params, redact, with_database

REPO_ROOT = Path(__file__).resolve().parent.parent


class Target:
    vendor: str
    label: str
    url: str

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment for a Django process of the benchmark project on this database."""
        env = dict(os.environ)
        env.pop("BACKGROUND_TASK_DATABASE_URL", None)
        env.update(
            DJANGO_SETTINGS_MODULE="benchmarks.project.settings",
            BENCH_DATABASE_URL=self.url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        )
        env.update(extra)
        return env

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            env=self.env(), capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed on {self.label}:\n{result.stderr}")

    def execute(self, statement: str, params: tuple = ()) -> list[tuple]:
        """Run one statement in its own transaction and return its rows."""
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(statement, params)
            rows = cursor.fetchall() if cursor.description else []
            connection.commit()
            return rows
        finally:
            connection.close()

    def count(self) -> int:
        return self.execute("SELECT count(*) FROM background_task")[0][0]

    def fill(self, count: int, *, name: str = "bench.noop", ahead: float = -3600, failed: bool = False,
             first_token: int = 1) -> None:
        """Add ``count`` rows whose run_at is ``ahead`` seconds from now, with tokens from ``first_token`` up."""
        from datetime import timedelta

        at = sql.now() + timedelta(seconds=ahead)
        params = (sql.param(self.vendor, at),) * (2 if failed else 1)
        self.execute(sql.fill_sql(self.vendor, count, name, failed, first_token), params)

    def close(self) -> None:
        """Remove what the target created."""


class SqliteTarget(Target):
    vendor = "sqlite"
    label = "SQLite"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "bench.sqlite3"
        self.url = f"sqlite://{self.path}"

    def connect(self):
        return sqlite3.connect(self.path, timeout=20)

    def empty(self) -> None:
        self.execute("DELETE FROM background_task")

    def analyze(self) -> None:
        """SQLite plans without statistics unless ANALYZE ran; the benchmark leaves it so, as most projects do."""

    def describe(self) -> dict:
        connection = self.connect()
        try:
            pragmas = {
                name: connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "page_size", "cache_size")
            }
            return {"version": sqlite3.sqlite_version, "busy_timeout_s": 20, **pragmas}
        finally:
            connection.close()


class PostgresTarget(Target):
    vendor = "postgresql"
    label = "PostgreSQL"

    def __init__(self, server_url: str, cluster=None) -> None:
        import psycopg

        self.server_url = server_url
        self.cluster = cluster
        self.dbname = f"bt_bench_{os.getpid()}"
        self.url = with_database(server_url, self.dbname)
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
            admin.execute(f'CREATE DATABASE "{self.dbname}"')
        self._psycopg = psycopg

    def _admin(self):
        import psycopg

        # The URL's own database may not exist yet (dev.py names one per test
        # run), so fall back to the maintenance database.
        try:
            return psycopg.connect(**psycopg_params(self.server_url), autocommit=True)
        except psycopg.OperationalError:
            return psycopg.connect(**psycopg_params(self.server_url, "postgres"), autocommit=True)

    def connect(self):
        return self._psycopg.connect(**psycopg_params(self.url))

    def empty(self) -> None:
        self.execute("TRUNCATE background_task")

    def analyze(self) -> None:
        connection = self.connect()
        connection.autocommit = True
        try:
            connection.execute("ANALYZE background_task")
        finally:
            connection.close()

    def describe(self) -> dict:
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "work_mem")
        rows = {name: self.execute(f"SHOW {name}")[0][0] for name in names}
        rows["url"] = redact(self.server_url)
        rows["started_by_benchmark"] = self.cluster is not None
        return rows

    def close(self) -> None:
        try:
            with self._admin() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        finally:
            if self.cluster is not None:
                self.cluster.stop()


def start_postgres():
    """Start a throw-away PostgreSQL server on a unix socket and return (url, cluster)."""
    sys.path.insert(0, str(REPO_ROOT))
    from dev import PostgresCluster

    cluster = PostgresCluster.start_throwaway()
    return cluster.url, cluster


def make_temp_dir() -> Path:
    # A unix socket path is limited to 107 bytes, and the marks live here too.
    parent = tempfile.gettempdir() if len(tempfile.gettempdir()) < 40 else "/tmp"
    return Path(tempfile.mkdtemp(prefix="bt-bench-", dir=parent))
