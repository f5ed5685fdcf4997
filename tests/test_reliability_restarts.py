"""PostgreSQL restarts and lost connections, with real ``process_tasks`` workers.

When the database restarts or drops a connection, a worker logs a warning
naming the error and the wait, reconnects with a backoff that doubles from
0.5 s up to 30 s, and carries on. An outcome it could not write is written
after it reconnects, so a task's run is neither lost nor repeated.

These tests stop and start a PostgreSQL server, so each module run starts
a throw-away cluster of its own with dev.PostgresCluster and never touches
the server that the rest of the suite uses. They run in the PostgreSQL
pytest runs only, so their figures go under PostgreSQL on the Reliability
page. The test process reads and writes the queue with plain SQL through
psycopg, on a fresh database per test. Runs are counted in files outside
the database (see tests/taskapp/restart_tasks.py).
"""

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

import dev
from tests.processes import django_admin, send_stop_signal
from tests.settings_restart import MAX_RUN_TIME

psycopg = pytest.importorskip("psycopg", reason="the restart tests talk to their own PostgreSQL server through psycopg")

pytestmark = [
    # The tests use a server of their own, so this marker only lets the
    # reliability fixture read which database the pytest run is on.
    pytest.mark.django_db,
]

RECORD_RUN = "tests.restart.record_run"
SLEEP_THEN_RECORD = "tests.restart.sleep_then_record"

#: The database that is migrated once per module and copied for each test.
TEMPLATE_DATABASE = "queue_template"

#: The worker's reconnect backoff: the first wait and the cap, in seconds.
FIRST_WAIT = 0.5
MAX_WAIT = 30.0

#: The warning a worker logs when a query of its own failed, naming what it was doing and the wait.
BACKOFF_WARNING = re.compile(
    r"WARNING background_task\S*: Worker \S+ got a database error while (?P<doing>.+?) "
    r"\(failure (?P<failure>\d+) in a row\), retrying in (?P<wait>\d+(?:\.\d+)?) s: "
)
LOOKING = "looking for a due task"
RECOVERED = "reached the database again"
IDLE_LINE = "found no due task"

#: How long the server stays down at each restart while workers drain the queue, in seconds.
#: With 0 the workers mostly reconnect at their first retry, and with 0.5 s that retry
#: may find the server still down.
DOWN_TIMES = [0.0, 0.1, 0.25, 0.4, 0.5]


# ---------------------------------------------------------------------------
# The server


