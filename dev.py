#!/usr/bin/env python3
"""Set up and run this project's demo and tests on a machine that has only Python 3.11+.

    python3 dev.py demo    run the example project's tasks in a worker and report what happened
    python3 dev.py test    run every test for each supported Python and Django, on SQLite and PostgreSQL,
                           then build the documentation with its conformance results

Only the standard library is used, because this script creates the virtual
environments that hold everything else.
"""

# Postponed annotations let Python 3.8 to 3.10 parse this file, so the version
# check below can print its message instead of a syntax error.
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MIN_PYTHON = (3, 11)

ROOT = Path(__file__).resolve().parent
EXAMPLE_DIR = ROOT / "example"
DEMO_VAR_DIR = EXAMPLE_DIR / "var"

#: How long the demo's worker runs, in seconds. The flaky task fails at about
#: 0 s, is retried 6 s later, fails again and is retried 21 s after that. It
#: succeeds at about 28 s, and the rest leaves room for a slow start.
DEMO_DURATION = 35

#: Maximum seconds one pytest run may take. A run still going then is stopped and counted as failed.
PYTEST_TIMEOUT = 20 * 60

#: pytest's exit code when it collected no tests; this script counts it as a failure.
PYTEST_NO_TESTS = 5

#: The folder for the conformance report of each pytest run of spec/, which the documentation shows.
CONFORMANCE_DIR = ROOT / "build" / "conformance"
#: The folder for the figures that the reliability tests record, which the documentation shows.
RELIABILITY_DIR = ROOT / "build" / "reliability"
DOCS_DIR = ROOT / "docs"
DOCS_BUILD_DIR = ROOT / "build" / "docs"
#: Maximum seconds one documentation build may take.
DOCS_TIMEOUT = 10 * 60


@dataclass(frozen=True)
class Combination:
    """A supported pair of Python and Django versions."""

    label: str
    #: Python versions that qualify, the preferred one first.
    pythons: tuple[tuple[int, int], ...]
    #: The pip requirement that pins Django to this combination's series.
    django_requirement: str
    #: Short name of the Django series, used in virtual environment names.
    django_tag: str


COMBINATIONS = [
    Combination("Python 3.11 with Django 5.2 LTS", ((3, 11),), "Django>=5.2,<5.3", "django52"),
    Combination("Python 3.12+ with Django 6", ((3, 13), (3, 12)), "Django>=6.0,<7", "django6"),
]


class SetupError(Exception):
    """A tool or service that this script needs is missing or failed. The message names the fix."""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit status."""
    if sys.version_info < MIN_PYTHON:
        print(
            f"dev.py needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is {sys.version.split()[0]}. "
            "Run it with a newer python3.",
            file=sys.stderr,
        )
        return 2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,test}")

    commands.add_parser("demo", help="run the example project's tasks in a worker and report what happened")

    commands.add_parser(
        "test", help="run every test for each supported Python and Django, on SQLite and PostgreSQL, "
        "then build the documentation; arguments after 'test' go to each pytest run",
    )

    # An internal helper for .ci/run, left out of the usage line above.
    postgres = commands.add_parser("postgres")
    postgres.add_argument("action", choices=["start", "stop"])
    postgres.add_argument("folder", type=Path, help="empty folder for the cluster's data, socket and log")

    argv = sys.argv[1:] if argv is None else argv
    # Everything after "test" belongs to pytest, including options such as -k
    # that this parser would reject.
    pytest_args: list[str] = []
    if argv[:1] == ["test"]:
        argv, pytest_args = argv[:1], argv[1:]
        if pytest_args[:1] == ["--"]:
            pytest_args = pytest_args[1:]

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo()
        if args.command == "test":
            return run_tests(pytest_args)
        return run_postgres_helper(args.action, args.folder)
    except SetupError as error:
        print(f"dev.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndev.py: interrupted.", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------
# Virtual environments


def venv_python(venv: Path) -> Path:
    """Return the path of the Python interpreter inside the virtual environment ``venv``."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def python_version(python: str | Path) -> tuple[int, int] | None:
    """Return the (major, minor) version of ``python`` if it runs and can create a venv with pip, else None."""
    # pyenv puts shims for every installed version on PATH, and a shim for a
    # version that is not selected exits with an error, so each candidate runs.
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    try:
        result = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    major, minor = result.stdout.strip().split(".")
    return int(major), int(minor)


