"""System checks for the queue's settings.

``manage.py check`` and every management command that runs checks, including
``process_tasks``, report these before any task runs.
"""

from django.conf import settings
from django.core import checks

from background_task import conf


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Report MAX_ATTEMPTS and MAX_RUN_TIME values that the worker cannot use."""
    errors = []

    attempts = getattr(settings, "MAX_ATTEMPTS", conf.DEFAULT_MAX_ATTEMPTS)
    problem = conf.max_attempts_problem(attempts)
    if problem:
        errors.append(
            checks.Error(
                problem,
                hint=conf.MAX_ATTEMPTS_HINT,
                id="background_task.E001",
            )
        )

    run_time = getattr(settings, "MAX_RUN_TIME", conf.DEFAULT_MAX_RUN_TIME)
    problem = conf.max_run_time_problem(run_time)
    if problem:
        errors.append(
            checks.Error(
                problem,
                hint=conf.MAX_RUN_TIME_HINT,
                id="background_task.E002",
            )
        )

    return errors
