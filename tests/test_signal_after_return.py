"""Stop signals that arrive after a task has returned, while the worker closes the run.

The run's block ends with undoing its time limit and flushing its captured
output. A second stop signal or the MAX_RUN_TIME alarm that lands there
comes after the task has run to its end, so the run is recorded as a
success and the task does not run again.
"""

import logging
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from background_task import background
from background_task.exceptions import WorkerInterrupted
from background_task.models import Task
from background_task.shutdown import stop_on_signals
from background_task.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)

LAST_WORDS = "last words"


@background(name="tests.print_last_words")
def print_last_words() -> None:
    # No newline, so the captured output logs this text when the run's
    # block closes, after the function has returned.
    print(LAST_WORDS, end="")


class SignalOnLastWords(logging.Handler):
    """Logging handler that sends this process its ``signals`` when the task's last output is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: tuple[signal.Signals, ...] = ()

    def emit(self, record: logging.LogRecord) -> None:
        if LAST_WORDS in record.getMessage():
            for number in self.signals:
                os.kill(os.getpid(), number)


@pytest.fixture
def signal_on_last_words() -> Iterator[Callable[..., None]]:
    """Install a SignalOnLastWords handler for the test, and return the function that sets its signals."""
    output_logger = logging.getLogger("background_task.output")
    level = output_logger.level
    handler = SignalOnLastWords()
    # The captured stdout is logged at INFO.
    output_logger.setLevel(logging.INFO)
    output_logger.addHandler(handler)

    def send(*signals: signal.Signals) -> None:
        handler.signals = signals

    yield send
    output_logger.removeHandler(handler)
    output_logger.setLevel(level)


def test_second_signal_after_return_keeps_success(signal_on_last_words):
    task = print_last_words()
    # Two different signals, so neither is merged into the other while pending.
    signal_on_last_words(signal.SIGTERM, signal.SIGINT)
    worker = Worker(capture_output=True)

    with stop_on_signals(worker), pytest.raises(WorkerInterrupted):
        worker.run(duration=10, sleep=0.1)

    assert not Task.objects.filter(pk=task.pk).exists()


def test_first_signal_after_return_keeps_success(signal_on_last_words):
    task = print_last_words()
    signal_on_last_words(signal.SIGTERM)
    worker = Worker(capture_output=True)

    with stop_on_signals(worker):
        worker.run(duration=10, sleep=0.1)

    assert not Task.objects.filter(pk=task.pk).exists()


def test_run_time_alarm_after_return_keeps_success(signal_on_last_words):
    task = print_last_words()
    # The alarm that enforces MAX_RUN_TIME, as if it came due just then.
    signal_on_last_words(signal.SIGALRM)

    Worker(capture_output=True).run_until_idle()

    assert not Task.objects.filter(pk=task.pk).exists()
