"""A Sphinx extension that shows the figures of the reliability tests: ``.. reliability-table::``.

The figures come from the JSON reports that ``pytest tests
--reliability-report=FILE`` writes (see tests/reliability_report.py), read
from the folder in the ``reliability_report_dir`` setting: build/reliability/
next to docs/, or the folder that BACKGROUND_TASK_RELIABILITY_DIR names.
``python3 dev.py test`` writes one report per Python and Django combination
and database there. Of several reports for the same database vendor, Python
and Django versions, only the newest counts, as for the conformance reports.

The directive renders one row per recorded scenario and report, sorted by
scenario and then database, and below it the reports it read. Without a
report it renders a notice with the command that writes one. The page that
contains the directive is read again at every build, because the reports may
have changed while the page did not.

:func:`render` builds the nodes without Sphinx, so tests can call it directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: The environment variable that overrides the folder of the reports.
DIR_VARIABLE = "BACKGROUND_TASK_RELIABILITY_DIR"

#: The commands that write a report, as the page and the notice give them.
REPORT_COMMANDS = (
    "python3 dev.py test",
    "pytest tests -m long --reliability-report=build/reliability/mine.json",
)

HEADERS = [
    "Scenario", "Database", "Python / Django", "Repetitions", "Tasks",
    "Lost", "Run twice", "Left locked", "Outcome", "Test",
]
WIDTHS = [6, 3, 3, 2, 2, 1, 1, 1, 2, 6]


@dataclass
class Report:
    """One reliability report file and its parsed JSON."""

    path: Path
    data: dict

    @property
    def vendor(self) -> str:
        return self.data["database"]["vendor"]

    @property
    def database(self) -> str:
        """The database's display name and server version, such as "PostgreSQL 15.4"."""
        database = self.data["database"]
        return f"{database.get('name') or self.vendor} {database.get('version', '')}".strip()

    @property
    def versions(self) -> str:
        return f"{self.data['python']} / {self.data['django']}"

    @property
    def finished(self) -> str:
        return self.data["finished"]

    @property
    def records(self) -> list[dict]:
        return self.data["records"]


@dataclass
class Row:
    """One table row: a record of one scenario, with the report it came from."""

    report: Report
    record: dict

    @property
    def sort_key(self) -> tuple:
        return (
            self.record["scenario"].casefold(),
            self.report.database.casefold(),
            self.report.versions,
            self.record["test"],
        )


def report_dir(default: Path) -> Path:
    """Return the folder of the reports: BACKGROUND_TASK_RELIABILITY_DIR if it is set, else ``default``."""
    return Path(os.environ.get(DIR_VARIABLE) or default)


def check_report(data: object) -> None:
    """Raise KeyError, TypeError or ValueError if ``data`` lacks a field that the table shows."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    for key in ("python", "django", "finished"):
        str(data[key])
    data["database"]["vendor"]  # noqa: B018 - checks the field exists
    if not isinstance(data["records"], list):
        raise TypeError("records is not a list")
    for record in data["records"]:
        for key in ("scenario", "test", "repetitions", "tasks", "lost", "run_twice", "left_locked", "outcome"):
            record[key]  # noqa: B018 - checks the field exists


def load_reports(folder: Path) -> tuple[list[Report], list[str]]:
    """Return the newest report of each vendor, Python and Django in ``folder``, and the files that could not be read."""
    newest: dict[tuple[str, str, str], Report] = {}
    unreadable: list[str] = []
    if not folder.is_dir():
        return [], []

    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            check_report(data)
        except (OSError, ValueError, KeyError, TypeError) as error:
            unreadable.append(f"{path}: {error.__class__.__name__}: {error}")
            continue
        report = Report(path, data)
        key = (report.vendor, str(data["python"]), str(data["django"]))
        current = newest.get(key)
        if current is None or report.finished > current.finished:
            newest[key] = report

    return [newest[key] for key in sorted(newest)], unreadable


def table_rows(reports: list[Report]) -> list[Row]:
    """Return a row per record of ``reports``, sorted by scenario, then database, Python and Django, then test."""
    rows = [Row(report, record) for report in reports for record in report.records]
    return sorted(rows, key=lambda row: row.sort_key)


# ---------------------------------------------------------------------------
# Nodes


def count_text(value: object) -> str:
    """Return a count with thousands separators: 10000 gives "10,000"."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def scenario_cell(record: dict) -> list[nodes.Node]:
    """Return the scenario's name, and the extra figures it recorded in a smaller line below."""
    cell: list[nodes.Node] = [nodes.paragraph(record["scenario"], record["scenario"])]
    details = record.get("details") or {}
    if details:
        text = ", ".join(f"{key.replace('_', ' ')}: {count_text(value)}" for key, value in details.items())
        cell.append(nodes.paragraph(text, text, classes=["reliability-details"]))
    return cell


def outcome_cell(outcome: str) -> list[nodes.Node]:
    badge = nodes.inline(outcome, outcome, classes=["spec-status", f"spec-status-{outcome}"])
    paragraph = nodes.paragraph()
    paragraph += badge
    return [paragraph]


def text_cell(text: str) -> list[nodes.Node]:
    return [nodes.paragraph(text, text)]


