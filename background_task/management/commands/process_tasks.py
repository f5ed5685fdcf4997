import argparse
import logging
import math
from contextlib import ExitStack

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, router

from background_task import conf
from background_task.discovery import autodiscover_tasks
from background_task.exceptions import WorkerInterrupted
from background_task.log_options import LEVELS, logging_options
from background_task.models import Task
from background_task.reconnect import DATABASE_ERRORS
from background_task.shutdown import stop_on_signals
from background_task.worker import Worker

logger = logging.getLogger(__name__)


def seconds(text: str) -> float:
    """Parse a number of seconds for argparse, naming the bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


class Command(BaseCommand):
    help = "Run due background tasks one at a time, waiting for new ones when none is due."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--duration", type=seconds, default=0, metavar="SECONDS",
            help="Stop after this many seconds, once the task in progress ends; 0 or less runs forever (default: 0).",
        )
        parser.add_argument(
            "--sleep", type=non_negative_seconds, default=5, metavar="SECONDS",
            help="Seconds to wait before looking again when no task is due (default: 5).",
        )
        parser.add_argument(
            "--log-file", metavar="PATH",
            help=(
                "Write the background_task log records to this file. They then no longer "
                "propagate to the root logger; handlers that LOGGING gives background_task still get them."
            ),
        )
        parser.add_argument(
            "--log-std", action="store_true",
            help="Log each task's stdout at INFO and its stderr at ERROR while it runs.",
        )
        parser.add_argument(
            "--log-level", choices=LEVELS, type=str.upper,
            help=(
                "Lowest level of background_task log records to write (default: the level "
                "LOGGING sets for background_task; INFO when --log-file or --log-std adds a handler and LOGGING sets no level)."
            ),
        )

    def handle(self, *args, duration: float, sleep: float, log_file: str | None,
               log_std: bool, log_level: str | None, **options) -> None:
        # call_command skips the system checks, so the settings are checked here too.
        try:
            conf.max_attempts()
            conf.max_run_time()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error

        with ExitStack() as stack:
            try:
                stack.enter_context(logging_options(log_level, log_file, capture_output=log_std))
            except OSError as error:
                raise CommandError(
                    f"--log-file {log_file!r} cannot be opened: {error}. "
                    "Create its folder or pass a writable file path."
                ) from error

            # Handle stop signals before the start-up steps below, so a signal
            # sent while the worker starts stops it cleanly before any claim.
            worker = Worker(capture_output=log_std)
            stack.enter_context(stop_on_signals(worker))

            # After the logging options, so that a warning goes where the options send it.
            check_task_table(router.db_for_write(Task))

            # After the logging options, so --log-level DEBUG shows which modules were imported.
            try:
                autodiscover_tasks()
            except (ImportError, ImproperlyConfigured) as error:
                # A task module that fails to import, or two tasks with one name.
                raise CommandError(str(error)) from error

            try:
                worker.run(duration=duration, sleep=sleep)
            except WorkerInterrupted as error:
                raise CommandError(f"Stopped at once: {error}.") from error


def check_task_table(alias: str) -> None:
    """Raise CommandError if the task table cannot be read on a database that is reachable.

    A database that cannot be reached, as during a restart, is no reason to
    stop. The worker logs a warning and waits for it, as for any lost
    connection.
    """
    try:
        Task.objects.using(alias).exists()
        return
    except DATABASE_ERRORS as error:
        first_error = error

    if not database_reachable(alias):
        logger.warning(
            "Database %r cannot be reached, so the worker starts and waits for it: %s",
            alias, str(first_error).strip(),
        )
        return

    # The database is reachable, so a second failure comes from the table.
    try:
        Task.objects.using(alias).exists()
    except DATABASE_ERRORS as error:
        database_option = "" if alias == DEFAULT_DB_ALIAS else f" --database={alias}"
        raise CommandError(
            f"Cannot read the background_task table of database {alias!r}: {error}. If it "
            f"does not exist yet, run: python manage.py migrate background_task{database_option}"
        ) from error


def database_reachable(alias: str) -> bool:
    """Return whether a new connection to ``alias`` opens."""
    connection = connections[alias]
    try:
        connection.close()
        connection.ensure_connection()
    except DATABASE_ERRORS:
        return False
    return True
