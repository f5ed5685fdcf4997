"""Claiming a due task for one worker, and the worker ids that locks carry."""

import os
import socket
from contextlib import nullcontext
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router, transaction
from django.utils import timezone

from background_task.models import Task


def new_worker_id() -> str:
    """Return an id unique across hosts and processes: ``<host>:<pid>:<random>``."""
    host = socket.gethostname()[:40]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Claim:
    """A task a worker has locked, with what the row held before the claim."""

    task: Task
    locked_at: datetime
    #: The lock the row carried before this claim; set only when that lock had expired.
    expired_lock_by: str | None
    expired_lock_at: datetime | None


def claim_next_task(worker_id: str) -> Claim | None:
    """Lock the earliest due task for ``worker_id`` and return it, or None if none is due.

    PostgreSQL picks the row with SELECT ... FOR UPDATE SKIP LOCKED, so
    workers do not wait on each other's row locks. Elsewhere the lock is taken with
    one conditional UPDATE that only succeeds if the row still carries the
    lock it was read with, so two workers cannot both take it.
    """
    alias = router.db_for_write(Task)
    skip_locked = connections[alias].features.has_select_for_update_skip_locked

    # Without SKIP LOCKED the read and the conditional UPDATE run in autocommit:
    # a SQLite transaction that reads and then writes can fail with "database
    # is locked" when another writer got in between.
    while True:
        # savepoint=False: inside the worker's outcome transaction a savepoint
        # would cost two more round trips and protect nothing.
        with transaction.atomic(using=alias, savepoint=False) if skip_locked else nullcontext():
            now = timezone.now()
            due = Task.objects.using(alias).due(now)
            if skip_locked:
                due = due.select_for_update(skip_locked=True)
            candidate = due.first()
            if candidate is None:
                return None

            claimed = (
                Task.objects.using(alias)
                .filter(pk=candidate.pk, locked_by=candidate.locked_by, locked_at=candidate.locked_at)
                .update(locked_by=worker_id, locked_at=now)
            )

        if claimed:
            return _claim(candidate, worker_id, now)
        # Another worker changed the row between the read and the update: pick again.


def _claim(candidate: Task, worker_id: str, now: datetime) -> Claim:
    expired_lock_by, expired_lock_at = candidate.locked_by, candidate.locked_at
    candidate.locked_by, candidate.locked_at = worker_id, now
    return Claim(candidate, now, expired_lock_by, expired_lock_at)
