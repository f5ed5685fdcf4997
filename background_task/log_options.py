"""Applying ``process_tasks``'s logging options to the ``background_task`` loggers only.

The root logger and the project's LOGGING setting are never touched; when no
option is given nothing changes at all.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

LEVELS = ["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

package_logger = logging.getLogger("background_task")


@contextmanager
def logging_options(level: str | None, log_file: str | None, capture_output: bool = False) -> Iterator[None]:
    """Set the package logger's level and handler for the block, then restore them.

    ``log_file`` adds a file handler. ``level`` without ``log_file`` adds a
    stderr handler when LOGGING gave the package logger none, so the chosen
    level shows even in a project that has not configured logging. An added
    handler stops records from also reaching the root logger, which would
    print them twice.

    ``capture_output`` (``--log-std``) also adds the stderr handler when no
    handler at all would receive the package's records, because the captured
    output would otherwise be lost.
    """
    needs_handler = capture_output and not package_logger.hasHandlers()
    if level is None and log_file is None and not needs_handler:
        yield
        return

    saved = package_logger.level, package_logger.propagate
    handler = None
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    elif not package_logger.handlers:
        handler = logging.StreamHandler()

    if handler is not None:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        package_logger.addHandler(handler)
        package_logger.propagate = False
    if level is not None:
        package_logger.setLevel(level)
    elif package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)

    try:
        yield
    finally:
        if handler is not None:
            package_logger.removeHandler(handler)
            handler.close()
        package_logger.setLevel(saved[0])
        package_logger.propagate = saved[1]
