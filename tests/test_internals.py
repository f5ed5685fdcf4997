"""Internals of this implementation that the spec does not reach."""

import io
import logging
import logging.handlers
import signal
import time

import pytest

from background_task.exceptions import TaskTimeout
from background_task.locking import new_worker_id
from background_task.log_options import logging_options, package_logger
from background_task.output import LogStream
from background_task.timeouts import time_limit


def test_worker_ids_differ_within_process():
    ids = {new_worker_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(len(worker_id) <= 64 for worker_id in ids)


def test_log_stream_joins_partial_writes(caplog):
    stream = LogStream(logging.INFO, "prefix: ", io.StringIO())

    with caplog.at_level(logging.INFO, logger="background_task.output"):
        stream.write("hel")
        stream.write("lo\nwor")
        stream.write("ld")
        stream.flush()

    assert [record.getMessage() for record in caplog.records] == ["prefix: hello", "prefix: world"]


def test_interrupted_flush_logs_once():
    """A flush that an exception cuts short, as a stop signal can, leaves nothing to log again on close."""
    stream = LogStream(logging.INFO, "prefix: ", io.StringIO())
    stream.write("last words")

    class Interrupted(BaseException):
        pass

    class RaiseOnFirst(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())
            if len(self.messages) == 1:
                raise Interrupted

    handler = RaiseOnFirst()
    output_logger = logging.getLogger("background_task.output")
    level = output_logger.level
    output_logger.setLevel(logging.INFO)
    output_logger.addHandler(handler)
    try:
        with pytest.raises(Interrupted):
            stream.flush()
        stream.close()
    finally:
        output_logger.removeHandler(handler)
        output_logger.setLevel(level)

    assert handler.messages == ["prefix: last words"]


def test_time_limit_interrupts_and_restores_handler():
    previous = signal.getsignal(signal.SIGALRM)

    with pytest.raises(TaskTimeout, match="too slow"):
        with time_limit(0.05, "too slow"):
            time.sleep(2)

    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_cancels_timer_after_block():
    with time_limit(0.05, "too slow"):
        pass

    time.sleep(0.1)  # would raise TaskTimeout here if the timer were still set
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_logging_options_restore_logger(tmp_path):
    before = (package_logger.level, list(package_logger.handlers), package_logger.propagate)

    with logging_options("DEBUG", str(tmp_path / "log.txt")):
        assert package_logger.level == logging.DEBUG
        assert package_logger.propagate is False
        logging.getLogger("background_task.worker").debug("inside")

    after = (package_logger.level, list(package_logger.handlers), package_logger.propagate)
    assert after == before
    assert "inside" in (tmp_path / "log.txt").read_text()


def test_logging_options_without_options_change_nothing():
    before = (package_logger.level, list(package_logger.handlers), package_logger.propagate)

    with logging_options(None, None):
        inside = (package_logger.level, list(package_logger.handlers), package_logger.propagate)

    assert inside == before


def test_log_level_keeps_project_handler_single():
    project_handler = logging.handlers.BufferingHandler(capacity=100)
    package_logger.addHandler(project_handler)
    try:
        with logging_options("INFO", None):
            handlers_inside = list(package_logger.handlers)
            logging.getLogger("background_task.worker").info("once")
    finally:
        package_logger.removeHandler(project_handler)

    assert handlers_inside == [project_handler]
    assert [record.getMessage() for record in project_handler.buffer] == ["once"]
