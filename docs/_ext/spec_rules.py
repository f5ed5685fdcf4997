"""Read the rules of the specification from the spec/ modules, and the conformance reports.

This module does not import Sphinx, so the extension in ``spec_docs`` and
its tests share it. A spec module is a chapter: its ``CHAPTER`` number, its
docstring (first line the title, the rest the prose) and its tests. A test
function marked ``@pytest.mark.rule(N)`` is rule ``CHAPTER.N``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

#: The outcomes a report can give a rule, worst first. A rule with several
#: cases (parametrize) takes the worst outcome of its cases.
OUTCOMES = ("failed", "xpassed", "xfailed", "passed", "skipped")

#: The database vendors whose results are always shown, in this order, with
#: their display names. Reports of other vendors get a column after these.
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class Deviation:
    """An expected failure (``pytest.mark.xfail``) on a rule or on one of its cases."""

    reason: str
    strict: bool
    #: The parametrize case it applies to, or None when it marks the whole rule.
    case: str | None = None


@dataclass
class Rule:
    chapter: int
    number: int
    module: str
    function: str
    path: Path
    #: The cleaned docstring and the line of the file where it starts.
    doc: str
    doc_line: int
    #: The function's source, decorators included, and its first line in the file.
    source: str
    source_line: int
    deviations: list[Deviation] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.chapter}.{self.number}"

    @property
    def label(self) -> str:
        return rule_label(self.id)

    @property
    def title(self) -> str:
        """A short title from the function's name: test_retry_delay_formula gives "Retry delay formula"."""
        words = self.function.removeprefix("test_").replace("_", " ").strip()
        return words[:1].upper() + words[1:]

    @property
    def statement(self) -> str:
        """The docstring's first paragraph on one line, as pytest's failure report quotes it."""
        return " ".join(self.doc.split("\n\n")[0].split())


@dataclass
class Chapter:
    number: int
    module: str
    path: Path
    title: str
    #: The module docstring after its first line, and the file line where that starts.
    prose: str
    prose_line: int
    rules: list[Rule]

    @property
    def label(self) -> str:
        return f"chapter-{self.number}"

    @property
    def docname(self) -> str:
        return f"specification/chapters/chapter-{self.number:02d}"


@dataclass
class Problem:
    """Something about the spec modules that the docs cannot show correctly."""

    message: str
    path: Path
    line: int | None = None


def rule_label(rule_id: str) -> str:
    """Return the reST label of rule ``rule_id``: "5.3" gives "rule-5-3"."""
    return "rule-" + rule_id.strip().replace(".", "-")


def spec_module_names(spec_dir: Path) -> list[str]:
    """Return the dotted names of the spec modules in ``spec_dir``, sorted by file name."""
    package = spec_dir.name
    return [f"{package}.{path.stem}" for path in sorted(spec_dir.glob("test_*.py"))]


def rule_marks(function) -> list:
    """Return the pytest marks applied to ``function``, outermost last, as pytest stores them."""
    marks = getattr(function, "pytestmark", [])
    return marks if isinstance(marks, list) else [marks]


def deviations_of(marks: list) -> list[Deviation]:
    """Return the xfail marks among ``marks``, on the function and on its parametrize cases."""
    found = []
    for mark in marks:
        if mark.name == "xfail":
            if mark.args and mark.args[0] is False:
                continue
            found.append(Deviation(str(mark.kwargs.get("reason", "")), bool(mark.kwargs.get("strict", False))))
        elif mark.name == "parametrize" and len(mark.args) >= 2:
            ids = mark.kwargs.get("ids")
            for index, value in enumerate(mark.args[1]):
                for case_mark in getattr(value, "marks", ()):
                    if case_mark.name != "xfail" or (case_mark.args and case_mark.args[0] is False):
                        continue
                    case = getattr(value, "id", None)
                    if case is None and isinstance(ids, (list, tuple)) and index < len(ids):
                        case = ids[index]
                    found.append(
                        Deviation(
                            str(case_mark.kwargs.get("reason", "")),
                            bool(case_mark.kwargs.get("strict", False)),
                            str(case if case is not None else index),
                        )
                    )
    return found