def ensure_venv(venv: Path, base_python: str | Path, version: tuple[int, int], requirements: list[str]) -> Path:
    """Create ``venv`` from ``base_python`` if needed, install ``requirements`` into it, and return its Python.

    The install is skipped when the venv already contains the same requirements
    for the same pyproject.toml, which makes a second run start at once.
    """
    python = venv_python(venv)
    if venv.exists() and python_version(python) != version:
        print(f"Recreating {venv.name}: its Python is missing or not {version[0]}.{version[1]}.", flush=True)
        shutil.rmtree(venv)

    if not venv.exists():
        print(f"Creating {venv.name} with {base_python}", flush=True)
        run_checked([str(base_python), "-m", "venv", str(venv)], f"Creating the virtual environment {venv}")

    stamp_file = venv / "dev-py-installed.json"
    stamp = {
        "pyproject_sha256": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
        "requirements": requirements,
    }
    if stamp_file.exists() and json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
        return python

    print(f"Installing {' '.join(requirements)} into {venv.name}", flush=True)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements]
    run_checked(command, f"Installing into {venv}")
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return python


def run_checked(command: list[str], step: str, **kwargs) -> None:
    """Run ``command`` and raise SetupError naming ``step`` if it fails."""
    try:
        result = subprocess.run(command, check=False, **kwargs)
    except OSError as error:
        raise SetupError(f"{step} failed: cannot run {command[0]}: {error}.") from None
    if result.returncode != 0:
        raise SetupError(f"{step} failed with exit status {result.returncode}: {shlex.join(command)}")


# ---------------------------------------------------------------------------
# The demo


def run_demo() -> int:
    """Install the project into .venv, run the example project's tasks and report; return the exit status."""
    version = sys.version_info[:2]
    python = ensure_venv(ROOT / ".venv", sys.executable, version, ["-e", str(ROOT)])

    # Each run starts from nothing, so the report shows only this run's work.
    shutil.rmtree(DEMO_VAR_DIR, ignore_errors=True)
    env = demo_environment()

    def manage(*arguments: str) -> int:
        print(f"\n$ python manage.py {shlex.join(arguments)}", flush=True)
        return subprocess.run([str(python), "manage.py", *arguments], cwd=EXAMPLE_DIR, env=env, check=False).returncode

    for step in (["migrate"], ["enqueue_demo"]):
        status = manage(*step)
        if status != 0:
            print(f"dev.py: manage.py {step[0]} failed with exit status {status}.", file=sys.stderr)
            return 1

    print(
        f"\nRunning the worker for {DEMO_DURATION} s. Watch the word counts and the mail run, and the flaky "
        "task fail, wait 6 s, fail again, wait 21 s and succeed.",
        flush=True,
    )
    status = manage("process_tasks", "--duration", str(DEMO_DURATION), "--sleep", "1", "--log-level", "INFO")
    if status != 0:
        print(f"dev.py: process_tasks failed with exit status {status}.", file=sys.stderr)
        return 1

    status = manage("demo_report", "--check")
    if status == 0:
        print(f"\nThe demo's files are in {DEMO_VAR_DIR.relative_to(ROOT)}/: reports/, mail/ and demo.sqlite3.")
    return status


def demo_environment() -> dict[str, str]:
    """Return the environment for the demo's manage.py commands."""
    env = os.environ.copy()
    # A DJANGO_SETTINGS_MODULE from the caller's shell would replace the demo's settings.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["EXAMPLE_VAR_DIR"] = str(DEMO_VAR_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------
# The tests


@dataclass
class RunResult:
    """The outcome of one pytest run."""

    name: str
    exit_code: int
    seconds: float
    #: pytest's closing line, such as "12 passed, 1 skipped in 3.10s".
    summary: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """Return one line with the verdict, the run's name, pytest's closing line and the time taken."""
        verdict = "PASS" if self.passed else "FAIL"
        detail = self.summary or "no closing line from pytest"
        if self.exit_code == PYTEST_NO_TESTS:
            detail += " (exit status 5: no tests were collected)"
        elif not self.passed:
            detail += f" (exit status {self.exit_code})"
        return f"{verdict}  {self.name}: {detail} [{self.seconds:.0f} s]"


