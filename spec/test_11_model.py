"""The queue as a whole.

The chapters before this one state each rule on its own. This chapter
checks that they hold together over long, random histories: a Hypothesis
state machine drives the real queue and a small model of the rules side by
side, and compares them after every step.

The model is a few dictionaries and the rules written out plainly:

* A task is due when its run_at has come, it is not failed, and it is
  unlocked or its lock has expired.
* Due tasks run earliest run_at first, ties by id.
* A failed run, or a run lost with a dead worker, adds one attempt. Then the
  task is rescheduled attempts ** 4 + 5 seconds later, or marked failed at
  MAX_ATTEMPTS.
* A successful run removes the task.

The steps are:

* enqueue a task that succeeds, fails, or fails a few times and then succeeds;
* move the clock;
* run the due tasks;
* let a worker die while its lock is on a due task.

After each step the stored rows must equal the
model's, and these invariants must hold: no task is held by two workers, no
task's attempts exceed MAX_ATTEMPTS, no task ran before its run_at, and a task
is failed exactly when its attempts reached MAX_ATTEMPTS.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from spec import adapter
from spec import tasks as spec_tasks
from spec.conftest import fresh_queue

CHAPTER = 11

START = datetime(2026, 1, 1, 12, 0, tzinfo=dt_timezone.utc)
MAX_RUN_TIME_SECONDS = 60


@dataclass
class ModelTask:
    pk: int
    token: str
    failures_planned: int  # how many runs fail before one succeeds; -1 fails forever
    run_at: datetime
    attempts: int = 0
    failed_at: datetime | None = None
    locked_by: str | None = None
    locked_at: datetime | None = None
    runs: list[datetime] = field(default_factory=list)


class QueueMachine(RuleBasedStateMachine):
    def __init__(self, max_attempts: int) -> None:
        super().__init__()
        fresh_queue()
        self.max_attempts = max_attempts
        self.settings = override_settings(MAX_ATTEMPTS=max_attempts, MAX_RUN_TIME=MAX_RUN_TIME_SECONDS)
        self.settings.enable()
        self.clock = freeze_time(START)
        self.frozen = self.clock.start()
        self.model: dict[int, ModelTask] = {}
        self.next_token = 0
        self.dead_workers = 0
        self.live_worker_ids: set[str] = set()

    def teardown(self) -> None:
        self.clock.stop()
        self.settings.disable()

    def now(self) -> datetime:
        return timezone.now()

    # Steps

    @rule(delay=st.integers(min_value=-30, max_value=600), failures=st.sampled_from([0, 1, 2, 3, -1]))
    def enqueue(self, delay: int, failures: int) -> None:
        self.next_token += 1
        token = f"t{self.next_token}"
        if failures == 0:
            task = spec_tasks.record(token, schedule=delay)
        elif failures < 0:
            task = spec_tasks.fail(token, schedule=delay)
        else:
            task = spec_tasks.fail_times(token, failures, schedule=delay)

        run_at = self.now() + timedelta(seconds=max(delay, 0))
        self.model[task.pk] = ModelTask(task.pk, token, failures, run_at)

    @rule(
        step=st.one_of(
            st.integers(min_value=1, max_value=3000).map(lambda seconds: timedelta(seconds=seconds)),
            # Exactly one lock lifetime, then one microsecond: the expiry boundary.
            st.just(timedelta(seconds=MAX_RUN_TIME_SECONDS)),
            st.just(timedelta(microseconds=1)),
        )
    )
    def advance_clock(self, step: timedelta) -> None:
        self.frozen.tick(step)

    @rule()
    def run_due_tasks(self) -> None:
        calls_before = len(spec_tasks.calls)
        run_at_before = {self.model[row.pk].token: row.run_at for row in adapter.queued_tasks()}

        claimed = adapter.run_due()

        for call in spec_tasks.calls[calls_before:]:
            assert call.at >= run_at_before[call.args[0]], f"task {call.args[0]} ran before its run_at"

        expected_claims, expected_runs = self._run_model()
        ran = [call.args[0] for call in spec_tasks.calls[calls_before:]]
        assert ran == expected_runs
        assert claimed == expected_claims

    @precondition(lambda self: any(self._is_due(task) and task.locked_by is None for task in self.model.values()))
    @rule(data=st.data())
    def worker_dies_holding_lock(self, data) -> None:
        candidates = sorted(pk for pk, task in self.model.items() if self._is_due(task) and task.locked_by is None)
        pk = data.draw(st.sampled_from(candidates))
        self.dead_workers += 1
        worker_id = f"dead-worker-{self.dead_workers}"

        adapter.lock_as_dead_worker(adapter.stored(self.model[pk]), worker_id, self.now())

        self.model[pk].locked_by = worker_id
        self.model[pk].locked_at = self.now()

    # The model of the rules

    def _lock_expired(self, task: ModelTask) -> bool:
        return task.locked_at is not None and task.locked_at + timedelta(seconds=MAX_RUN_TIME_SECONDS) < self.now()

    def _is_due(self, task: ModelTask) -> bool:
        unlocked_or_expired = task.locked_at is None or self._lock_expired(task)
        return task.failed_at is None and task.run_at <= self.now() and unlocked_or_expired

    def _count_failure(self, task: ModelTask) -> None:
        task.attempts += 1
        task.locked_by = task.locked_at = None
        if task.attempts >= self.max_attempts:
            task.failed_at = self.now()
        else:
            task.run_at = self.now() + timedelta(seconds=task.attempts**4 + 5)

    def _run_model(self) -> tuple[int, list[str]]:
        """Settle every due task by the rules, and return the claim count and the tokens run, in order."""
        claimed = 0
        ran = []
        while True:
            due = [task for task in self.model.values() if self._is_due(task)]
            if not due:
                return claimed, ran
            task = min(due, key=lambda task: (task.run_at, task.pk))
            claimed += 1

            if task.locked_at is not None:
                self._count_failure(task)
                continue

            ran.append(task.token)
            task.runs.append(self.now())
            runs_so_far = len(task.runs)
            succeeds = task.failures_planned >= 0 and runs_so_far > task.failures_planned
            if succeeds:
                del self.model[task.pk]
            else:
                self._count_failure(task)

    # Invariants, checked after every step

    @invariant()
    def rows_match_model(self) -> None:
        stored = {task.pk: task for task in adapter.queued_tasks()}
        assert set(stored) == set(self.model)
        for pk, expected in self.model.items():
            row = stored[pk]
            assert row.run_at == expected.run_at, f"task {expected.token} run_at"
            assert row.attempts == expected.attempts, f"task {expected.token} attempts"
            assert row.failed_at == expected.failed_at, f"task {expected.token} failed_at"
            assert row.locked_by == expected.locked_by, f"task {expected.token} locked_by"

    @invariant()
    def no_lock_left_by_live_worker(self) -> None:
        # The only worker that runs here is the one inside run_due(): once it
        # returns, every lock left must belong to a worker that died.
        for row in adapter.queued_tasks():
            assert row.locked_by is None or row.locked_by.startswith("dead-worker-")

    @invariant()
    def attempts_within_maximum(self) -> None:
        for row in adapter.queued_tasks():
            assert 0 <= row.attempts <= self.max_attempts

    @invariant()
    def failed_exactly_at_maximum(self) -> None:
        for row in adapter.queued_tasks():
            assert (row.failed_at is not None) == (row.attempts == self.max_attempts)



@pytest.mark.rule(1)
@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_queue_matches_model(max_attempts):
    """Over any sequence of enqueues, clock moves, worker runs and worker deaths, the stored queue equals a model of the rules.

    After every step no task is held by two workers, attempts never exceed
    MAX_ATTEMPTS (which stays the same throughout), no task runs before its
    run_at, and a task is failed exactly when its attempts reached
    MAX_ATTEMPTS.
    """
    machine = lambda: QueueMachine(max_attempts)  # noqa: E731
    run_state_machine_as_test(machine, settings=settings(max_examples=25, stateful_step_count=30))
