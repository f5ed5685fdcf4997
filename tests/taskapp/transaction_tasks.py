"""Tasks for tests/test_reliability_transaction*.py.

Each task appends one line to a file, so a test can count runs across
processes. ``tests.transaction.note_group`` uses ``django.contrib.auth``,
which only ``tests.settings_multidb`` installs, so it imports the model when
it runs rather than when this module is imported.
"""

import os

from background_task import background


def _append(path: str, line: str) -> None:
    # One os.write of a short line on an O_APPEND file is atomic, so lines
    # from several processes never interleave.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


@background(name="tests.transaction.mark")
def mark(path: str, token: str) -> None:
    """Append ``<token> <pid>`` to the file at ``path``."""
    _append(path, f"{token} {os.getpid()}")


@background(name="tests.transaction.note_group")
def note_group(path: str, alias: str, name: str) -> None:
    """Append ``<name> found`` or ``<name> missing``: whether auth's Group ``name`` exists on ``alias``.

    The group represents the data that a task works on, written by the code
    that stored the task.
    """
    from django.contrib.auth.models import Group

    found = Group.objects.using(alias).filter(name=name).exists()
    _append(path, f"{name} {'found' if found else 'missing'}")
