"""Shared fixtures and the rule numbering of the specification suite.

Each spec module sets ``CHAPTER`` and marks every test with
``@pytest.mark.rule(N)``, which makes the test rule CHAPTER.N. Collection
fails when a test has no rule, or when two tests claim the same number, so
the numbers stay stable and unique. A failing test's report and the closing
summary name the rule, as in "rule 5.3".

``pytest spec --conformance-report=FILE`` also writes a JSON report of every
rule's outcome, with the implementation, Python, Django and database it ran
on. The documentation shows the newest report per database next to each rule.
"""

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from spec import adapter
from spec import tasks as spec_tasks

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SPEC_DIR = os.path.dirname(__file__)


#: A rule's outcomes, worst first: a rule with several cases takes its worst case's outcome.
OUTCOMES = ("failed", "xpassed", "xfailed", "passed", "skipped")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("specification").addoption(
        "--conformance-report",
        metavar="FILE",
        default=None,
        help="write a JSON report of every spec rule's outcome, and what it ran on, to FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rule(number): the rule of its chapter that this test states")
    path = config.getoption("conformance_report", None)
    if path:
        config.pluginmanager.register(ConformanceReport(Path(path), config), "spec-conformance-report")


def rule_id(item: pytest.Item) -> str | None:
    """Return "CHAPTER.N" for a spec test, or None for a test outside spec/."""
    marker = item.get_closest_marker("rule")
    chapter = getattr(item.module, "CHAPTER", None)
    if marker is None or chapter is None:
        return None
    return f"{chapter}.{marker.args[0]}"


def rule_text(item: pytest.Item) -> str:
    """Return the first paragraph of the test's docstring, on one line."""
    doc = (item.function.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: dict[str, str] = {}
    problems = []

    for item in items:
        if not str(item.path).startswith(SPEC_DIR):
            continue
        number = rule_id(item)
        if number is None:
            problems.append(f"{item.nodeid}: needs CHAPTER in its module and @pytest.mark.rule(N)")
            continue
        if not rule_text(item):
            problems.append(f"{item.nodeid}: rule {number} needs a docstring that states the rule")
        owner = seen.setdefault(number, item.nodeid)
        if owner != item.nodeid and owner.split("[")[0] != item.nodeid.split("[")[0]:
            problems.append(f"{item.nodeid}: rule {number} is already taken by {owner}")
        item.user_properties.append(("rule", number))

    if problems:
        raise pytest.UsageError("Spec rules are not numbered correctly:\n  " + "\n  ".join(problems))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    number = rule_id(item)
    if number is not None and report.failed:
        report.sections.append(("Specification", f"Rule {number} is not met: {rule_text(item)}"))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    failed = []
    for report in terminalreporter.stats.get("failed", []):
        number = dict(report.user_properties).get("rule")
        if number is not None:
            failed.append(f"rule {number}: {report.nodeid}")
    if failed:
        terminalreporter.section("Specification rules not met")
        for line in sorted(set(failed)):
            terminalreporter.write_line(line)

    deviations = []
    for report in terminalreporter.stats.get("xfailed", []):
        number = dict(report.user_properties).get("rule")
        if number is not None:
            deviations.append(f"rule {number}: {report.nodeid}: {report.wasxfail or 'no reason given'}")
    if deviations:
        terminalreporter.section("Known deviations from the specification (expected failures)")
        for line in sorted(set(deviations)):
            terminalreporter.write_line(line)


def phase_outcome(report: pytest.TestReport) -> str | None:
    """Return what one phase's report means for its test, or None when it changes nothing."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed:
        return "failed"
    if report.skipped:
        return "skipped"
    if report.when == "call":
        return "passed"
    return None


class ConformanceReport:
    """The plugin behind --conformance-report: collects each rule's outcome and writes the JSON file."""

    def __init__(self, path: Path, config: pytest.Config) -> None:
        self.path = path
        self.config = config
        self.started = datetime.now(UTC)
        #: rule id -> {nodeid: outcome}; a nodeid's outcome is its worst phase.
        self.outcomes: dict[str, dict[str, str]] = {}
        self.statements: dict[str, str] = {}
        self.database: dict[str, str] | None = None
        self.deselected = 0

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        number = dict(report.user_properties).get("rule")
        outcome = phase_outcome(report)
        if number is None or outcome is None:
            return
        cases = self.outcomes.setdefault(number, {})
        previous = cases.get(report.nodeid)
        if previous is None or OUTCOMES.index(outcome) < OUTCOMES.index(previous):
            cases[report.nodeid] = outcome

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        number = rule_id(item)
        if number is not None:
            self.statements.setdefault(number, rule_text(item))

    def note_database(self) -> None:
        """Record the database that the tests run on; called from inside a test, where it is connected."""
        if self.database is not None:
            return
        from django.db import connection

        try:
            version = ".".join(str(part) for part in connection.get_database_version())
        except Exception as error:  # a backend without a version query still gets a report
            version = f"unknown ({error.__class__.__name__})"
        self.database = {"vendor": connection.vendor, "name": connection.display_name, "version": version}

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        import django

        rules = {}
        for number in sorted(self.outcomes, key=lambda text: tuple(int(part) for part in text.split("."))):
            cases = self.outcomes[number]
            rules[number] = {
                "outcome": min(cases.values(), key=OUTCOMES.index),
                "statement": self.statements.get(number, ""),
                "cases": dict(sorted(cases.items())),
            }
        database = self.database or {"vendor": "unknown", "name": "unknown", "version": ""}
        data = {
            "format": 1,
            "implementation": {"name": adapter.IMPLEMENTATION, "version": adapter.IMPLEMENTATION_VERSION},
            "python": platform.python_version(),
            "django": django.get_version(),
            "database": database,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "arguments": list(self.config.invocation_params.args),
            "deselected": self.deselected,
            "exit_status": int(exitstatus),
            "rules": rules,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(f"conformance report: {self.path} ({len(self.outcomes)} rules)")


@pytest.fixture(autouse=True)
def queue(db, request):
    """Give each rule an empty queue and an empty record of task calls."""
    conformance = request.config.pluginmanager.get_plugin("spec-conformance-report")
    if conformance is not None:
        conformance.note_database()
    adapter.clear_queue()
    spec_tasks.reset()
    yield
    spec_tasks.reset()


def fresh_queue() -> None:
    """Empty the queue and the call record, for each example of a hypothesis test."""
    adapter.clear_queue()
    spec_tasks.reset()