def is_ci() -> bool:
    """Return whether CI=true is set, which makes a missing combination or PostgreSQL an error."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def run_tests(pytest_args: list[str]) -> int:
    """Run pytest for each combination on SQLite and PostgreSQL, then build the docs; return 0 only if all passed."""
    strict = is_ci()
    problems: list[str] = []
    skipped: list[str] = []

    combinations = []
    for combination in COMBINATIONS:
        found = find_python(combination.pythons)
        if found is None:
            names = " or ".join(f"python{major}.{minor}" for major, minor in combination.pythons)
            reason = (
                f"{combination.label}: no working {names} found on PATH or under pyenv's versions; "
                f"install one (for example `pyenv install {combination.pythons[-1][0]}.{combination.pythons[-1][1]}`) "
                "to test this combination"
            )
            (problems if strict else skipped).append(reason)
            continue
        combinations.append((combination, *found))

    databases: list[tuple[str, str | None]] = [("SQLite", None)]
    cluster: PostgresCluster | None = None
    try:
        postgres_url = os.environ.get("BACKGROUND_TASK_DATABASE_URL")
        if postgres_url:
            print(f"PostgreSQL: using BACKGROUND_TASK_DATABASE_URL={redact_password(postgres_url)}", flush=True)
        else:
            try:
                cluster = PostgresCluster.start_throwaway()
                postgres_url = cluster.url
            except SetupError as error:
                reason = f"PostgreSQL runs: {error}"
                (problems if strict else skipped).append(reason)
        if postgres_url:
            databases.append(("PostgreSQL", postgres_url))

        # The documentation shows the reports of this run only, never those of an earlier one.
        for old_report in [*CONFORMANCE_DIR.glob("*.json"), *RELIABILITY_DIR.glob("*.json")]:
            old_report.unlink()

        results = []
        docs_python: Path | None = None
        for combination, python, version in combinations:
            venv = ROOT / f".venv-py{version[0]}{version[1]}-{combination.django_tag}"
            requirements = ["-e", f"{ROOT}[test,postgres,docs]", combination.django_requirement]
            venv_py = ensure_venv(venv, python, version, requirements)
            # The documentation is built with the first combination, Python 3.11 where it is found.
            docs_python = docs_python or venv_py
            django_version = installed_django_version(venv_py)
            # Long reliability and load tests run with the first combination
            # only: they test the worker's processes, not the Python or Django version.
            args = pytest_args if combination is combinations[0][0] else skip_long_tests(pytest_args)
            for database, url in databases:
                name = f"Python {version[0]}.{version[1]}, Django {django_version}, {database}"
                tag = f"py{version[0]}{version[1]}_{combination.django_tag}"
                reports = Reports(
                    CONFORMANCE_DIR / f"{tag}-{database.lower()}.json",
                    RELIABILITY_DIR / f"{tag}-{database.lower()}.json",
                )
                results.append(run_pytest(venv_py, name, database_env(url, tag), args, reports))
    finally:
        if cluster is not None:
            cluster.stop()

    if docs_python is not None:
        results.extend(build_docs(docs_python))

    print_summary(results, skipped, problems)
    if problems or not results or not all(result.passed for result in results):
        return 1
    return 0


def find_python(versions: tuple[tuple[int, int], ...]) -> tuple[str, tuple[int, int]] | None:
    """Return a working interpreter of the first of ``versions`` found, with its version, or None."""
    for version in versions:
        for candidate in python_candidates(version):
            if python_version(candidate) == version:
                return candidate, version
    return None


def python_candidates(version: tuple[int, int]) -> list[str]:
    """Return places a Python of ``version`` may live: this interpreter, PATH, then pyenv's versions."""
    name = f"python{version[0]}.{version[1]}"
    candidates = []
    if sys.version_info[:2] == version:
        candidates.append(sys.executable)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)

    pyenv_roots = []
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            result = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0 and result.stdout.strip():
                pyenv_roots.append(result.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    pyenv_roots.append(os.path.expanduser("~/.pyenv"))

    for pyenv_root in dict.fromkeys(pyenv_roots):
        # Newest patch release first: 3.12.10 sorts after 3.12.9.
        found = glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", name))
        candidates.extend(sorted(found, key=natural_sort_key, reverse=True))
    return list(dict.fromkeys(candidates))


def natural_sort_key(text: str) -> list:
    """Split ``text`` into text and number parts so that numbers compare by value."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def installed_django_version(python: Path) -> str:
    """Return the Django version installed for ``python``."""
    result = subprocess.run(
        [str(python), "-c", "import django; print(django.get_version())"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SetupError(f"Django does not import in {python}: {result.stderr.strip()}")
    return result.stdout.strip()


def database_env(url: str | None, tag: str) -> dict[str, str]:
    """Return the environment for one pytest run on SQLite (``url`` None) or on the PostgreSQL server at ``url``."""
    env = os.environ.copy()
    # pytest-django prefers this variable to the project's setting of spec.settings.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("BACKGROUND_TASK_DATABASE_URL", None)
    if url is not None:
        env["BACKGROUND_TASK_DATABASE_URL"] = url_with_database(url, f"{tag}_{os.getpid()}")
    return env


def url_with_database(url: str, suffix: str) -> str:
    """Return ``url`` with ``_<suffix>`` appended to its database name, "background_task" when it names none.

    Each run gets a database of its own, so runs of several checkouts against
    one server do not meet. PostgreSQL names hold at most 63 bytes, and
    pytest-django adds "test_" in front.
    """
    parts = urlsplit(url)
    base = unquote(parts.path.lstrip("/")) or "background_task"
    name = f"{base[:63 - len('test_') - len(suffix) - 1]}_{suffix}"
    return urlunsplit(parts._replace(path="/" + quote(name)))


def redact_password(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by "***" for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Reports:
    """The files where one pytest run writes the reports that the documentation shows."""

    conformance: Path
    reliability: Path


def skip_long_tests(pytest_args: list[str]) -> list[str]:
    """Return ``pytest_args`` deselecting tests marked ``long``, unless the caller chose markers."""
    if any(arg == "-m" or arg.startswith("-m") for arg in pytest_args):
        return pytest_args
    return [*pytest_args, "-m", "not long"]


def run_pytest(
    python: Path, name: str, env: dict[str, str], extra_args: list[str], reports: Reports | None = None,
) -> RunResult:
    """Run pytest with ``python`` in the repository root, echoing its output; return the result.

    When the run includes spec/, it writes its conformance report to
    ``reports.conformance``, and when it includes tests/, the reliability
    figures to ``reports.reliability``.
    """
    # spec and tests are named unless the caller picked test files or folders.
    paths = [arg.split("::")[0] for arg in extra_args if not arg.startswith("-")]
    picks_paths = any(os.path.exists(ROOT / path) for path in paths)
    args = list(extra_args) if picks_paths else ["spec", "tests", *extra_args]
    # Each option comes from the conftest.py of its folder, which pytest loads
    # only when that folder is among the paths.
    if reports is not None and runs_folder("spec", picks_paths, paths):
        args.append(f"--conformance-report={reports.conformance.relative_to(ROOT)}")
    if reports is not None and runs_folder("tests", picks_paths, paths):
        args.append(f"--reliability-report={reports.reliability.relative_to(ROOT)}")
    if sys.stdout.isatty():
        args.insert(0, "--color=yes")

    scratch = tempfile.mkdtemp(prefix="bt-scratch-")
    env = dict(env, BACKGROUND_TASK_SCRATCH=scratch, PYTHONUNBUFFERED="1")
    command = [str(python), "-m", "pytest", *args]
    print(f"\n=== {name}: pytest {shlex.join(args)}", flush=True)

    started = time.monotonic()
    try:
        exit_code, last_line = run_echoing(command, env, PYTEST_TIMEOUT)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RunResult(name, exit_code, time.monotonic() - started, pytest_summary(last_line))


def runs_folder(folder: str, picks_paths: bool, paths: list[str]) -> bool:
    """Return whether a pytest run of ``paths`` collects tests from ``folder`` of the repository."""
    if not picks_paths:
        return True
    return any(Path(os.path.abspath(ROOT / path)).is_relative_to(ROOT / folder) for path in paths)


def build_docs(python: Path) -> list[RunResult]:
    """Build the documentation as HTML and run its examples, with warnings as errors; return both results."""
    env = database_env(None, "docs")
    env["PYTHONUNBUFFERED"] = "1"
    results = []
    for builder in ("html", "doctest"):
        scratch = tempfile.mkdtemp(prefix="bt-docs-")
        env["BACKGROUND_TASK_SCRATCH"] = scratch
        output = DOCS_BUILD_DIR / builder
        # -E rereads every page, so a warning is reported at every build, not only the first.
        command = [str(python), "-m", "sphinx", "-E", "-W", "--keep-going", "-b", builder, str(DOCS_DIR), str(output)]
        print(f"\n=== Documentation ({builder}): {shlex.join(command[1:])}", flush=True)
        started = time.monotonic()
        try:
            exit_code, last_line = run_echoing(command, env, DOCS_TIMEOUT)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        summary = last_line.strip()
        if builder == "html" and exit_code == 0:
            summary += f" Open {(output / 'index.html').relative_to(ROOT)}"
        results.append(RunResult(f"Documentation ({builder})", exit_code, time.monotonic() - started, summary))
    return results


def run_echoing(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``command``, copying its output to ours; return its exit status and last non-blank line.

    A command still running after ``timeout`` seconds is stopped and gets
    exit status 124, as from timeout(1).
    """
    # A session of its own lets the whole process group be stopped on a
    # timeout or Ctrl-C, including workers a test started.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", start_new_session=True,
    )
    last_line = [""]

    def copy_output() -> None:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last_line[0] = line

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    try:
        exit_code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"\ndev.py: pytest ran longer than {timeout:.0f} s and was stopped.", flush=True)
        stop_process_group(process)
        exit_code = 124
    except BaseException:
        stop_process_group(process)
        raise
    reader.join(timeout=10)
    return exit_code, last_line[0]


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop the process group that ``process`` leads: SIGTERM, then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def pytest_summary(line: str) -> str:
    """Return pytest's closing line without colour codes and the surrounding "=" signs."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return plain.strip().strip("=").strip()


def count_outcomes(results: list[RunResult]) -> dict[str, int]:
    """Add up the passed, failed and skipped tests over the closing lines of ``results``."""
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for result in results:
        for number, outcome in re.findall(r"(\d+) (passed|failed|skipped|errors?)", result.summary):
            key = "failed" if outcome.startswith("error") else outcome
            totals[key] += int(number)
    return totals


def print_summary(results: list[RunResult], skipped: list[str], problems: list[str]) -> None:
    """Print one line per run, then what was skipped or missing, then the totals."""
    print("\n=== Summary", flush=True)
    for result in results:
        print(result.describe())
    for reason in skipped:
        print(f"SKIP  {reason}.")
    for reason in problems:
        print(f"ERROR {reason}. CI=true requires every combination and PostgreSQL.")
    if not results:
        print("ERROR no pytest run happened.")

    totals = count_outcomes(results)
    line = f"Total: {totals['passed']} passed, {totals['failed']} failed"
    if totals["skipped"]:
        line += f", {totals['skipped']} skipped"
    print(line, flush=True)


# ---------------------------------------------------------------------------
# A throw-away PostgreSQL server


def find_postgres_bindir() -> Path | None:
    """Return a folder holding PostgreSQL's initdb and pg_ctl: PATH first, then /usr/lib/postgresql/*/bin, newest first."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=natural_sort_key, reverse=True):
        if os.access(Path(folder) / "initdb", os.X_OK) and os.access(Path(folder) / "pg_ctl", os.X_OK):
            return Path(folder)
    return None


