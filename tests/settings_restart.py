"""Settings for the workers of tests/test_reliability_restarts.py.

A claim whose commit reached the server just before a restart, but whose
reply did not reach the worker, leaves the row locked by a worker that does
not know it has it. Such a lock expires after MAX_RUN_TIME, so a short one
lets the restart tests end within a minute. Their longest task sleeps 3 s.
"""

from tests.settings import *  # noqa: F403

MAX_RUN_TIME = 20
