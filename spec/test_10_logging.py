"""Logging.

The queue logs through Python's standard ``logging`` module, under loggers
named ``background_task`` and below, so a project routes its records with
the LOGGING setting like any other library's. The start of a run and its
success are logged at INFO. A failure that will be retried is logged at
WARNING with the attempt number and the retry time, and a failure that
marks the task failed is logged at ERROR with the traceback. Each record
about a task names its id and name, so a line in a log leads to its row.

``process_tasks`` has three options for a worker run from a shell or a
process manager without logging configured. ``--log-file PATH`` writes the
records to a file, one line per record with its level among the details.
``--log-level`` sets the lowest level written. Given alone, it writes to
standard error, so the chosen level shows even when the project configured
nothing. With ``--log-file`` and no ``--log-level``, INFO records are
written when the project set no level for the ``background_task`` logger.
``--log-std`` turns each line a task prints into a record, at INFO for
stdout and ERROR for stderr, so the output of a task lands in the log next
to its runs.

These options change only the ``background_task`` logger, and only while the
command runs. While one is in effect, the records go to the handler it adds
and are not passed on to the root logger, which would print them a second
time. The root logger is never touched, and without any option the command
leaves logging exactly as the project configured it.
"""

import logging
import re

import pytest
from django.core.management import CommandError
from django.test import override_settings
from freezegun import freeze_time

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 10

#: The states that :func:`record_logger_state` saw, in run order.
logger_states: list[tuple] = []


def logger_state(logger: logging.Logger) -> tuple:
    """Return the parts of a logger's configuration that a command could change."""
    return logger.level, list(logger.handlers), logger.propagate


@adapter.background(name="spec.logging.record_logger_state")
def record_logger_state(logger_name: str) -> None:
    """Append the state of the logger ``logger_name`` ("" for the root logger) to logger_states."""
    logger_states.append(logger_state(logging.getLogger(logger_name or None)))


@pytest.fixture(autouse=True)
def forget_logger_states():
    logger_states.clear()
    yield
    logger_states.clear()


@pytest.fixture
def project_handler():
    """Configure the background_task logger as a project might: level DEBUG, a handler of its own, and propagation on.

    Returns the handler, which keeps every record it receives in ``records``.
    """
    logger = logging.getLogger(adapter.ROOT_LOGGER)
    saved = logger_state(logger)
    handler = CollectingHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = True

    yield handler

    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[2]


class CollectingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_worker_briefly(*options: str) -> None:
    adapter.process_tasks("--duration", "0.2", "--sleep", "0.1", *options)


def names_task(text: str, task: adapter.Task) -> bool:
    """Whether ``text`` names both the task's id (as "id=7", "id 7" or "id: 7") and its name."""
    return task.task_name in text and re.search(rf"\bid\W{{0,3}}{task.pk}\b", text) is not None


def queue_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Return the records of the queue's loggers among ``records``."""
    prefix = adapter.ROOT_LOGGER + "."
    return [record for record in records if record.name == adapter.ROOT_LOGGER or record.name.startswith(prefix)]


def records_about(records: list[logging.LogRecord], task: adapter.Task) -> list[logging.LogRecord]:
    """Return the queue's records among ``records`` whose message names ``task``."""
    return [record for record in queue_records(records) if names_task(record.getMessage(), task)]


def records_containing(records: list[logging.LogRecord], text: str) -> list[logging.LogRecord]:
    """Return the queue's records among ``records`` whose message contains ``text``."""
    return [record for record in queue_records(records) if text in record.getMessage()]


@pytest.mark.rule(1)
def test_log_file_records_runs(tmp_path):
    """--log-file PATH writes the queue's log records to that file, one line each with its level, naming the task's id and name when it starts and when it succeeds."""
    task = spec_tasks.record("logged")
    log_file = tmp_path / "worker.log"

    run_worker_briefly("--log-file", str(log_file))

    lines = [line for line in log_file.read_text().splitlines() if names_task(line, task)]
    started = [line for line in lines if "start" in line]
    succeeded = [line for line in lines if "succeed" in line]
    assert len(started) == 1
    assert len(succeeded) == 1
    assert "INFO" in started[0]
    assert "INFO" in succeeded[0]


@pytest.mark.rule(2)
def test_log_level_filters_file(tmp_path):
    """--log-level writes only records at that level or above: with WARNING, a successful run adds no INFO line while a failure's WARNING line is written."""
    spec_tasks.record("quiet")
    failing = spec_tasks.fail("boom")
    log_file = tmp_path / "worker.log"

    run_worker_briefly("--log-file", str(log_file), "--log-level", "WARNING")

    lines = log_file.read_text().splitlines()
    assert [line for line in lines if re.search(r"\bINFO\b", line)] == []
    assert [line for line in lines if "WARNING" in line and names_task(line, failing)] != []


@pytest.mark.rule(3)
def test_log_level_alone_writes_stderr(capsys):
    """--log-level without --log-file writes the queue's records at that level and above to standard error.

    The project here configures no logging, so without the option the INFO
    records would be dropped.
    """
    task = spec_tasks.record("logged")

    run_worker_briefly("--log-level", "INFO")

    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "start" in line and names_task(line, task)] != []


@pytest.mark.rule(4)
def test_log_std_logs_output_lines(caplog, capsys):
    """--log-std logs each line a task writes to stdout as an INFO record and each line it writes to stderr as an ERROR record, naming the task, instead of printing them."""
    caplog.set_level(logging.INFO, logger=adapter.ROOT_LOGGER)
    task = spec_tasks.write_output("first line\nsecond line", "a complaint")

    run_worker_briefly("--log-std")

    first = records_containing(caplog.records, "first line")
    second = records_containing(caplog.records, "second line")
    complaint = records_containing(caplog.records, "a complaint")
    assert [record.levelno for record in first] == [logging.INFO]
    assert [record.levelno for record in second] == [logging.INFO]
    assert [record.levelno for record in complaint] == [logging.ERROR]
    assert "second line" not in first[0].getMessage()
    assert names_task(first[0].getMessage(), task)
    assert names_task(second[0].getMessage(), task)
    assert names_task(complaint[0].getMessage(), task)
    assert "first line" not in capsys.readouterr().out


