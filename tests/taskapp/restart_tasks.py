"""Tasks for tests/test_reliability_restart*.py.

They count each run in a file outside the database, so a run is counted
even when the database is down while the task ends.
"""

import os
import time

from background_task import background
from tests.taskapp.marks import append_line


@background(name="tests.restart.record_run")
def record_run(path: str, token: str) -> None:
    """Append ``<token> <pid>`` to the file at ``path``."""
    append_line(path, f"{token} {os.getpid()}")


@background(name="tests.restart.sleep_then_record")
def sleep_then_record(path: str, token: str, seconds: float) -> None:
    """Sleep ``seconds``, then append ``<token> <pid>`` to the file at ``path``."""
    time.sleep(seconds)
    append_line(path, f"{token} {os.getpid()}")
