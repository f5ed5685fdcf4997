"""The benchmark tasks: one that does nothing but mark its start, one that fails."""

from background_task import background
from benchmarks.marks import write_mark
from benchmarks.project.benchapp import counting


@background(name="bench.noop")
def noop(token: int) -> None:
    write_mark(token, *counting.snapshot())


@background(name="bench.fail")
def fail(token: int) -> None:
    write_mark(token, *counting.snapshot())
    raise RuntimeError("bench.fail fails on purpose")
