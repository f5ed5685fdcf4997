"""Waiting while idle, and waking early when a task is stored or a stop is requested.

An idle worker waits up to ``--sleep`` seconds before it looks for a due
task again. On PostgreSQL it also listens on a notification channel: the
table's insert trigger sends a notification when the storing transaction
commits, so a task queued for now starts without waiting for the next poll.
Polling stays as the fallback, and it is all there is on other databases.
"""

import logging
import os
import select

from django.db import connections

logger = logging.getLogger(__name__)

#: The PostgreSQL notification channel that the insert trigger notifies.
CHANNEL = "background_task"


class Wakeup:
    """An idle wait that ends early on a stop request or, on PostgreSQL, a new task."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        # A pipe lets stop(), which may run in a signal handler, end a wait.
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        os.set_blocking(self._write_end, False)
        self._listener = None
        self._listen_failed = False

    def listen(self) -> None:
        """Open a connection of its own that listens on :data:`CHANNEL`, on PostgreSQL only.

        The worker calls this before each wait, so a listener lost with a
        database restart comes back once the database does.
        """
        database = connections[self.alias]
        if database.vendor != "postgresql" or self._listener is not None:
            return
        try:
            listener = database.get_new_connection(database.get_connection_params())
            listener.autocommit = True
            listener.execute(f"LISTEN {CHANNEL}")
        except Exception as error:
            if not self._listen_failed:
                logger.warning("Cannot listen for new tasks, so the worker only polls: %s", error)
            self._listen_failed = True
            return
        self._listener = listener
        self._listen_failed = False

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds``, returning early when woken."""
        readable = [self._read_end]
        if self._listener is not None:
            readable.append(self._listener.fileno())

        ready, _, _ = select.select(readable, [], [], seconds)

        if self._read_end in ready:
            self._drain_pipe()
        if self._listener is not None and self._listener.fileno() in ready:
            self._drain_notifications()

    def wake(self) -> None:
        """End the current or next wait; safe to call from a signal handler."""
        try:
            os.write(self._write_end, b"\0")
        except BlockingIOError:
            pass  # The pipe is full, so a wake-up is already pending.

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        os.close(self._read_end)
        os.close(self._write_end)

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._read_end, 512):
                pass
        except BlockingIOError:
            pass

    def _drain_notifications(self) -> None:
        try:
            for _ in self._listener.notifies(timeout=0):
                pass
        except Exception as error:
            # A broken listener must not stop the worker: fall back to polling.
            logger.warning("Lost the connection that listens for new tasks; polling until it is back: %s", error)
            self._listener.close()
            self._listener = None
