"""Starting, watching and stopping real ``process_tasks`` worker processes in tests."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from background_task.models import Task


def django_admin() -> list[str]:
    """Return the command that runs django-admin with this interpreter."""
    return [sys.executable, "-m", "django"]


def start_worker(env: dict[str, str], *options: str) -> subprocess.Popen:
    """Start ``process_tasks`` with ``options``; its stdout and stderr are pipes of text."""
    return subprocess.Popen(
        [*django_admin(), "process_tasks", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for ``worker`` to exit 0 and return its stderr."""
    _, stderr = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, stderr
    return stderr


def stop(workers: list[subprocess.Popen]) -> list[str]:
    """Send SIGTERM to each worker and return their stderr once they exit."""
    for worker in workers:
        send_stop_signal(worker)
    return [finish(worker) for worker in workers]


def send_stop_signal(worker: subprocess.Popen, number: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Send signal ``number`` once ``worker`` has installed its handler for it.

    Until then Python's default action applies, so SIGTERM would end a worker
    that is still importing Django with status -15 instead of stopping it. A
    worker that has exited already is left to the caller's checks.
    """
    deadline = time.monotonic() + timeout
    while worker.poll() is None and not handles_signal(worker.pid, number):
        assert time.monotonic() < deadline, f"the worker did not handle signal {number} within {timeout} s"
        time.sleep(0.02)
    worker.send_signal(number)


def handles_signal(pid: int, number: int) -> bool:
    """Return whether process ``pid`` has installed a handler for signal ``number``.

    Reads the mask of caught signals in Linux's /proc/<pid>/status.
    """
    status = Path(f"/proc/{pid}/status")
    try:
        lines = status.read_text().splitlines()
    except FileNotFoundError:
        # The process has ended and been reaped, or this is not Linux.
        # NOTE: without /proc the wait ends at once, so on other systems a
        # test may still signal a worker that has not started yet.
        return True
    caught = next(line.split()[1] for line in lines if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (number - 1) & 1)


def wait_for_empty_queue(timeout: float = 120) -> None:
    """Wait until the task table is empty."""
    deadline = time.monotonic() + timeout
    while Task.objects.exists():
        assert time.monotonic() < deadline, f"{Task.objects.count()} tasks left after {timeout} s"
        time.sleep(0.2)


def wait_for_claim(timeout: float = 60) -> None:
    """Wait until some worker holds a lock on a task."""
    deadline = time.monotonic() + timeout
    while not Task.objects.filter(locked_by__isnull=False).exists():
        assert time.monotonic() < deadline, "the worker never claimed the task"
        time.sleep(0.05)


def wait_for_log_line(worker: subprocess.Popen, text: str, timeout: float = 60) -> None:
    """Read the worker's stderr until a line contains ``text``."""
    deadline = time.monotonic() + timeout
    for line in worker.stderr:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no log line with {text!r}"
    raise AssertionError(f"the worker exited before logging {text!r}")