class RestartableServer:
    """A throw-away PostgreSQL cluster that a test may stop and start again."""

    def __init__(self, cluster: dev.PostgresCluster) -> None:
        self.cluster = cluster
        self._names = itertools.count(1)

    @property
    def socket_dir(self) -> Path:
        return self.cluster.folder

    @property
    def is_running(self) -> bool:
        return (self.cluster.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop the server in fast mode: open sessions are ended and their transactions rolled back."""
        self._pg_ctl("--mode", "fast", "--wait", "stop")

    def start(self) -> None:
        """Start the server on the same data folder and socket, waiting until it accepts connections."""
        # The same options as dev.PostgresCluster.start: no TCP, the socket in the cluster's folder.
        options = (
            f"-c listen_addresses='' -k {shlex.quote(str(self.socket_dir))} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("--log", str(self.cluster.log), "--wait", "--timeout", "60", "-o", options, "start")

    def restart(self, down: float = 0.0) -> None:
        """Stop the server, leave it down for ``down`` seconds, and start it again."""
        self.stop()
        time.sleep(down)
        self.start()

    def server_log(self) -> str:
        return self.cluster.log.read_text(errors="replace")

    def connect(self, database: str):
        """Open an autocommit psycopg connection as user postgres over the unix socket."""
        return psycopg.connect(
            host=str(self.socket_dir), user="postgres", dbname=database, autocommit=True, connect_timeout=10,
        )

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir))}"

    def new_database(self) -> "QueueDatabase":
        """Create a database with the queue's schema, copied from the migrated template."""
        name = f"queue_{next(self._names)}"
        with self.connect("postgres") as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"')
        return QueueDatabase(self, name)

    def _pg_ctl(self, *arguments: str) -> None:
        pg_ctl = [*self.cluster.run_as_owner(), str(self.cluster.bindir / "pg_ctl"), "--pgdata", str(self.cluster.data)]
        result = subprocess.run([*pg_ctl, *arguments], capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, (
            f"pg_ctl {arguments[-1]} failed with exit status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}\nserver log:\n{self.server_log()[-3000:]}"
        )


def migrate_template(server: RestartableServer, environment: dict[str, str]) -> None:
    with server.connect("postgres") as admin:
        admin.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
    env = dict(environment, BACKGROUND_TASK_DATABASE_URL=server.url(TEMPLATE_DATABASE))
    result = subprocess.run(
        [*django_admin(), "migrate", "--no-input"], env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"migrate failed:\n{result.stdout}{result.stderr}"


def require_postgres_binaries() -> None:
    """Skip, or fail under CI=true, when no PostgreSQL server binaries are installed."""
    if dev.find_postgres_bindir() is not None:
        return
    message = (
        "the restart tests need the PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
        "/usr/lib/postgresql/*/bin to run a server they can restart; install the server "
        "(Debian: apt-get install postgresql)"
    )
    if dev.is_ci():
        pytest.fail(message + "; CI=true requires them", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server() -> Iterator[RestartableServer]:
    """A throw-away PostgreSQL cluster holding a migrated template database."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "the restart tests run in the PostgreSQL pytest runs only, so their figures go under "
            "PostgreSQL; set BACKGROUND_TASK_DATABASE_URL to a PostgreSQL URL, as python3 dev.py test does"
        )
    require_postgres_binaries()

    cluster = dev.PostgresCluster.start_throwaway()
    restartable = RestartableServer(cluster)
    try:
        migrate_template(restartable, module_worker_env())
        yield restartable
    finally:
        cluster.stop()


def module_worker_env() -> dict[str, str]:
    """Return the environment for ``django-admin`` on tests.settings_restart. Callers set the database URL."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings_restart"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    return env


# ---------------------------------------------------------------------------
# The queue, seen from the test process


class QueueDatabase:
    """One test's database on the restartable server, read and written with plain SQL."""

    def __init__(self, server: RestartableServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @contextmanager
    def connect(self):
        # A connection per call, so a restart between calls breaks nothing here.
        with self.server.connect(self.name) as database:
            yield database

    def enqueue(self, task_name: str, *args: object) -> int:
        """Store a task due now and return its id."""
        return self.enqueue_many(task_name, [args])[0]

    def enqueue_many(self, task_name: str, calls: list[tuple]) -> list[int]:
        """Store one task due now per argument tuple in ``calls``, in one transaction, and return their ids."""
        with self.connect() as database, database.transaction(), database.cursor() as cursor:
            ids = []
            for args in calls:
                params = json.dumps([list(args), {}], separators=(",", ":"))
                cursor.execute(
                    "INSERT INTO background_task (task_name, task_params, run_at, attempts, last_error) "
                    "VALUES (%s, %s, now(), 0, '') RETURNING id",
                    [task_name, params],
                )
                ids.append(cursor.fetchone()[0])
        return ids

    def count(self, condition: str = "true") -> int:
        with self.connect() as database:
            return database.execute(f"SELECT count(*) FROM background_task WHERE {condition}").fetchone()[0]

    def rows(self) -> list[tuple]:
        """Return every row as ``(id, attempts, locked_by, failed_at, last_error)``."""
        with self.connect() as database:
            return database.execute(
                "SELECT id, attempts, locked_by, failed_at, last_error FROM background_task ORDER BY id"
            ).fetchall()

    def set_option(self, name: str, value: str) -> None:
        """Set a server option for every new session on this database."""
        with self.connect() as database:
            database.execute(f'ALTER DATABASE "{self.name}" SET {name} = {value}')

    def wait_until_empty(self, workers: list["WorkerProcess"], timeout: float) -> int:
        """Wait until the table is empty, a worker exits or ``timeout`` passes, and return how many rows are left.

        A read that fails because the server is down is tried again.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.count() == 0:
                    return 0
            except psycopg.OperationalError:
                pass
            if any(worker.process.poll() is not None for worker in workers) or time.monotonic() >= deadline:
                return self.count()
            time.sleep(0.1)


@pytest.fixture
def queue(server: RestartableServer) -> QueueDatabase:
    """A fresh queue database on a running server."""
    if not server.is_running:
        # An earlier test failed while the server was down.
        server.start()
    return server.new_database()


# ---------------------------------------------------------------------------
# Workers


class WorkerProcess:
    """A ``process_tasks`` process whose standard output and error go to a log file."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def backoff_waits(self) -> list[float]:
        """Return the waits, in seconds, that the worker's backoff warnings name, in order."""
        return [float(match["wait"]) for match in BACKOFF_WARNING.finditer(self.log())]

    def wait_for(self, predicate, description: str, timeout: float = 60) -> None:
        """Wait until ``predicate(log text)`` is true. Fail at once if the worker exits."""
        deadline = time.monotonic() + timeout
        while not predicate(self.log()):
            exited = self.process.poll() is not None
            assert not exited, f"the worker exited with status {self.process.returncode} before {description}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {description} within {timeout} s:\n{self.log()[-5000:]}"
            time.sleep(0.05)

    def wait_for_text(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda log: text in log, f"log line with {text!r}", timeout)

    def wait_for_backoffs(self, count: int, timeout: float = 60) -> None:
        self.wait_for(
            lambda log: len(BACKOFF_WARNING.findall(log)) >= count, f"{count} backoff warnings", timeout,
        )

    def wait_for_idle_after_backoff(self, timeout: float = 60) -> None:
        """Wait for a backoff warning followed by a log line saying the worker is idle again."""

        def idle_again(log: str) -> bool:
            warnings = list(BACKOFF_WARNING.finditer(log))
            return bool(warnings) and IDLE_LINE in log[warnings[-1].end():]

        self.wait_for(idle_again, "idle line after a backoff warning", timeout)

    def stop(self, timeout: float = 60) -> str:
        """Send SIGTERM unless the worker has exited, wait for it to exit, and return the log."""
        send_stop_signal(self.process)
        self.process.wait(timeout=timeout)
        return self.log()

    def assert_stopped_on_request(self) -> None:
        """Check that the worker ran until SIGTERM and then exited with status 0."""
        log = self.log()
        assert self.process.returncode == 0, f"exit status {self.process.returncode}:\n{log[-5000:]}"
        assert "stopped on request" in log, log[-5000:]


class Workers:
    """Starts workers on one queue database and kills, at teardown, those still running."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.started: list[WorkerProcess] = []

    def start(self, queue: QueueDatabase, *options: str) -> WorkerProcess:
        log_path = self.folder / f"worker-{len(self.started) + 1}.log"
        env = dict(self.env, BACKGROUND_TASK_DATABASE_URL=queue.url, DJANGO_SETTINGS_MODULE="tests.settings_restart")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [*django_admin(), "process_tasks", *options], env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log_path)
        self.started.append(worker)
        return worker

    def kill_running(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=60)


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    started = Workers(worker_env, tmp_path)
    yield started
    started.kill_running()


# ---------------------------------------------------------------------------
# Counting


def count_runs(marks: Path) -> Counter[str]:
    """Return how many times each token was recorded in ``marks``."""
    if not marks.exists():
        return Counter()
    return Counter(line.split()[0] for line in marks.read_text().splitlines())


def started_attempts(logs: list[str]) -> dict[int, list[int]]:
    """Return, per task id, the attempt numbers of its logged starts, across all ``logs``."""
    attempts: dict[int, list[int]] = {}
    for log in logs:
        for match in re.finditer(r"Task id=(\d+) name=\S+ started, attempt (\d+) of", log):
            attempts.setdefault(int(match[1]), []).append(int(match[2]))
    return attempts


def retried_outcomes(logs: list[str]) -> set[int]:
    """Return the ids of the tasks whose outcome write failed at least once."""
    ids = set()
    for log in logs:
        for match in BACKOFF_WARNING.finditer(log):
            if written := re.fullmatch(r"recording the outcome of task id=(\d+)", match["doing"]):
                ids.add(int(written[1]))
    return ids


def count_backoffs(logs: list[str]) -> int:
    return sum(len(BACKOFF_WARNING.findall(log)) for log in logs)


# ---------------------------------------------------------------------------
# Scenarios


@pytest.mark.parametrize("sleep", ["0.2", "300"], ids=["polling", "listening"])
def test_idle_workers_survive_restart(server, queue, workers, tmp_path, reliability, sleep):
    """Idle workers log the lost connection, reconnect, and run tasks stored after the restart.

    With ``--sleep 300`` the workers find the new tasks only through the
    notification, so this also checks that they listen again.
    """
    marks = tmp_path / "marks.txt"
    started = [workers.start(queue, "--sleep", sleep, "--log-level", "DEBUG") for _ in range(2)]
    for worker in started:
        worker.wait_for_text(IDLE_LINE)

    server.restart(down=1.0)
    for worker in started:
        worker.wait_for_idle_after_backoff()
    tokens = [f"task-{number}" for number in range(20)]
    queue.enqueue_many(RECORD_RUN, [(str(marks), token) for token in tokens])
    left = queue.wait_until_empty(started, timeout=60)

    logs = [worker.stop() for worker in started]
    runs = count_runs(marks)
    reliability.record_runs(
        f"2 idle workers (--sleep {sleep}) and a PostgreSQL restart",
        runs, tokens,
        left_locked=queue.count("locked_by IS NOT NULL"),
        backoff_warnings=count_backoffs(logs),
    )

    assert left == 0, f"{left} tasks left: {queue.rows()}"
    for worker in started:
        worker.assert_stopped_on_request()
    assert set(runs) == set(tokens)
    assert max(runs.values()) == 1
    for log in logs:
        assert LOOKING in [match["doing"] for match in BACKOFF_WARNING.finditer(log)], log
        assert RECOVERED in log
        assert "Traceback" not in log


def test_worker_starts_while_server_down(server, queue, workers, tmp_path, reliability):
    """A worker started while PostgreSQL is down waits for it and then runs the queue.

    Its start-up check of the task table must not take the unreachable
    server for a missing table, as it did when a worker started during a
    restart and exited with a hint to run migrate.
    """
    marks = tmp_path / "marks.txt"
    tokens = [f"task-{number}" for number in range(5)]
    queue.enqueue_many(RECORD_RUN, [(str(marks), token) for token in tokens])

    server.stop()
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    worker.wait_for_text("cannot be reached")
    worker.wait_for_backoffs(1)
    server.start()
    left = queue.wait_until_empty([worker], timeout=60)

    log = worker.stop()
    runs = count_runs(marks)
    reliability.record_runs(
        "A worker starts while PostgreSQL is down",
        runs, tokens,
        left_locked=queue.count("locked_by IS NOT NULL"),
    )

    assert left == 0, f"{left} tasks left: {queue.rows()}"
    worker.assert_stopped_on_request()
    assert "migrate" not in log
    assert RECOVERED in log
    assert set(runs) == set(tokens)
    assert max(runs.values()) == 1


def test_restart_during_task_run(server, queue, workers, tmp_path, reliability):
    """A restart while a task runs: its outcome is recorded after the worker reconnects."""
    marks = tmp_path / "marks.txt"
    task_id = queue.enqueue(SLEEP_THEN_RECORD, str(marks), "slow", 3.0)
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    worker.wait_for_text(f"Task id={task_id} name={SLEEP_THEN_RECORD} started")

    server.restart(down=0.5)
    restarted_before_end = not marks.exists()
    left = queue.wait_until_empty([worker], timeout=60)

    log = worker.stop()
    runs = count_runs(marks)
    reliability.record_runs(
        "PostgreSQL restarts while a 3 s task runs",
        runs, ["slow"],
        left_locked=queue.count("locked_by IS NOT NULL"), backoff_warnings=count_backoffs([log]),
    )

    assert restarted_before_end, "the task ended before the server was back, so the restart did not fall in its run"
    assert left == 0, f"the outcome was not recorded: {queue.rows()}"
    worker.assert_stopped_on_request()
    assert runs == Counter({"slow": 1})
    # The connection that the restart broke fails the first write.
    assert retried_outcomes([log]) == {task_id}, log
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} succeeded" in log


def test_outcome_waits_for_server(server, queue, workers, tmp_path, reliability):
    """The server is down when the task ends: the worker keeps the outcome and writes it once it is back."""
    marks = tmp_path / "marks.txt"
    task_id = queue.enqueue(SLEEP_THEN_RECORD, str(marks), "slow", 2.0)
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    worker.wait_for_text(f"Task id={task_id} name={SLEEP_THEN_RECORD} started")

    server.stop()
    worker.wait_for(lambda log: marks.exists(), "the end of the task")
    # Two failed writes show that the worker kept the outcome and tried again.
    worker.wait_for_backoffs(2)
    server.start()
    left = queue.wait_until_empty([worker], timeout=60)

    log = worker.stop()
    runs = count_runs(marks)
    waits = worker.backoff_waits()
    reliability.record_runs(
        "PostgreSQL is down when a task ends",
        runs, ["slow"],
        left_locked=queue.count("locked_by IS NOT NULL"), backoff_waits=waits,
    )

    assert left == 0, f"the outcome was not recorded: {queue.rows()}"
    worker.assert_stopped_on_request()
    assert runs == Counter({"slow": 1})
    assert retried_outcomes([log]) == {task_id}, log
    assert waits[:2] == [FIRST_WAIT, 2 * FIRST_WAIT]
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} succeeded" in log


def sigterm_while_outcome_waits(
    server: RestartableServer, queue: QueueDatabase, workers: Workers, marks: Path,
) -> tuple[int, WorkerProcess]:
    """Stop the server while a 2 s task runs, then send SIGTERM once its outcome waits for the server.

    Return the task's id and the worker, which has logged the signal. The
    server is left stopped.
    """
    task_id = queue.enqueue(SLEEP_THEN_RECORD, str(marks), "slow", 2.0)
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    worker.wait_for_text(f"Task id={task_id} name={SLEEP_THEN_RECORD} started")

    server.stop()
    worker.wait_for(lambda log: marks.exists(), "the end of the task")
    worker.wait_for_backoffs(1)
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for_text("received SIGTERM")
    return task_id, worker


def test_sigterm_keeps_pending_outcome(server, queue, workers, tmp_path, reliability):
    """SIGTERM while an outcome waits for the server: the worker writes it once the server is back, then stops.

    The first signal stops the worker after the task in progress, and
    writing the outcome is part of that task.
    """
    marks = tmp_path / "marks.txt"
    task_id, worker = sigterm_while_outcome_waits(server, queue, workers, marks)
    server.start()
    worker.process.wait(timeout=60)

    left = queue.count()
    runs = count_runs(marks)
    reliability.record_runs(
        "SIGTERM while a task's outcome waits for PostgreSQL",
        runs, ["slow"],
        left_locked=queue.count("locked_by IS NOT NULL"),
    )

    assert left == 0, f"the worker stopped without writing the outcome: {queue.rows()}"
    worker.assert_stopped_on_request()
    assert runs == Counter({"slow": 1})
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} succeeded" in worker.log()


def test_second_sigterm_abandons_outcome(server, queue, workers, tmp_path, reliability):
    """A second SIGTERM while an outcome waits for the server stops the worker without writing it.

    The task stays locked until MAX_RUN_TIME has passed. Then another worker
    records the lost run as a failed attempt and runs the task again, so it
    runs twice and its row shows why.
    """
    marks = tmp_path / "marks.txt"
    task_id, first = sigterm_while_outcome_waits(server, queue, workers, marks)
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(timeout=60)
    server.start()
    locked_after_exit = queue.count("locked_by IS NOT NULL")

    second = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    # The lock expires MAX_RUN_TIME after the claim, and the retry waits 6 s more.
    left = queue.wait_until_empty([second], timeout=MAX_RUN_TIME + 60)
    log = second.stop()
    runs = count_runs(marks)
    reliability.record_runs(
        "Second SIGTERM while a task's outcome waits for PostgreSQL",
        runs, ["slow"],
        left_locked=queue.count("locked_by IS NOT NULL"),
    )

    assert first.process.returncode == 1, first.log()
    assert "received a second SIGTERM" in first.log()
    assert locked_after_exit == 1
    assert left == 0, f"the task was not run again: {queue.rows()}"
    assert runs == Counter({"slow": 2})
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} failed on attempt 1 of " in log
    assert "Run lost" in log
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} started, attempt 2 of " in log


def test_restarts_while_draining(server, queue, workers, tmp_path, reliability):
    """Five restarts while two workers drain 500 short tasks: none lost, none left locked.

    The tasks only record their run, and a busy worker claims the next task
    in the transaction that writes an outcome, so nearly every restart breaks
    an outcome write. A task may run twice only after its row counted the
    lost run as a failed attempt, so no two starts of a task may log the
    same attempt number.
    """
    marks = tmp_path / "marks.txt"
    tokens = [f"task-{number}" for number in range(500)]
    ids = queue.enqueue_many(RECORD_RUN, [(str(marks), token) for token in tokens])
    token_by_id = dict(zip(ids, tokens))
    id_by_token = dict(zip(tokens, ids))

    started = [workers.start(queue, "--sleep", "0.1", "--log-level", "INFO") for _ in range(2)]
    left_at_restarts = []
    for restart, down in enumerate(DOWN_TIMES, start=1):
        # Restart after each sixth of the queue, so every restart falls inside the drain.
        threshold = len(tokens) * (len(DOWN_TIMES) + 1 - restart) // (len(DOWN_TIMES) + 1)
        while (left := queue.count()) > threshold:
            time.sleep(0.01)
        left_at_restarts.append(left)
        server.restart(down=down)
    # A lock whose claim committed unseen expires after MAX_RUN_TIME, and the retry follows 6 s later.
    left = queue.wait_until_empty(started, timeout=MAX_RUN_TIME + 100)

    logs = [worker.stop() for worker in started]
    runs = count_runs(marks)
    attempts = started_attempts(logs)
    outcomes_retried = len(retried_outcomes(logs))
    reliability.record_runs(
        "5 PostgreSQL restarts while 2 workers drain 500 tasks",
        runs, tokens,
        left_locked=queue.count("locked_by IS NOT NULL"),
        repetitions=len(DOWN_TIMES),
        seconds_down=DOWN_TIMES,
        left_at_restarts=left_at_restarts,
        backoff_warnings=count_backoffs(logs),
        outcomes_retried=outcomes_retried,
        expired_locks_recovered=sum(log.count("Run lost") for log in logs),
        lock_lost_at_outcome=sum(log.count("was lost before the outcome was written") for log in logs),
    )

    assert all(count > 0 for count in left_at_restarts), f"the queue ran empty before a restart: {left_at_restarts}"
    # While tasks are left, a worker always has a claimed task, so a restart breaks the write of its outcome.
    assert outcomes_retried > 0, "no restart fell on an outcome write"
    assert left == 0, f"{left} tasks left: {queue.rows()}"
    for worker in started:
        worker.assert_stopped_on_request()
    assert set(runs) == set(tokens), f"never ran: {sorted(set(tokens) - set(runs))}"
    for task_id, numbers in attempts.items():
        assert len(numbers) == len(set(numbers)), f"{token_by_id[task_id]} started twice as attempt {numbers}"
    for token, count in runs.items():
        assert count == len(attempts[id_by_token[token]]), f"{token} ran {count} times"


def test_task_outlives_idle_session_timeout(server, queue, workers, tmp_path, reliability):
    """A task that runs longer than the server's idle_session_timeout still gets its outcome recorded."""
    with queue.connect() as database:
        version = int(database.execute("SHOW server_version_num").fetchone()[0])
    if version < 140000:
        pytest.skip(f"idle_session_timeout needs PostgreSQL 14 or newer; the server is version {version}")
    marks = tmp_path / "marks.txt"
    queue.set_option("idle_session_timeout", "'1s'")
    task_id = queue.enqueue(SLEEP_THEN_RECORD, str(marks), "slow", 3.0)

    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "INFO")
    left = queue.wait_until_empty([worker], timeout=60)

    log = worker.stop()
    runs = count_runs(marks)
    reliability.record_runs(
        "A task runs 3 s past a 1 s idle_session_timeout",
        runs, ["slow"],
        left_locked=queue.count("locked_by IS NOT NULL"),
    )

    # Shows that the server did close an idle connection of the worker.
    assert "terminating connection due to idle-session timeout" in server.server_log()
    assert left == 0, f"the outcome was not recorded: {queue.rows()}"
    worker.assert_stopped_on_request()
    assert runs == Counter({"slow": 1})
    assert f"Task id={task_id} name={SLEEP_THEN_RECORD} succeeded" in log


def test_sigterm_during_backoff(server, queue, workers, reliability):
    """SIGTERM while the worker waits to reconnect ends that wait, and the worker exits with status 0."""
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "DEBUG")
    worker.wait_for_text(IDLE_LINE)

    server.stop()
    # The waits double from 0.5 s, so the fifth is 8 s long.
    worker.wait_for_backoffs(5)
    signalled = time.monotonic()
    worker.stop()
    elapsed = time.monotonic() - signalled
    waits = worker.backoff_waits()
    reliability.record(
        "SIGTERM while the worker waits to reconnect", tasks=0, lost=0, run_twice=0, left_locked=0,
        backoff_waits=waits, seconds_to_stop=round(elapsed, 2),
    )

    worker.assert_stopped_on_request()
    assert waits[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    # The worker stopped before the 8 s wait in progress could end, so the signal ended the wait.
    assert elapsed < waits[4], f"the worker took {elapsed:.1f} s to stop"


@pytest.mark.long
def test_backoff_stops_at_cap(server, queue, workers, reliability):
    """With the server down, the reconnect waits double from 0.5 s and stay at the 30 s cap."""
    worker = workers.start(queue, "--sleep", "0.2", "--log-level", "DEBUG")
    worker.wait_for_text(IDLE_LINE)

    server.stop()
    # 0.5 + 1 + 2 + 4 + 8 + 16 + 30 = 61.5 s pass before the second wait at the cap begins.
    worker.wait_for(lambda log: worker.backoff_waits().count(MAX_WAIT) >= 2, "two waits at the cap", timeout=150)
    signalled = time.monotonic()
    worker.stop()
    elapsed = time.monotonic() - signalled
    waits = worker.backoff_waits()
    reliability.record(
        "Reconnect backoff with PostgreSQL down for a minute", tasks=0, lost=0, run_twice=0, left_locked=0,
        backoff_waits=waits, seconds_to_stop=round(elapsed, 2),
    )

    expected = [FIRST_WAIT]
    while len(expected) < len(waits):
        expected.append(min(expected[-1] * 2, MAX_WAIT))
    assert waits == expected
    worker.assert_stopped_on_request()
    assert elapsed < MAX_WAIT, f"the worker took {elapsed:.1f} s to stop during a {MAX_WAIT:g} s wait"