@pytest.mark.rule(5)
def test_output_untouched_without_log_std(caplog, capsys):
    """Without --log-std, what a task writes to stdout and stderr goes to the worker's own stdout and stderr and is not logged."""
    caplog.set_level(logging.INFO, logger=adapter.ROOT_LOGGER)
    spec_tasks.write_output("first line\nsecond line", "a complaint")

    run_worker_briefly()

    output = capsys.readouterr()
    assert output.out == "first line\nsecond line\n"
    assert output.err == "a complaint\n"
    assert records_containing(caplog.records, "first line") == []
    assert records_containing(caplog.records, "a complaint") == []


@pytest.mark.rule(6)
def test_options_leave_root_logger(tmp_path):
    """The logging options leave the root logger alone: its level and handlers are the same while the command runs and after it."""
    root = logging.getLogger()
    before = logger_state(root)
    record_logger_state("")

    run_worker_briefly("--log-file", str(tmp_path / "worker.log"), "--log-level", "DEBUG", "--log-std")

    assert logger_states == [before]
    assert logger_state(root) == before


@pytest.mark.rule(7)
def test_options_restored_after_command(project_handler, tmp_path):
    """The logging options last only while the command runs: afterwards the background_task logger has its level, handlers and propagate flag back."""
    logger = logging.getLogger(adapter.ROOT_LOGGER)
    before = logger_state(logger)
    record_logger_state(adapter.ROOT_LOGGER)

    run_worker_briefly("--log-file", str(tmp_path / "worker.log"), "--log-level", "ERROR")

    assert logger_states != [before]
    assert logger_state(logger) == before


@pytest.mark.rule(8)
@pytest.mark.parametrize("use_file", [True, False], ids=["log-file", "log-level"])
def test_options_stop_propagation(caplog, tmp_path, use_file):
    """While --log-file or --log-level is in effect, the queue's records go to the handler the option adds and are not passed on to the root logger's handlers."""
    task = spec_tasks.record("logged")
    options = ["--log-file", str(tmp_path / "worker.log")] if use_file else ["--log-level", "INFO"]

    run_worker_briefly(*options)

    assert spec_tasks.calls != []
    assert records_about(caplog.records, task) == []


@pytest.mark.rule(9)
def test_no_options_keep_project_logging(project_handler, caplog):
    """Without logging options, the command leaves the background_task logger's level, handlers and propagate flag as the project configured them, so its records reach the project's handlers."""
    logger = logging.getLogger(adapter.ROOT_LOGGER)
    before = logger_state(logger)
    task = spec_tasks.record("logged")
    record_logger_state(adapter.ROOT_LOGGER)

    run_worker_briefly()

    assert logger_states == [before]
    assert logger_state(logger) == before
    assert records_about(project_handler.records, task) != []
    assert records_about(caplog.records, task) != []


@pytest.mark.rule(10)
def test_retry_logged_as_warning(caplog):
    """A failure that will be retried is logged at WARNING with the task's id, name, attempt number, retry time and error.

    A task that fails for the third time at 12:00:00 is retried
    3 ** 4 + 5 = 86 seconds later, at 12:01:26.
    """
    with freeze_time("2026-01-01 12:00:00"):
        task = spec_tasks.fail("boom")
        adapter.Task.objects.filter(pk=task.pk).update(attempts=2)

        adapter.run_due()

    records = [record for record in records_about(caplog.records, task) if record.levelno >= logging.WARNING]
    assert [record.levelno for record in records] == [logging.WARNING]
    message = records[0].getMessage()
    assert "attempt 3" in message
    assert "12:01:26" in message
    assert "boom" in message


@pytest.mark.rule(11)
@override_settings(MAX_ATTEMPTS=1)
def test_final_failure_logged_as_error(caplog):
    """A failure after which the task is marked failed is logged at ERROR with the task's id and name and the traceback."""
    task = spec_tasks.fail("boom")

    adapter.run_due()

    records = [record for record in records_about(caplog.records, task) if record.levelno >= logging.WARNING]
    assert [record.levelno for record in records] == [logging.ERROR]
    text = logging.Formatter().format(records[0])
    assert "Traceback (most recent call last)" in text
    assert "ValueError: boom" in text


@pytest.mark.rule(12)
def test_success_logged_as_info(caplog):
    """A successful run is logged at INFO with the task's id and name."""
    caplog.set_level(logging.INFO, logger=adapter.ROOT_LOGGER)
    task = spec_tasks.record("logged")

    adapter.run_due()

    records = [record for record in records_about(caplog.records, task) if "succeed" in record.getMessage()]
    assert [record.levelno for record in records] == [logging.INFO]


@pytest.mark.rule(13)
def test_unopenable_log_file_rejected(tmp_path):
    """A --log-file path that cannot be opened is rejected with a CommandError naming the path, before any task runs."""
    task = spec_tasks.record("must not run")
    log_file = tmp_path / "no-such-directory" / "worker.log"
    logger = logging.getLogger(adapter.ROOT_LOGGER)
    before = logger_state(logger)

    with pytest.raises(CommandError) as raised:
        run_worker_briefly("--log-file", str(log_file))

    assert str(log_file) in str(raised.value)
    assert spec_tasks.calls == []
    assert adapter.stored(task) is not None
    assert logger_state(logger) == before