def literal_cell(text: str) -> list[nodes.Node]:
    paragraph = nodes.paragraph()
    paragraph += nodes.literal(text, text)
    return [paragraph]


def row_cells(row: Row) -> list[list[nodes.Node]]:
    """Return the cells of ``row`` in the order of HEADERS."""
    record = row.record
    return [
        scenario_cell(record),
        text_cell(row.report.database),
        text_cell(row.report.versions),
        text_cell(count_text(record["repetitions"])),
        text_cell(count_text(record["tasks"])),
        text_cell(count_text(record["lost"])),
        text_cell(count_text(record["run_twice"])),
        text_cell(count_text(record["left_locked"])),
        outcome_cell(str(record["outcome"])),
        literal_cell(record["test"]),
    ]


def table(rows: list[Row]) -> nodes.table:
    """Return the docutils table of ``rows`` under HEADERS."""
    result = nodes.table(classes=["spec-table", "reliability-table"])
    group = nodes.tgroup(cols=len(HEADERS))
    result += group
    for width in WIDTHS:
        group += nodes.colspec(colwidth=width)

    def row_node(cells: list[list[nodes.Node]]) -> nodes.row:
        node = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry.extend(cell)
            node += entry
        return node

    head = nodes.thead()
    head += row_node([text_cell(header) for header in HEADERS])
    group += head
    body = nodes.tbody()
    for row in rows:
        body += row_node(row_cells(row))
    group += body
    return result


def paragraph_with_literals(text: str, classes: list[str] | None = None) -> nodes.paragraph:
    """Return ``text`` as a paragraph in which each part between double backquotes is a literal."""
    paragraph = nodes.paragraph(classes=classes or [])
    for index, part in enumerate(text.split("``")):
        paragraph += nodes.literal(part, part) if index % 2 else nodes.Text(part)
    return paragraph


def no_report_notice(folder: Path, reports: list[Report]) -> nodes.admonition:
    """Return a notice that ``folder`` contains no report, or only reports without records."""
    found = (
        f"The reports in {folder} contain no records"
        if reports
        else f"No reliability report found in {folder}"
    )
    text = (
        f"{found}, so this page shows no figures. Run ``{REPORT_COMMANDS[0]}``, or "
        f"``{REPORT_COMMANDS[1]}``, and build the documentation again."
    )
    notice = nodes.admonition(classes=["reliability-no-report"])
    notice += nodes.title("No reliability report", "No reliability report")
    notice += paragraph_with_literals(text)
    return notice


def sources(reports: list[Report]) -> list[nodes.Node]:
    """Return a paragraph and a list naming each report read: what it ran on, when, and its file."""
    items = nodes.bullet_list(classes=["reliability-reports"])
    for report in reports:
        count = len(report.records)
        text = (
            f"{report.database}, Python {report.data['python']}, Django {report.data['django']}: "
            f"{count} record{'s' if count != 1 else ''}, finished {report.finished}, from "
        )
        paragraph = nodes.paragraph()
        paragraph += nodes.Text(text)
        paragraph += nodes.literal(report.path.name, report.path.name)
        item = nodes.list_item()
        item += paragraph
        items += item
    lead = "The figures come from the newest report of each Python and Django combination on each database:"
    return [nodes.paragraph(lead, lead), items]


def render(folder: Path) -> tuple[list[nodes.Node], list[str]]:
    """Return the nodes that show the reports in ``folder``, and the files that could not be read."""
    reports, unreadable = load_reports(folder)
    rows = table_rows(reports)
    result: list[nodes.Node] = []
    if rows:
        result.append(table(rows))
    else:
        result.append(no_report_notice(folder, reports))
    if reports:
        result.extend(sources(reports))
    return result, unreadable


# ---------------------------------------------------------------------------
# Sphinx


class ReliabilityTableDirective(SphinxDirective):
    """``.. reliability-table::`` takes no argument and renders the reports of ``reliability_report_dir``."""

    def run(self) -> list[nodes.Node]:
        docs = getattr(self.env, "reliability_docs", set())
        docs.add(self.env.docname)
        self.env.reliability_docs = docs

        folder = Path(self.config.reliability_report_dir)
        if not folder.is_absolute():
            folder = Path(self.env.app.confdir) / folder
        result, unreadable = render(folder)
        for message in unreadable:
            logger.warning("reliability report not read: %s", message, location=self.get_location())
        return result


def on_env_get_outdated(app, env, added, changed, removed) -> list[str]:
    """Read every page with the table again, since the reports may have changed."""
    docs = getattr(env, "reliability_docs", set())
    return sorted(doc for doc in docs if doc in env.found_docs)


def on_env_purge_doc(app, env, docname: str) -> None:
    getattr(env, "reliability_docs", set()).discard(docname)


def on_env_merge_info(app, env, docnames, other) -> None:
    env.reliability_docs = getattr(env, "reliability_docs", set()) | getattr(other, "reliability_docs", set())


def setup(app: Sphinx) -> dict:
    default = report_dir(Path(app.confdir).parent / "build" / "reliability")
    app.add_config_value("reliability_report_dir", str(default), "env", [str])
    app.add_directive("reliability-table", ReliabilityTableDirective)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("env-purge-doc", on_env_purge_doc)
    app.connect("env-merge-info", on_env_merge_info)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
