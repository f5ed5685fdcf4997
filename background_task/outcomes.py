"""Recording how a run ended, only while the worker still holds the task's lock.

Each write is one UPDATE or DELETE whose WHERE clause names the lock the
worker took. If another worker has since claimed the row after the lock
expired, the write matches nothing and the row is left to that worker.
"""

import enum
import logging
from datetime import datetime
from datetime import timezone as dt_timezone

from django.db import connections, router
from django.utils import timezone

from background_task import conf
from background_task.backoff import backoff_delay
from background_task.locking import Claim, finish_and_claim_next
from background_task.models import Task

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    LOCK_LOST = "lock lost"


#: The success write, in SQL because every successful task sends it. The
#: ORM's delete would first collect the rows to look for related objects,
#: which the table does not have.
DELETE_IF_HELD = f"DELETE FROM {Task._meta.db_table} WHERE id = %s AND locked_by = %s AND locked_at = %s"


def _held(claim: Claim):
    return Task.objects.filter(pk=claim.task.pk, locked_by=claim.worker_id, locked_at=claim.locked_at)


def record_success(claim: Claim) -> Outcome:
    """Delete the task's row, since a task that returned has nothing left to do."""
    connection = connections[router.db_for_write(Task)]
    locked_at = connection.ops.adapt_datetimefield_value(claim.locked_at)
    with connection.cursor() as cursor:
        cursor.execute(DELETE_IF_HELD, [claim.task.pk, claim.worker_id, locked_at])
        deleted = cursor.rowcount
    if not deleted:
        return _lock_lost(claim)
    return Outcome.SUCCEEDED


def record_success_and_claim_next(claim: Claim) -> tuple[Outcome, Claim | None]:
    """Delete the task's row and claim the next due task in one statement; PostgreSQL only.

    Returns the outcome and the new claim, or None if no task is due.
    """
    deleted, next_claim = finish_and_claim_next(claim)
    if not deleted:
        return _lock_lost(claim), next_claim
    return Outcome.SUCCEEDED, next_claim


def record_failure(claim: Claim, error: str) -> Outcome:
    """Count one failed attempt, then reschedule the task or mark it failed.

    With MAX_ATTEMPTS = 25, a task failing for the third time at 12:00:00 is
    retried at 12:01:26 (3 ** 4 + 5 = 86 s later). Its 25th failure sets
    ``failed_at`` and the row is kept with ``last_error``.
    """
    task = claim.task
    # Counted from the claim, not the task object, so writing the same
    # outcome again after a lost connection counts the run once.
    attempts = claim.attempts + 1
    now = timezone.now()
    changes: dict[str, object] = {
        "attempts": attempts,
        "last_error": error,
        "locked_by": None,
        "locked_at": None,
    }

    if attempts >= conf.max_attempts():
        changes["failed_at"] = now
        outcome = Outcome.FAILED
    else:
        changes["run_at"] = retry_at(now, attempts)
        outcome = Outcome.RETRY

    if not _held(claim).update(**changes):
        return _lock_lost(claim)

    for field, value in changes.items():
        setattr(task, field, value)
    return outcome


def release(claim: Claim) -> bool:
    """Unlock a claimed task that will not run, leaving it as it was before the claim.

    A claim that took an expired lock puts that lock back, so the next
    worker still records the lost run of the worker that died. Returns
    whether the worker still held the lock.
    """
    return bool(_held(claim).update(locked_by=claim.expired_lock_by, locked_at=claim.expired_lock_at))


def retry_at(now: datetime, attempts: int) -> datetime:
    """Return when a task that failed for the ``attempts``-th time at ``now`` runs again.

    A delay that would pass the year 9999, as with a MAX_ATTEMPTS in the
    hundreds, stops at 9999-12-31 00:00 UTC instead of crashing the worker.
    """
    try:
        return now + backoff_delay(attempts)
    except OverflowError:
        latest = datetime(9999, 12, 31, tzinfo=dt_timezone.utc)
        if timezone.is_naive(now):
            return timezone.make_naive(latest, dt_timezone.utc)
        return latest


def _lock_lost(claim: Claim) -> Outcome:
    logger.warning(
        "Task id=%s name=%s: lock taken at %s by worker %s was lost before the outcome "
        "was written, so the row is left to the worker that holds it now",
        claim.task.pk,
        claim.task.task_name,
        claim.locked_at.isoformat(),
        claim.worker_id,
    )
    return Outcome.LOCK_LOST

