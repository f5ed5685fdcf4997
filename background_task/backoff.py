"""The retry delay after a failed run."""

from datetime import timedelta


def backoff_delay(attempts: int) -> timedelta:
    """Return how long to wait after the ``attempts``-th failed run: attempts ** 4 + 5 seconds.

    The first failure waits 6 s, the fourth 261 s (about 4 minutes) and the
    24th 331,781 s (about 3.84 days), so a task that fails from a coding
    error stops crowding out the rest of the queue.
    """
    return timedelta(seconds=attempts**4 + 5)
