"""Sending a running task's stdout and stderr to the logging system."""

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TextIO

logger = logging.getLogger("background_task.output")


class LogStream(io.TextIOBase):
    """A text stream that logs each complete line it receives."""

    def __init__(self, level: int, prefix: str, fallback: TextIO) -> None:
        self.level = level
        self.prefix = prefix
        self.fallback = fallback
        self._partial = ""
        self._logging = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._logging:
            # A handler is writing to the redirected stream, as Python's
            # last-resort handler does with sys.stderr when no handler is
            # configured. Logging that text again would recurse forever.
            return self.fallback.write(text)

        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._log(line)
        return len(text)

    def flush(self) -> None:
        # Emptied before logging, so a flush that a signal cuts short, or
        # the one when the stream is closed, does not log the text again.
        partial, self._partial = self._partial, ""
        if partial:
            self._log(partial)

    def _log(self, line: str) -> None:
        self._logging = True
        try:
            logger.log(self.level, "%s%s", self.prefix, line)
        finally:
            self._logging = False


@contextmanager
def captured_output(task_id: int, task_name: str) -> Iterator[None]:
    """Log the block's stdout at INFO and its stderr at ERROR, one record per line.

    Only writes through ``sys.stdout`` and ``sys.stderr`` are captured; a
    subprocess or ``os.write`` to file descriptors 1 and 2 bypasses them.
    """
    prefix = f"Task id={task_id} name={task_name} "
    stdout = LogStream(logging.INFO, prefix + "stdout: ", sys.stdout)
    stderr = LogStream(logging.ERROR, prefix + "stderr: ", sys.stderr)

    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            yield
        finally:
            stdout.flush()
            stderr.flush()
