"""Settings for worker processes started by the implementation tests.

The spec's settings plus an app whose tasks mark each run in a file, so a
test can count runs across processes.
"""

from spec.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.taskapp"]  # noqa: F405
