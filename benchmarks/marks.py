"""The mark each benchmark task writes when it starts, and reading them back.

A mark is one line ``<token> <unix time> <pid> <statements> <commits>``
appended with a single ``os.write`` to a file opened with O_APPEND, so lines
from several processes never interleave. The worker's tasks and the raw
limit loop write marks the same way, so both pay the same small cost.
"""

import os
import time
from collections import Counter
from dataclasses import dataclass

_descriptor: int | None = None


def write_mark(token: int, statements: int = 0, commits: int = 0) -> None:
    """Append a mark for ``token`` to the file named by BENCH_MARKS, if it is set."""
    global _descriptor
    if _descriptor is None:
        path = os.environ.get("BENCH_MARKS")
        if not path:
            return
        _descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_descriptor, f"{token} {time.time():.6f} {os.getpid()} {statements} {commits}\n".encode())


@dataclass
class Mark:
    token: int
    time: float
    pid: int
    statements: int
    commits: int


def read_marks(path: str) -> list[Mark]:
    """Return the marks in the file at ``path``, in the order they were written."""
    try:
        with open(path, encoding="ascii") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    marks = []
    for line in lines:
        token, stamp, pid, statements, commits = line.split()
        marks.append(Mark(int(token), float(stamp), int(pid), int(statements), int(commits)))
    return marks


def count_lines(path: str) -> int:
    """Return how many marks the file holds, without parsing them."""
    try:
        with open(path, "rb") as file:
            return file.read().count(b"\n")
    except FileNotFoundError:
        return 0


def rate(marks: list[Mark]) -> float:
    """Return tasks per second from the first mark to the last; 0 if fewer than two marks."""
    if len(marks) < 2:
        return 0.0
    times = sorted(mark.time for mark in marks)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else 0.0


def duplicates(marks: list[Mark]) -> int:
    """Return how many runs repeated a token that had already run."""
    return sum(count - 1 for count in Counter(mark.token for mark in marks).values())
