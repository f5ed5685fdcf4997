"""Steps that several spec chapters share, built only from the adapter."""

from spec import adapter


def set_attempts(task, attempts: int) -> None:
    """Store ``attempts`` failed attempts on ``task``, so its next run is attempt ``attempts + 1``."""
    adapter.Task.objects.filter(pk=task.pk).update(attempts=attempts)


def run_until_settled(frozen, task, limit: int = 200) -> None:
    """Run the queue, moving the clock to each retry, until ``task`` is gone or failed."""
    for _ in range(limit):
        adapter.run_due()
        row = adapter.stored(task)
        if row is None or row.failed_at is not None:
            return
        frozen.move_to(row.run_at)
    raise AssertionError(f"task {task.pk} neither succeeded nor failed within {limit} runs")
