"""The Reliability page shows the figures of the reliability reports, and a notice when there is none.

Most tests call the directive's rendering function on reports written to a
temporary folder. One test builds a one-page site with the extension in a
subprocess, to check the directive and the folder setting end to end.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = ROOT / "docs" / "_ext"
PAGE = ROOT / "docs" / "reliability.rst"

SITE_CONF = f"""
import sys
sys.path.insert(0, {str(EXTENSIONS)!r})
extensions = ["reliability_table"]
project = "Reliability test site"
"""

SITE_INDEX = """\
Reliability test site
=====================

.. reliability-table::
"""


@pytest.fixture(scope="module")
def extension():
    """Import docs/_ext/reliability_table.py."""
    sys.path.insert(0, str(EXTENSIONS))
    try:
        import reliability_table
    finally:
        sys.path.remove(str(EXTENSIONS))
    return reliability_table


def record(scenario: str, test: str, **counts: object) -> dict:
    """Return a record as tests/reliability_report.py writes it, with zero counts unless given."""
    figures = {"repetitions": 1, "tasks": 0, "lost": 0, "run_twice": 0, "left_locked": 0, "outcome": "passed"}
    figures.update(counts)
    details = figures.pop("details", {})
    return {"scenario": scenario, "test": test, **figures, "details": details}


def report(vendor: str, name: str, version: str, records: list[dict], finished: str = "2030-01-01T00:00:00+00:00") -> dict:
    """Return a reliability report of Python 3.11.7 and Django 5.2.19 on the given database."""
    return {
        "format": 1,
        "python": "3.11.7",
        "django": "5.2.19",
        "database": {"vendor": vendor, "name": name, "version": version},
        "finished": finished,
        "records": records,
    }


def write(folder: Path, name: str, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data), encoding="utf-8")


def table_rows(nodes_: list) -> list[list[str]]:
    """Return the text of each body cell of the first table in ``nodes_``, row by row."""
    from docutils import nodes

    tables = [node for node in nodes_ if isinstance(node, nodes.table)]
    assert tables, "no table rendered"
    body = next(iter(tables[0].findall(nodes.tbody)))
    return [[" ".join(entry.astext().split()) for entry in row.findall(nodes.entry)] for row in body.findall(nodes.row)]


def text_of(nodes_: list) -> str:
    return " ".join(" ".join(node.astext() for node in nodes_).split())


@pytest.fixture
def reports(tmp_path) -> Path:
    """A folder with an SQLite and a PostgreSQL report, an older PostgreSQL report and an unreadable file."""
    folder = tmp_path / "reliability"
    write(folder, "py311_django52-sqlite.json", report("sqlite", "SQLite", "3.40.1", [
        record("Workers drain the queue", "tests/test_load.py::test_drain", tasks=10_000),
        record("A killed worker", "tests/test_crash.py::test_kill", tasks=30, lost=1, outcome="failed",
               details={"runs_before_commit": 0}),
    ]))
    write(folder, "py311_django52-postgresql.json", report("postgresql", "PostgreSQL", "15.4", [
        record("Workers drain the queue", "tests/test_load.py::test_drain", tasks=10_000, run_twice=2, left_locked=3,
               repetitions=60),
    ]))
    write(folder, "old-postgresql.json", report("postgresql", "PostgreSQL", "15.4", [
        record("A stale scenario", "tests/test_old.py::test_old", tasks=5),
    ], finished="2029-01-01T00:00:00+00:00"))
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    return folder


def test_table_rows_sorted_with_figures(extension, reports):
    result, _ = extension.render(reports)

    rows = table_rows(result)
    assert [row[0].split(" runs before")[0] for row in rows] == [
        "A killed worker", "Workers drain the queue", "Workers drain the queue",
    ]
    assert rows[0] == [
        "A killed worker runs before commit: 0", "SQLite 3.40.1", "3.11.7 / 5.2.19",
        "1", "30", "1", "0", "0", "failed", "tests/test_crash.py::test_kill",
    ]
    assert rows[1][1:] == [
        "PostgreSQL 15.4", "3.11.7 / 5.2.19", "60", "10,000", "0", "2", "3", "passed", "tests/test_load.py::test_drain",
    ]
    assert rows[2][1] == "SQLite 3.40.1"


def test_test_id_is_literal(extension, reports):
    from docutils import nodes

    result, _ = extension.render(reports)

    literals = [node.astext() for node in result[0].findall(nodes.literal)]
    assert "tests/test_crash.py::test_kill" in literals


def test_older_report_of_same_versions_ignored(extension, reports):
    result, _ = extension.render(reports)

    assert "A stale scenario" not in text_of(result)
    assert "old-postgresql.json" not in text_of(result)
    assert "from py311_django52-postgresql.json" in text_of(result)


def test_unreadable_report_listed(extension, reports):
    _, unreadable = extension.render(reports)

    assert len(unreadable) == 1
    assert "broken.json: JSONDecodeError" in unreadable[0]


def test_report_missing_field_unreadable(extension, tmp_path):
    data = report("sqlite", "SQLite", "3.40.1", [record("A scenario", "tests/test_x.py::test_x")])
    del data["records"][0]["lost"]
    write(tmp_path, "partial.json", data)

    result, unreadable = extension.render(tmp_path)

    assert len(unreadable) == 1
    assert "KeyError" in unreadable[0]
    assert "No reliability report found" in text_of(result)


def test_no_report_shows_notice(extension, tmp_path):
    result, unreadable = extension.render(tmp_path / "missing")

    text = text_of(result)
    assert unreadable == []
    assert f"No reliability report found in {tmp_path / 'missing'}" in text
    assert "python3 dev.py test" in text
    assert "pytest tests -m long --reliability-report=build/reliability/mine.json" in text


def test_reports_without_records_notice(extension, tmp_path):
    write(tmp_path, "empty.json", report("sqlite", "SQLite", "3.40.1", []))

    result, _ = extension.render(tmp_path)

    text = text_of(result)
    assert f"The reports in {tmp_path} contain no records" in text
    assert "SQLite 3.40.1, Python 3.11.7, Django 5.2.19: 0 records" in text


def build_site(folder: Path, reports: Path) -> str:
    """Build a one-page site that holds the directive, reading ``reports``; return the page's text."""
    source = folder / "site"
    source.mkdir()
    (source / "conf.py").write_text(SITE_CONF, encoding="utf-8")
    (source / "index.rst").write_text(SITE_INDEX, encoding="utf-8")
    env = {**os.environ, "BACKGROUND_TASK_RELIABILITY_DIR": str(reports)}
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(folder / "html")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    html = (folder / "html" / "index.html").read_text(encoding="utf-8")
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_site_build_reads_report_folder(tmp_path):
    folder = tmp_path / "reports"
    write(folder, "mine.json", report("sqlite", "SQLite", "3.40.1", [
        record("Tasks stored in a transaction", "tests/test_t.py::test_commit", tasks=1_234),
    ]))

    text = build_site(tmp_path, folder)

    assert "Tasks stored in a transaction" in text
    assert "1,234" in text
    assert "tests/test_t.py::test_commit" in text
    assert "No reliability report" not in text


def recording_tests() -> list[tuple[str, str]]:
    """Return (file, function) for each function in tests/test_*.py that takes the ``reliability`` fixture."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(arg.arg == "reliability" for arg in node.args.args):
                found.append((path.name, node.name))
    return found


def test_page_describes_every_recording_test():
    """Every test that records figures is described on the Reliability page under its name."""
    page = PAGE.read_text(encoding="utf-8")
    tests = recording_tests()

    assert tests
    missing = [f"{file}::{function}" for file, function in tests if f"``{function}``" not in page]
    assert missing == [], f"docs/reliability.rst does not describe: {missing}"
