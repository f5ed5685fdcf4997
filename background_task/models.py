"""The Task model: one row per stored call of a task function.

A row is in exactly one of these states:

* queued: ``failed_at`` is empty and ``locked_by`` is empty; it is due once
  ``run_at`` has passed.
* locked: a worker holds it; ``locked_by`` names the worker and ``locked_at``
  is when it claimed the row.
* lock expired: locked, but ``locked_at`` lies more than MAX_RUN_TIME in the
  past, so the worker is taken to have died.
* failed: ``failed_at`` is set; the row stays with its ``last_error`` and
  never runs again.

A task that succeeds is deleted, so it has no state of its own.
"""

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from background_task import conf
from background_task.registry import TASK_NAME_MAX_LENGTH


class TaskQuerySet(models.QuerySet):
    def due(self, now: datetime) -> "TaskQuerySet":
        """Rows a worker may claim at ``now``, earliest ``run_at`` first, ties by id.

        A lock taken at T holds through T + MAX_RUN_TIME, so a row locked at
        12:00:00 with MAX_RUN_TIME = 3600 is claimable again from 13:00:00.000001.
        """
        expired_before = now - conf.max_run_time()
        unlocked_or_expired = Q(locked_at__isnull=True) | Q(locked_at__lt=expired_before)
        return (
            self.filter(run_at__lte=now, failed_at__isnull=True)
            .filter(unlocked_or_expired)
            .order_by("run_at", "id")
        )

    def failed(self) -> "TaskQuerySet":
        """Rows that reached MAX_ATTEMPTS and will not run again."""
        return self.filter(failed_at__isnull=False)


class Task(models.Model):
    #: The registered name of the task function, ``<module>.<function name>`` by default.
    task_name = models.CharField(max_length=TASK_NAME_MAX_LENGTH, db_index=True)
    #: The call's arguments as the JSON text ``[args, kwargs]``.
    task_params = models.TextField()
    #: When the task becomes due.
    run_at = models.DateTimeField()
    #: How many runs have failed so far, including runs lost with a dead worker.
    attempts = models.IntegerField(default=0)
    #: When the task was marked failed for good, after MAX_ATTEMPTS failed runs.
    failed_at = models.DateTimeField(null=True, blank=True)
    #: The traceback or reason of the latest failed run.
    last_error = models.TextField(blank=True)
    #: The id of the worker that claimed the task, cleared when its outcome is recorded.
    locked_by = models.CharField(max_length=64, null=True, blank=True)
    #: When that worker claimed the task.
    locked_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        db_table = "background_task"
        indexes = [
            # Serves the claim query. Failed rows are left out of the index, and
            # future rows sort after every due row, so a claim reads the same few
            # index entries however many of either the table holds.
            models.Index(
                fields=["run_at", "id"],
                condition=Q(failed_at__isnull=True),
                name="background_task_claim_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} (id={self.pk})"

    @property
    def is_locked(self) -> bool:
        """Whether a worker holds the task now, with a lock that has not expired."""
        return self.locked_at is not None and self.locked_at + conf.max_run_time() >= timezone.now()

    @property
    def has_failed(self) -> bool:
        """Whether the task was marked failed for good."""
        return self.failed_at is not None
