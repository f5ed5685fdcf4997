"""Shared fixtures and the rule numbering of the specification suite.

Each spec module sets ``CHAPTER`` and marks every test with
``@pytest.mark.rule(N)``, which makes the test rule CHAPTER.N. Collection
fails when a test has no rule, or when two tests claim the same number, so
the numbers stay stable and unique. A failing test's report and the closing
summary name the rule, as in "rule 5.3".
"""

import os

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rule(number): the rule of its chapter that this test states")


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


@pytest.fixture(autouse=True)
def queue(db):
    """Give each rule an empty queue and an empty record of task calls."""
    adapter.clear_queue()
    spec_tasks.reset()
    yield
    spec_tasks.reset()


def fresh_queue() -> None:
    """Empty the queue and the call record, for each example of a hypothesis test."""
    adapter.clear_queue()
    spec_tasks.reset()