def read_chapter(module_name: str) -> tuple[Chapter | None, list[Problem]]:
    """Import ``module_name`` and return its chapter, or None if it has no CHAPTER, with any problems."""
    module = importlib.import_module(module_name)
    path = Path(inspect.getsourcefile(module)).resolve()
    problems: list[Problem] = []
    chapter_number = getattr(module, "CHAPTER", None)
    if not isinstance(chapter_number, int):
        return None, [Problem(f"{module_name} has no integer CHAPTER, so it is not in the specification", path)]

    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    lines = path.read_text(encoding="utf-8").splitlines()

    docstring = inspect.cleandoc(ast.get_docstring(tree, clean=False) or "")
    title, _, prose = docstring.partition("\n")
    prose_line = 2 + len(prose) - len(prose.lstrip("\n"))
    if not title.strip():
        problems.append(Problem(f"{module_name} needs a docstring whose first line is the chapter's title", path, 1))

    rules = []
    for name, node in functions.items():
        if not name.startswith("test_"):
            continue
        function = getattr(module, name, None)
        numbers = [mark.args[0] for mark in rule_marks(function) if mark.name == "rule" and mark.args]
        if not numbers:
            problems.append(Problem(f"{module_name}.{name} has no @pytest.mark.rule(N)", path, node.lineno))
            continue
        doc_node = node.body[0] if node.body else None
        raw_doc = ast.get_docstring(node, clean=False)
        doc = inspect.cleandoc(raw_doc or "")
        doc_line = doc_node.lineno if raw_doc is not None else node.lineno
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
        source = "\n".join(lines[first - 1:node.end_lineno])
        rules.append(
            Rule(
                chapter_number, int(numbers[-1]), module_name, name, path, doc, doc_line,
                source, first, deviations_of(rule_marks(function)),
            )
        )

    rules.sort(key=lambda rule: rule.number)
    chapter = Chapter(chapter_number, module_name, path, title.strip().rstrip("."), prose.strip("\n"), prose_line, rules)
    return chapter, problems


def read_spec(spec_dir: Path) -> tuple[list[Chapter], list[Problem]]:
    """Read every spec module of ``spec_dir``; return the chapters by number and the problems found."""
    chapters: list[Chapter] = []
    problems: list[Problem] = []
    for module_name in spec_module_names(spec_dir):
        chapter, found = read_chapter(module_name)
        problems.extend(found)
        if chapter is not None:
            chapters.append(chapter)
    chapters.sort(key=lambda chapter: chapter.number)

    seen_chapters: dict[int, Chapter] = {}
    for chapter in chapters:
        other = seen_chapters.setdefault(chapter.number, chapter)
        if other is not chapter:
            problems.append(Problem(f"{chapter.module} and {other.module} both claim CHAPTER = {chapter.number}", chapter.path))
        seen_rules: dict[int, Rule] = {}
        for rule in chapter.rules:
            owner = seen_rules.setdefault(rule.number, rule)
            if owner is not rule:
                problems.append(
                    Problem(f"rule {rule.id} is claimed by {owner.function} and {rule.function}", rule.path, rule.source_line)
                )
    return chapters, problems


# ---------------------------------------------------------------------------
# Conformance reports


