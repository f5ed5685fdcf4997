"""Retries.

A task that raises uses up one attempt...
"""

import pytest
from freezegun import freeze_time

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 5


@pytest.mark.rule(1)
def test_failure_counts_attempt():
    """A task that raises an exception has its attempts raised by one."""
    with freeze_time("2026-01-01 12:00:00"):
        task = spec_tasks.fail("boom")
        adapter.run_due()
    assert adapter.stored(task).attempts == 1
