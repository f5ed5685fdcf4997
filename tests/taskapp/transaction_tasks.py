"""Tasks for tests/test_reliability_transaction*.py.

Each task appends one line to a file, so a test can count runs across
processes. ``tests.transaction.note_group`` uses ``django.contrib.auth``,
which only ``tests.settings_multidb`` installs, so it imports the model when
it runs rather than when this module is imported.
"""

import os

from background_task import background
from tests.taskapp.marks import append_line


@background(name="tests.transaction.mark")
def mark(path: str, token: str) -> None:
    """Append ``<token> <pid>`` to the file at ``path``."""
    append_line(path, f"{token} {os.getpid()}")


@background(name="tests.transaction.note_group")
def note_group(path: str, alias: str, name: str) -> None:
    """Append ``<name> found`` or ``<name> missing``: whether auth's Group ``name`` exists on ``alias``.

    The group represents the data that a task works on, written by the code
    that stored the task.
    """
    from django.contrib.auth.models import Group

    found = Group.objects.using(alias).filter(name=name).exists()
    append_line(path, f"{name} {'found' if found else 'missing'}")
