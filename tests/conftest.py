import os
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from tests.reliability_report import OUTCOME_KEY, Recorder, ReliabilityReport, worst_phase_outcome

REPO_ROOT = Path(__file__).resolve().parent.parent


def database_url(alias: str = DEFAULT_DB_ALIAS) -> str:
    """Return a URL for the test database behind ``alias`` that a worker process can open."""
    settings_dict = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite://{settings_dict['NAME']}"
    user = settings_dict["USER"] or ""
    host = settings_dict["HOST"] or ""
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] and not host.startswith("/") else ""
    if host.startswith("/"):
        return f"postgresql://{user}@/{settings_dict['NAME']}?host={host}"
    return f"postgresql://{user}@{host}{port}/{settings_dict['NAME']}"


@pytest.fixture
def worker_env():
    """Environment for a ``manage.py``-style worker process on the test database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["BACKGROUND_TASK_DATABASE_URL"] = database_url()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env



def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        metavar="FILE",
        help="write the figures that reliability tests record to FILE as JSON, for the docs' Reliability page",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--reliability-report")
    if path:
        config.pluginmanager.register(ReliabilityReport(Path(path)), "reliability-report")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        item.stash[OUTCOME_KEY] = "failed"
    return report


@pytest.fixture
def reliability(request: pytest.FixtureRequest):
    """Record a bad-day scenario's counts for the Reliability page; see tests/reliability_report.py."""
    recorder = Recorder(request.node.nodeid)
    plugin = request.config.pluginmanager.get_plugin("reliability-report")
    if plugin is not None:
        plugin.note_database()
    yield recorder
    if plugin is not None:
        # The call phase has ended here, so a failed assertion is already known.
        plugin.add(recorder, worst_phase_outcome(request.node))
