"""Starting real ``process_tasks`` workers, waiting on their marks, and stopping them."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.marks import count_lines


class Workers:
    """``count`` worker processes of the benchmark project, logging to files in ``folder``."""

    def __init__(self, target, folder: Path, count: int, sleep: float, **env: str) -> None:
        self.logs = []
        self.processes = []
        self.stopped = False
        for number in range(count):
            log = open(folder / f"worker-{len(list(folder.glob('worker-*.log')))}.log", "w+")
            self.logs.append(log)
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "django", "process_tasks", "--sleep", str(sleep)],
                env=target.env(**env), stdout=log, stderr=subprocess.STDOUT,
            ))

    def rss_kib(self, index: int = 0) -> int:
        """Return the resident set size of worker ``index`` in KiB, from /proc."""
        status = Path(f"/proc/{self.processes[index].pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1])

    def check_alive(self) -> None:
        for process, log in zip(self.processes, self.logs):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"a worker exited with status {process.returncode}:\n{log.read()[-3000:]}")

    def stop(self, timeout: float = 60) -> None:
        """Send SIGTERM, wait for a clean exit, and raise if a worker did not exit with 0."""
        self.stopped = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        problems = []
        for process, log in zip(self.processes, self.logs):
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode != 0:
                log.seek(0)
                problems.append(f"worker {process.pid} exited with {process.returncode}:\n{log.read()[-3000:]}")
            log.close()
        if problems:
            raise RuntimeError("\n".join(problems))

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.stopped:
            return
        try:
            self.stop()
        except RuntimeError:
            if exc_type is None:
                raise


def wait_for_marks(path: Path, expected: int, workers: Workers | None = None, timeout: float = 900) -> None:
    """Wait until the marks file has ``expected`` lines."""
    deadline = time.monotonic() + timeout
    while count_lines(str(path)) < expected:
        if workers is not None:
            workers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count_lines(str(path))} of {expected} tasks ran within {timeout:g} s")
        time.sleep(0.05)


def run_probe(target, mode: str, count: int = 0, *extra: str, **env: str) -> dict:
    """Run ``python -m benchmarks.probe`` in its own process and return its JSON."""
    command = [sys.executable, "-m", "benchmarks.probe", mode, "--url", target.url, "--count", str(count), *extra]
    result = subprocess.run(command, env=target.env(**env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"probe {mode} failed on {target.label}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)
