"""Interrupting a task that runs past MAX_RUN_TIME.

The worker enforces the limit itself, so a live worker's lock never expires
under it: the task is stopped when its lock would expire and the run counts
as a failed attempt.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from background_task.exceptions import TaskTimeout


def can_interrupt() -> bool:
    """Whether this thread can set a timer signal: only the main thread on Unix can."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float, reason: str) -> Iterator[None]:
    """Raise TaskTimeout(reason) inside the block once ``seconds`` of wall time have passed.

    NOTE: outside the main thread, or on a platform without SIGALRM, the block
    runs unlimited and only the lock expiry bounds it.
    """
    if not can_interrupt():
        yield
        return

    def interrupt(signum, frame):
        raise TaskTimeout(reason)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
