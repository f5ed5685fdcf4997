"""Tasks for tests/test_reliability_machine*.py.

The state machine there runs real workers in threads and decides, step by
step, how each run of a task ends. The task therefore hands its run to a
handler that the worker thread installs for itself.
"""

import threading
from collections.abc import Callable

from background_task import background

_thread_state = threading.local()


def set_run_handler(handler: Callable[[str], None]) -> None:
    """Make :func:`controlled` call ``handler(token)`` when it runs in the current thread."""
    _thread_state.handler = handler


def clear_run_handler() -> None:
    """Remove the current thread's handler."""
    _thread_state.handler = None


@background(name="tests.machine.controlled")
def controlled(token: str) -> None:
    """Pass the run to the handler of the thread that runs the task.

    The handler returns to end the run as a success, raises to fail it, or
    makes the worker thread crash.
    """
    handler = getattr(_thread_state, "handler", None)
    if handler is None:
        raise RuntimeError(
            f"Task tests.machine.controlled ({token}) ran in a thread without a run handler; "
            "only the worker threads of tests/test_reliability_machine.py can run it."
        )
    handler(token)
