"""Task discovery.

A worker can only run a task whose function it has registered, and a
function registers when the module that defines it is imported. In a web
process that happens as views import their tasks, but a worker imports no
views. So ``process_tasks`` starts by importing the ``tasks`` module of every
installed app, the same convention Django's admin follows with ``admin``
modules. Tasks defined in ``<app>/tasks.py`` are ready without any other
code importing them.

Every entry of INSTALLED_APPS counts, whether it names the app's package or
its AppConfig class. An app without a ``tasks`` module is skipped. The
run-once function used by cron jobs and scripts imports the same modules
before it runs anything, so both ways of running the queue know the same
tasks.

A ``tasks`` module that exists but fails to import is a deployment error: its
tasks would be missing, and every row naming them would fail until retries
ran out. The command therefore stops before running anything. An ImportError
inside the module, such as a missing dependency, becomes a ``CommandError``
that names the module. Any other exception raised by the import propagates
as it is, with its traceback.

The apps in these rules are written to a temporary directory and added to
INSTALLED_APPS for one rule each, with module names used by no other rule,
because Python caches imported modules for the rest of the process.
"""

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.test import modify_settings
from django.utils import timezone

from spec import adapter
from spec import tasks as spec_tasks

CHAPTER = 9

#: The body of a generated ``tasks.py``: one task, named after the app, that
#: writes "ran" to the file whose path it receives.
MARKER_TASKS = '''
    from pathlib import Path

    from spec.adapter import background


    @background(name="spec.discovery.{package}")
    def write_marker(path):
        Path(path).write_text("ran")
'''


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Return a function that writes an app package under tmp_path, which is put on sys.path.

    The function takes the package name and a mapping from file name to
    source text. At teardown the packages' modules leave sys.modules.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    packages = []

    def write(package: str, files: dict[str, str]) -> Path:
        directory = tmp_path / package
        directory.mkdir()
        (directory / "__init__.py").write_text("")
        for name, source in files.items():
            (directory / name).write_text(textwrap.dedent(source))
        packages.append(package)
        return directory

    yield write

    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


def store_marker_task(package: str, marker: Path) -> adapter.Task:
    """Store a due row for the task that the generated app ``package`` defines, without importing it."""
    return adapter.Task.objects.create(
        task_name=f"spec.discovery.{package}",
        task_params=json.dumps([[str(marker)], {}]),
        run_at=timezone.now(),
    )


def run_worker_briefly() -> None:
    adapter.process_tasks("--duration", "0.3", "--sleep", "0.1")


@pytest.mark.rule(1)
def test_app_tasks_module_imported(make_app, tmp_path):
    """At start, process_tasks imports the tasks module of every installed app, so the tasks defined there run without any other code importing them."""
    package = "spec_discovery_by_package"
    make_app(package, {"tasks.py": MARKER_TASKS.format(package=package)})
    marker = tmp_path / "marker"
    task = store_marker_task(package, marker)

    with modify_settings(INSTALLED_APPS={"append": package}):
        assert f"{package}.tasks" not in sys.modules
        run_worker_briefly()

    assert marker.read_text() == "ran"
    assert adapter.stored(task) is None


@pytest.mark.rule(2)
def test_app_config_path_discovered(make_app, tmp_path):
    """An app listed in INSTALLED_APPS by the dotted path of its AppConfig has its tasks module imported too."""
    package = "spec_discovery_by_config"
    apps_source = f"""
        from django.apps import AppConfig


        class DiscoveryConfig(AppConfig):
            name = "{package}"
    """
    make_app(package, {"apps.py": apps_source, "tasks.py": MARKER_TASKS.format(package=package)})
    marker = tmp_path / "marker"
    task = store_marker_task(package, marker)

    with modify_settings(INSTALLED_APPS={"append": f"{package}.apps.DiscoveryConfig"}):
        assert f"{package}.tasks" not in sys.modules
        run_worker_briefly()

    assert marker.read_text() == "ran"
    assert adapter.stored(task) is None


@pytest.mark.rule(3)
def test_app_without_tasks_module(make_app):
    """An installed app without a tasks module is skipped, and the command runs the queue as usual."""
    package = "spec_discovery_without_tasks"
    make_app(package, {})
    task = spec_tasks.record("still runs")

    with modify_settings(INSTALLED_APPS={"append": package}):
        run_worker_briefly()

    assert [call.args for call in spec_tasks.calls] == [("still runs",)]
    assert adapter.stored(task) is None


@pytest.mark.rule(4)
def test_import_error_stops_command(make_app):
    """An ImportError raised inside an app's tasks module stops the command, before any task runs, with a CommandError naming that module."""
    package = "spec_discovery_import_error"
    make_app(package, {"tasks.py": "import spec_discovery_dependency_that_is_not_installed\n"})
    task = spec_tasks.record("must not run")

    with modify_settings(INSTALLED_APPS={"append": package}):
        with pytest.raises(CommandError) as raised:
            run_worker_briefly()

    assert f"{package}.tasks" in str(raised.value)
    assert "spec_discovery_dependency_that_is_not_installed" in str(raised.value)
    assert spec_tasks.calls == []
    assert adapter.stored(task) is not None


@pytest.mark.rule(5)
def test_other_import_failure_propagates(make_app):
    """Any other exception raised while an app's tasks module is imported also stops the command before any task runs, and reaches the caller unchanged."""
    package = "spec_discovery_broken_module"
    make_app(package, {"tasks.py": "raise LookupError('settings for the mail service are missing')\n"})
    task = spec_tasks.record("must not run")

    with modify_settings(INSTALLED_APPS={"append": package}):
        with pytest.raises(LookupError) as raised:
            run_worker_briefly()

    assert str(raised.value) == "settings for the mail service are missing"
    assert spec_tasks.calls == []
    assert adapter.stored(task) is not None


@pytest.mark.rule(6)
def test_run_due_imports_tasks_modules(make_app, tmp_path):
    """The run-once function imports every installed app's tasks module too, so a cron job or script runs the same tasks as process_tasks."""
    package = "spec_discovery_run_once"
    make_app(package, {"tasks.py": MARKER_TASKS.format(package=package)})
    marker = tmp_path / "marker"
    task = store_marker_task(package, marker)

    with modify_settings(INSTALLED_APPS={"append": package}):
        assert f"{package}.tasks" not in sys.modules
        adapter.run_due()

    assert marker.read_text() == "ran"
    assert adapter.stored(task) is None
