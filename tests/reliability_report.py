"""The figures behind the documentation's Reliability page.

A test of a bad-day scenario (several workers, a killed worker, a restarted
database) requests the ``reliability`` fixture and records what it counted::

    def test_four_workers_drain(reliability):
        ...
        reliability.record(
            "4 workers drain the queue", tasks=10_000, lost=0, run_twice=0, left_locked=0,
        )

``pytest tests --reliability-report=FILE`` writes every record of the run
to FILE as JSON, each with the test's node id and its outcome, so a figure
from a failed test shows as failed. The docs' ``reliability-table``
directive reads these files from build/reliability/.
"""

import json
import platform
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

OUTCOME_KEY = pytest.StashKey[str]()


@dataclass
class Record:
    """What one test run of a scenario counted."""

    scenario: str
    test: str
    #: How many times the scenario was repeated inside the test, such as kills at random moments.
    repetitions: int
    tasks: int
    lost: int
    run_twice: int
    left_locked: int
    outcome: str = "unknown"
    details: dict[str, object] = field(default_factory=dict)


class Recorder:
    """Collects the records of one test; what the ``reliability`` fixture returns."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.records: list[Record] = []

    def record(
        self,
        scenario: str,
        *,
        tasks: int,
        lost: int,
        run_twice: int,
        left_locked: int,
        repetitions: int = 1,
        **details: object,
    ) -> None:
        """Record one scenario's counts. Call it before asserting on them, so a failure still shows its figures."""
        self.records.append(
            Record(scenario, self.test, repetitions, tasks, lost, run_twice, left_locked, details=details)
        )

    def record_runs(
        self,
        scenario: str,
        runs: Counter[str],
        tokens: Iterable[str],
        *,
        left_locked: int,
        tasks: int | None = None,
        **details: object,
    ) -> None:
        """Record a scenario from the runs counted per token: a token with no run is lost, one with two or more ran twice.

        ``tasks`` defaults to the number of ``tokens``.
        """
        tokens = list(tokens)
        self.record(
            scenario,
            tasks=len(tokens) if tasks is None else tasks,
            lost=sum(1 for token in tokens if runs[token] == 0),
            run_twice=sum(1 for token in tokens if runs[token] > 1),
            left_locked=left_locked,
            **details,
        )


class ReliabilityReport:
    """The plugin behind --reliability-report: gathers every test's records and writes the JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Record] = []
        self.database: dict[str, str] | None = None

    def add(self, recorder: Recorder, outcome: str) -> None:
        for record in recorder.records:
            record.outcome = outcome
            self.records.append(record)

    def note_database(self) -> None:
        """Record the database that the tests run on; called from inside a test, where it is connected."""
        if self.database is not None:
            return
        from django.db import connection

        try:
            version = ".".join(str(part) for part in connection.get_database_version())
        except Exception as error:  # a test without database access still gets its record
            version = f"unknown ({error.__class__.__name__})"
        self.database = {"vendor": connection.vendor, "name": connection.display_name, "version": version}

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        import django

        data = {
            "format": 1,
            "python": platform.python_version(),
            "django": django.get_version(),
            "database": self.database or {"vendor": "unknown", "name": "unknown", "version": ""},
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": [asdict(record) for record in self.records],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(f"reliability report: {self.path} ({len(self.records)} records)")


def worst_phase_outcome(item: pytest.Item) -> str:
    """Return "failed" if any phase of ``item`` failed, else "passed"."""
    return item.stash.get(OUTCOME_KEY, "passed")
