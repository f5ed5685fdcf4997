"""Waiting out a database that cannot be reached, with a bounded backoff.

When one of the worker's own queries fails, for example while PostgreSQL
restarts, the worker closes its connection, waits and tries again. The
first wait is 0.5 s, and each further failure in a row doubles it, up to
:data:`MAX_DELAY`. The next query opens a new connection. Such
errors are the worker's, never a task's, so no attempt is counted for them.
"""

import logging

from django.db import DatabaseError, InterfaceError, connections

logger = logging.getLogger(__name__)

#: The errors a query raises when the database cannot be reached. InterfaceError,
#: which a closed connection raises, is not a subclass of DatabaseError.
DATABASE_ERRORS = (DatabaseError, InterfaceError)

FIRST_DELAY = 0.5
MAX_DELAY = 30.0


class DatabaseBackoff:
    """A count of a worker's database failures in a row, and the wait that follows each."""

    def __init__(self, worker_id: str, alias: str) -> None:
        self.worker_id = worker_id
        self.alias = alias
        self.failures = 0

    def failed(self, error: Exception, doing: str) -> float:
        """Log ``error``, raised while ``doing``, close the connection, and return the seconds to wait."""
        self.failures += 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (self.failures - 1))
        logger.warning(
            "Worker %s got a database error while %s (failure %d in a row), retrying in %.1f s: %s: %s",
            self.worker_id, doing, self.failures, delay, type(error).__name__, str(error).strip(),
        )
        self._close_connection()
        return delay

    def succeeded(self) -> None:
        """Reset the count after a query that succeeded, and log the recovery."""
        if self.failures:
            logger.info("Worker %s reached the database again after %d failures", self.worker_id, self.failures)
        self.failures = 0

    def _close_connection(self) -> None:
        connection = connections[self.alias]
        if connection.in_atomic_block:
            # The caller's transaction owns the connection, so the caller handles the error.
            return
        try:
            connection.close()
        except DATABASE_ERRORS:
            # A connection that the server already dropped may fail to close.
            # The next query opens a new one all the same.
            pass
