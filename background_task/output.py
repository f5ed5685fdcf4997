"""Sending a running task's stdout and stderr to the logging system."""

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

logger = logging.getLogger("background_task.output")


class LogStream(io.TextIOBase):
    """A text stream that logs each complete line it receives."""

    def __init__(self, level: int, prefix: str) -> None:
        self.level = level
        self.prefix = prefix
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            logger.log(self.level, "%s%s", self.prefix, line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            logger.log(self.level, "%s%s", self.prefix, self._partial)
            self._partial = ""


@contextmanager
def captured_output(task_id: int, task_name: str) -> Iterator[None]:
    """Log the block's stdout at INFO and its stderr at ERROR, one record per line."""
    prefix = f"Task id={task_id} name={task_name} "
    stdout = LogStream(logging.INFO, prefix + "stdout: ")
    stderr = LogStream(logging.ERROR, prefix + "stderr: ")

    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            yield
        finally:
            stdout.flush()
            stderr.flush()
