"""The worker: claim a due task, run it, record the outcome, sleep only when idle."""

import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.conf import settings
from django.db import connections, reset_queries, router, transaction
from django.utils import timezone

from background_task import conf
from background_task.arguments import load_arguments
from background_task.discovery import autodiscover_tasks
from background_task.exceptions import TaskTimeout, WorkerInterrupted
from background_task.locking import Claim, claim_next_task, finishes_and_claims_at_once, new_worker_id
from background_task.models import Task
from background_task.outcomes import Outcome, record_failure, record_success, record_success_and_claim_next, release
from background_task.output import captured_output
from background_task.reconnect import DATABASE_ERRORS, DatabaseBackoff
from background_task.registry import tasks
from background_task.timeouts import time_limit
from background_task.wakeup import Wakeup

logger = logging.getLogger(__name__)


class Worker:
    """Runs due tasks one at a time, earliest ``run_at`` first.

    ``capture_output`` logs each task's stdout at INFO and stderr at ERROR
    while it runs.
    """

    def __init__(self, *, capture_output: bool = False, worker_id: str | None = None) -> None:
        self.id = worker_id or new_worker_id()
        self.capture_output = capture_output
        self._stopping = threading.Event()
        self._wakeup: Wakeup | None = None
        self._deadline: float | None = None
        # The next task, claimed in the same transaction that recorded the
        # previous outcome, so a busy worker commits once per task.
        self._next_claim: Claim | None = None
        # Whether that claim found nothing due, which spares a second look.
        self._found_none = False
        # Set while run() is on: database errors are then waited out, not raised.
        self._backoff: DatabaseBackoff | None = None
        # A second stop signal raises WorkerInterrupted only while a task runs
        # or the worker waits. During a claim or an outcome write it is held
        # here and raised once the write has committed, so a write is never
        # cut in half and a task that ran to the end is never run again.
        self._may_interrupt = False
        self._pending_interrupt: str | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return once the task in progress, if any, ends."""
        self._stopping.set()
        if self._wakeup is not None:
            self._wakeup.wake()

    def interrupt(self, reason: str) -> None:
        """Stop at once: raise WorkerInterrupted now, or after the database write in progress.

        Called from the handler of a second stop signal.
        """
        if self._may_interrupt:
            raise WorkerInterrupted(reason)
        self._pending_interrupt = reason

    def run(self, duration: float = 0, sleep: float = 5) -> None:
        """Run tasks until ``duration`` seconds have passed, or forever if it is 0 or less.

        The duration and :meth:`stop` are checked between tasks, so neither
        cuts short the task in progress; only MAX_RUN_TIME or a second stop
        signal does.
        """
        self._deadline = time.monotonic() + duration if duration > 0 else None
        alias = router.db_for_write(Task)
        self._wakeup = Wakeup(alias)
        self._backoff = DatabaseBackoff(self.id, alias)
        # Listen before the first look at the queue, so no task stored after
        # that look goes unnoticed.
        self._wakeup.listen()
        logger.info("Worker %s started", self.id)

        try:
            while self._may_continue():
                try:
                    if self.run_next() is None:
                        self._wait_for_work(sleep)
                except DATABASE_ERRORS as error:
                    self._pause(self._backoff.failed(error, "looking for a due task"))
                    continue
                self._backoff.succeeded()
        finally:
            self._release_next_claim()
            self._wakeup.close()
            self._wakeup = None
            self._backoff = None

        self._raise_pending_interrupt()
        reason = "on request" if self._stopping.is_set() else f"after its --duration of {duration:g} s"
        logger.info("Worker %s stopped %s", self.id, reason)

    def _wait_for_work(self, sleep: float) -> None:
        _close_stale_connections()
        wait = sleep if self._deadline is None else min(sleep, self._deadline - time.monotonic())
        if wait <= 0 or self._stopping.is_set():
            return

        # Reopens a listener lost with its connection; a task stored while
        # none listened waits for the next poll.
        self._wakeup.listen()
        logger.debug("Worker %s found no due task and waits up to %.3g s", self.id, wait)
        self._pause(wait)

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds``; a stop request or, on PostgreSQL, a new task ends the wait early."""
        with self._interruptible():
            if self._wakeup is not None:
                self._wakeup.wait(seconds)
            else:
                time.sleep(seconds)

    def run_until_idle(self) -> int:
        """Run tasks until none is due, and return how many were claimed."""
        count = 0
        try:
            while self.run_next() is not None:
                count += 1
        finally:
            self._release_next_claim()
        return count

    def run_next(self) -> Outcome | None:
        """Claim and settle the earliest due task; return its outcome, or None if none is due."""
        # Read before claiming, so an invalid setting raises before a row is locked.
        conf.max_attempts()
        claim, self._next_claim = self._next_claim, None
        found_none, self._found_none = self._found_none, False
        if claim is None and not found_none:
            claim = claim_next_task(self.id)
        if claim is None:
            return None
        logger.debug("Task id=%s name=%s claimed by worker %s", claim.task.pk, claim.task.task_name, self.id)

        try:
            if claim.expired_lock_by is not None:
                return self._record_lost_run(claim)
            return self._run(claim)
        finally:
            if settings.DEBUG:
                # Django keeps the last 9,000 queries per connection under DEBUG;
                # dropping them after each task keeps a long-running worker small.
                reset_queries()

    def _run(self, claim: Claim) -> Outcome:
        task = claim.task
        if self._pending_interrupt is not None:
            # A second stop signal came while the claim was written: give
            # the task back unrun, so it costs no attempt.
            self._release(claim)
            self._raise_pending_interrupt()

        func = tasks.get(task.task_name)
        if func is None:
            error = (
                f"Task name {task.task_name!r} is not registered in worker {self.id}. "
                "Its module may not be imported by this worker, or not deployed here "
                "yet. The run counts as a failed attempt."
            )
            return self._fail(claim, error)

        attempt = task.attempts + 1
        logger.info(
            "Task id=%s name=%s started, attempt %d of %d",
            task.pk, task.task_name, attempt, conf.max_attempts(),
        )
        started = time.monotonic()
        # Set as soon as the function returns. A MAX_RUN_TIME alarm or a
        # second stop signal that lands after that, while the block below
        # closes, does not undo the run's success.
        returned = False

        try:
            with ExitStack() as stack:
                stack.enter_context(self._interruptible())
                args, kwargs = load_arguments(task.task_params)
                stack.enter_context(time_limit(self._time_left(claim), _run_time_exceeded()))
                if self.capture_output:
                    stack.enter_context(captured_output(task.pk, task.task_name))
                func(*args, **kwargs)
                returned = True
        except TaskTimeout as error:
            if not returned:
                return self._fail(claim, f"Task {error}.\n{traceback.format_exc()}", error)
        except Exception as error:
            return self._fail(claim, traceback.format_exc(), error)
        except WorkerInterrupted as error:
            # The worker is being stopped: record the run, then let the stop go on.
            if returned:
                self._succeed(claim, started)
            else:
                self._fail(claim, f"Task interrupted: {error}.\n{traceback.format_exc()}", error)
            raise
        except KeyboardInterrupt as error:
            outcome = self._fail(claim, f"Task interrupted: KeyboardInterrupt.\n{traceback.format_exc()}", error)
            if _ctrl_c_raises_keyboard_interrupt():
                raise
            return outcome
        except BaseException as error:
            # SystemExit and other BaseExceptions end this run, not the worker.
            return self._fail(claim, traceback.format_exc(), error)

        return self._succeed(claim, started)

    def _succeed(self, claim: Claim, started: float) -> Outcome:
        outcome = self._settle(claim)
        if outcome is Outcome.SUCCEEDED:
            logger.info(
                "Task id=%s name=%s succeeded in %.3f s",
                claim.task.pk, claim.task.task_name, time.monotonic() - started,
            )
        return outcome

    def _may_continue(self) -> bool:
        return not self._stopping.is_set() and (self._deadline is None or time.monotonic() < self._deadline)

    def _settle(self, claim: Claim, error: str | None = None) -> Outcome:
        """Record how the run ended, ``error`` being None for a success, and claim the next due task.

        Under :meth:`run`, a database error is waited out and the write made
        again: it names this worker's lock, so a late write cannot undo a
        claim that another worker made after the lock expired.
        """
        while True:
            try:
                outcome = self._record_and_claim_next(claim, error)
            except DATABASE_ERRORS as database_error:
                # The transaction rolled back, and the next claim with it.
                self._next_claim, self._found_none = None, False
                if self._backoff is None:
                    raise
                delay = self._backoff.failed(database_error, f"recording the outcome of task id={claim.task.pk}")
                with self._interruptible():
                    time.sleep(delay)
                continue

            if self._backoff is not None:
                self._backoff.succeeded()
            return outcome

    def _record_and_claim_next(self, claim: Claim, error: str | None) -> Outcome:
        """Write the outcome and claim the next due task in one transaction, so a busy worker commits once per task.

        On PostgreSQL a success and the next claim are one statement. Elsewhere
        the outcome's UPDATE or DELETE comes first, so on SQLite the
        transaction holds the write lock before it reads the next candidate.
        """
        alias = router.db_for_write(Task)
        claim_next = self._may_continue()

        if error is None and claim_next and finishes_and_claims_at_once(alias):
            outcome, self._next_claim = record_success_and_claim_next(claim)
        else:
            with transaction.atomic(using=alias):
                outcome = record_success(claim) if error is None else record_failure(claim, error)
                self._next_claim = claim_next_task(self.id) if claim_next else None

        self._found_none = claim_next and self._next_claim is None
        return outcome

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Let a second stop signal raise inside the block; one held since the last write raises on entry."""
        self._raise_pending_interrupt()
        self._may_interrupt = True
        try:
            yield
        finally:
            self._may_interrupt = False

    def _raise_pending_interrupt(self) -> None:
        reason, self._pending_interrupt = self._pending_interrupt, None
        if reason is not None:
            raise WorkerInterrupted(reason)

    def _release_next_claim(self) -> None:
        claim, self._next_claim = self._next_claim, None
        if claim is not None:
            self._release(claim)

    def _release(self, claim: Claim) -> None:
        try:
            released = release(claim)
        except DATABASE_ERRORS as error:
            logger.warning(
                "Task id=%s name=%s could not be released as worker %s stops, so it stays locked "
                "until MAX_RUN_TIME has passed: %s", claim.task.pk, claim.task.task_name, self.id, error,
            )
            return
        if released:
            logger.info("Task id=%s name=%s released unrun as worker %s stops", claim.task.pk, claim.task.task_name, self.id)

    def _time_left(self, claim: Claim) -> float:
        # The run may last until the lock expires, measured from when it was taken.
        expires_at = claim.locked_at + conf.max_run_time()
        return (expires_at - timezone.now()).total_seconds()

    def _record_lost_run(self, claim: Claim) -> Outcome:
        error = (
            f"Run lost: worker {claim.expired_lock_by} locked the task at "
            f"{claim.expired_lock_at.isoformat()} and did not finish within MAX_RUN_TIME "
            f"of {conf.max_run_time().total_seconds():g} seconds, so it is taken to have died."
        )
        return self._fail(claim, error)

    def _fail(self, claim: Claim, error: str, exception: BaseException | None = None) -> Outcome:
        task = claim.task
        outcome = self._settle(claim, error)
        reason = error.strip().splitlines()[-1] if exception is not None else error

        if outcome is Outcome.RETRY:
            logger.warning(
                "Task id=%s name=%s failed on attempt %d of %d, retrying at %s: %s",
                task.pk, task.task_name, task.attempts, conf.max_attempts(),
                task.run_at.isoformat(), reason,
            )
        elif outcome is Outcome.FAILED:
            logger.error(
                "Task id=%s name=%s failed on attempt %d of %d and will not be retried: %s",
                task.pk, task.task_name, task.attempts, conf.max_attempts(), reason,
                exc_info=exception,
            )
        return outcome


def _run_time_exceeded() -> str:
    return f"exceeded MAX_RUN_TIME of {conf.max_run_time().total_seconds():g} seconds"


def _ctrl_c_raises_keyboard_interrupt() -> bool:
    # Under process_tasks a handler owns SIGINT, so a KeyboardInterrupt came
    # from the task's own code and ends only its run. With Python's default
    # handler, as in run_due_tasks(), it may be Ctrl-C, which stops the caller.
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _close_stale_connections() -> None:
    # Idle time is when the worker can drop connections past CONN_MAX_AGE or
    # broken ones. A connection inside a transaction is left alone: closing it
    # would end the caller's transaction.
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def run_due_tasks() -> int:
    """Run due tasks one at a time until none is due, and return how many were claimed.

    This is the worker loop without the waiting, for cron jobs, tests and
    scripts. Like ``process_tasks`` it first imports every installed app's
    ``tasks`` module. A failed task is rescheduled at least 6 seconds ahead,
    so it runs again within the same call only if the call is still busy
    with other tasks by then.
    """
    autodiscover_tasks()
    return Worker().run_until_idle()
