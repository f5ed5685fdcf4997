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


@contextmanager
def stop_on_signals(worker: Stoppable) -> Iterator[None]:
    """Make the first SIGTERM or SIGINT stop ``worker`` once its current task ends.

    The first signal restores the previous handlers, so a second one acts as
    it would without the worker: SIGINT raises KeyboardInterrupt and SIGTERM
    ends the process.

    NOTE: a run cut short by that second signal is not recorded; its lock
    expires after MAX_RUN_TIME and the next claim counts it as lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def request_stop(number: int, frame) -> None:
        logger.info(
            "Worker %s received %s and stops after the current task; send it again to stop at once",
            worker.id, signal.Signals(number).name,
        )
        restore()
        worker.stop()

    for number in STOP_SIGNALS:
        signal.signal(number, request_stop)
    try:
        yield
    finally:
        restore()