@dataclass
class Report:
    """One conformance report, as ``pytest spec --conformance-report=FILE`` writes it."""

    path: Path
    data: dict

    @property
    def vendor(self) -> str:
        return self.data["database"]["vendor"]

    @property
    def database_name(self) -> str:
        return DATABASES.get(self.vendor) or self.data["database"].get("name") or self.vendor

    @property
    def finished(self) -> str:
        return self.data.get("finished", "")

    def outcome(self, rule_id: str) -> str | None:
        """Return the rule's outcome in this report, or None if the run did not include it."""
        entry = self.data.get("rules", {}).get(rule_id)
        return entry["outcome"] if entry else None

    def describe(self) -> str:
        """Return one line naming what ran: implementation, Python, Django and database server."""
        data = self.data
        implementation = data["implementation"]
        database = data["database"]
        return (
            f"{implementation['name']} {implementation['version']} on Python {data['python']}, "
            f"Django {data['django']}, {database.get('name') or self.vendor} {database.get('version', '')}".rstrip()
        )


@dataclass
class CombinedReport:
    """The reports of one database, one per Python and Django combination, read as one.

    A rule shows its worst outcome among them, so a rule that fails on only
    one combination still shows as failed.
    """

    parts: list[Report]

    @property
    def vendor(self) -> str:
        return self.parts[0].vendor

    @property
    def database_name(self) -> str:
        return self.parts[0].database_name

    @property
    def finished(self) -> str:
        return max(part.finished for part in self.parts)

    def outcome(self, rule_id: str) -> str | None:
        """Return the rule's worst outcome among the parts, or None if none of them ran it."""
        outcomes = [outcome for part in self.parts if (outcome := part.outcome(rule_id)) is not None]
        return worst(outcomes) if outcomes else None


def load_reports(folder: Path) -> tuple[dict[str, CombinedReport], list[str]]:
    """Return the reports of each database vendor in ``folder``, and the files that could not be read.

    Of several reports for the same vendor, Python and Django versions, only
    the newest counts.
    """
    newest: dict[tuple[str, str, str], Report] = {}
    unreadable = []
    if not folder.is_dir():
        return {}, []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            report = Report(path, data)
            key = (report.vendor, data["python"], data["django"])
            finished = report.finished
            data["implementation"]["name"]  # noqa: B018 - checks the field exists
            if not isinstance(data.get("rules"), dict):
                raise KeyError("rules")
        except (OSError, ValueError, KeyError, TypeError) as error:
            unreadable.append(f"{path}: {error.__class__.__name__}: {error}")
            continue
        current = newest.get(key)
        if current is None or finished > current.finished:
            newest[key] = report

    combined: dict[str, CombinedReport] = {}
    for (vendor, _, _), report in sorted(newest.items()):
        combined.setdefault(vendor, CombinedReport([])).parts.append(report)
    return combined, unreadable


def ordered_vendors(reports: dict[str, Report]) -> list[str]:
    """Return the vendors to show: SQLite and PostgreSQL always, then any other with a report."""
    return list(DATABASES) + sorted(vendor for vendor in reports if vendor not in DATABASES)


def vendor_name(vendor: str, reports: dict[str, Report]) -> str:
    if vendor in reports:
        return reports[vendor].database_name
    return DATABASES.get(vendor, vendor)


def count_outcomes(outcomes: list[str | None]) -> dict[str, int]:
    """Count ``outcomes``; None, a rule that the report does not include, counts as "not run"."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = outcome or "not run"
        counts[key] = counts.get(key, 0) + 1
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    """Return counts as "10 passed, 1 expected failure", worst outcomes first."""
    names = {"xfailed": "expected failure", "xpassed": "unexpected pass"}
    parts = []
    for outcome in ("failed", "xpassed", "xfailed", "not run", "skipped", "passed"):
        number = counts.get(outcome, 0)
        if number:
            name = names.get(outcome, outcome)
            if number > 1 and outcome in names:
                name += "s"
            parts.append(f"{number} {name}")
    return ", ".join(parts) or "no rules"


def worst(outcomes: list[str]) -> str:
    """Return the worst of ``outcomes`` in the order of OUTCOMES."""
    return min(outcomes, key=OUTCOMES.index)


RULE_ID = re.compile(r"^\d+\.\d+$")
