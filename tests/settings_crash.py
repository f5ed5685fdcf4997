"""Settings for worker processes that must find an expired lock within seconds.

A lock older than MAX_RUN_TIME is taken to belong to a dead worker, so with
2 seconds a second worker records a killed worker's run as lost 2 seconds
after the claim. MAX_RUN_TIME also bounds each run, so only tasks much
shorter than 2 seconds may run on these workers.
"""

from tests.settings import *  # noqa: F403

MAX_RUN_TIME = 2
