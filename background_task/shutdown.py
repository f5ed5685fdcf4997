"""Stopping a worker cleanly on SIGTERM or SIGINT."""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    id: str

    def stop(self) -> None: ...

    def interrupt(self, reason: str) -> None: ...


@contextmanager
def stop_on_signals(worker: Stoppable) -> Iterator[None]:
    """Make the first SIGTERM or SIGINT stop ``worker`` once its current task ends.

    A second signal calls ``worker.interrupt()``, which raises
    WorkerInterrupted while a task runs or the worker waits, and otherwise
    once the database write in progress has committed. If a task is running,
    the worker records that run as a failed attempt and unlocks the task
    before the exception leaves it. The previous handlers are back once the
    block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def interrupt(number: int, frame) -> None:
        worker.interrupt(f"worker {worker.id} received a second {signal.Signals(number).name}")

    def request_stop(number: int, frame) -> None:
        logger.info(
            "Worker %s received %s and stops after the current task, if any; send it again to stop at once",
            worker.id, signal.Signals(number).name,
        )
        for other in STOP_SIGNALS:
            signal.signal(other, interrupt)
        worker.stop()

    for number in STOP_SIGNALS:
        signal.signal(number, request_stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