class PostgresCluster:
    """A PostgreSQL cluster whose data, unix socket and log are all in one folder.

    The server listens on no TCP port at all, only on the socket in that
    folder, so it cannot clash with another server on the machine. As root,
    the server runs as the ``postgres`` user, because PostgreSQL refuses to
    run as root.
    """

    def __init__(self, folder: Path, bindir: Path) -> None:
        self.folder = folder.resolve()
        self.bindir = bindir
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        """Return the URL of the cluster's default database, for BACKGROUND_TASK_DATABASE_URL."""
        return f"postgresql://postgres@/postgres?host={quote(str(self.folder))}"

    @classmethod
    def start_throwaway(cls) -> PostgresCluster:
        """Start a cluster in a new temporary folder; raise SetupError if that is not possible."""
        bindir = find_postgres_bindir()
        if bindir is None:
            raise SetupError(
                "no BACKGROUND_TASK_DATABASE_URL is set and no PostgreSQL server binaries (initdb, pg_ctl) "
                "were found on PATH or in /usr/lib/postgresql/*/bin; install the server "
                "(Debian: apt-get install postgresql) or set BACKGROUND_TASK_DATABASE_URL"
            )
        # A unix socket path is limited to 107 bytes on Linux, which a long TMPDIR can exceed.
        parent = tempfile.gettempdir() if len(tempfile.gettempdir()) < 40 else "/tmp"
        cluster = cls(Path(tempfile.mkdtemp(prefix="bt-pg-", dir=parent)), bindir)
        try:
            cluster.start()
        except BaseException:
            shutil.rmtree(cluster.folder, ignore_errors=True)
            raise
        return cluster

    def run_as_owner(self) -> list[str]:
        """Return the command prefix that runs PostgreSQL's programs as the cluster's owner."""
        if os.geteuid() != 0:
            return []
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise SetupError(
                "running as root, but there is no 'postgres' user to run the server as (PostgreSQL "
                "refuses to run as root); install Debian's postgresql package, which creates it, or "
                "run dev.py as an ordinary user"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise SetupError("running as root, but runuser (from util-linux) is missing; install util-linux")
        os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        return [runuser, "-u", "postgres", "--"]

    def start(self) -> None:
        """Create the cluster and start its server, waiting until it accepts connections."""
        prefix = self.run_as_owner()
        print(f"PostgreSQL: starting a throw-away server from {self.bindir} in {self.folder}", file=sys.stderr, flush=True)

        initdb = [
            str(self.bindir / "initdb"), "--pgdata", str(self.data), "--username", "postgres",
            "--auth", "trust", "--encoding", "UTF8", "--no-sync",
        ]
        self._run(prefix + initdb, "initdb")

        # The data is thrown away afterwards, so durability settings are off for speed.
        options = (
            f"-c listen_addresses='' -k {shlex.quote(str(self.folder))} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [
            str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--log", str(self.log),
            "--wait", "--timeout", "60", "-o", options, "start",
        ]
        self._run(prefix + pg_ctl, "pg_ctl start")

    def stop(self, remove: bool = True) -> None:
        """Stop the server, without waiting for clients to disconnect, and remove the folder if ``remove``."""
        if (self.data / "postmaster.pid").exists():
            command = self.run_as_owner() + [
                str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--mode", "fast", "--wait", "stop",
            ]
            try:
                self._run(command, "pg_ctl stop")
            except SetupError as error:
                print(f"dev.py: {error}", file=sys.stderr)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, command: list[str], step: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        raise SetupError(
            f"{step} failed with exit status {result.returncode}: {shlex.join(command)}\n"
            f"{result.stdout}{result.stderr}{log}".rstrip()
        )


def run_postgres_helper(action: str, folder: Path) -> int:
    """Start or stop a cluster in ``folder`` for .ci/run; ``start`` prints its URL on stdout."""
    if action == "start":
        if not folder.is_dir() or any(folder.iterdir()):
            raise SetupError(f"{folder} must be an existing empty folder; create one with mktemp -d.")
        bindir = find_postgres_bindir()
        if bindir is None:
            raise SetupError("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin.")
        cluster = PostgresCluster(folder, bindir)
        # Stopping needs the same binaries, whatever PATH contains by then.
        cluster.start()
        (cluster.folder / "bindir").write_text(str(bindir), encoding="utf-8")
        print(cluster.url)
        return 0

    bindir_file = folder / "bindir"
    if not bindir_file.exists():
        print(f"dev.py: no cluster started by 'dev.py postgres start' in {folder}; nothing to stop.", file=sys.stderr)
        return 0
    PostgresCluster(folder, Path(bindir_file.read_text(encoding="utf-8"))).stop(remove=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
