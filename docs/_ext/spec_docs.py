"""A Sphinx extension that turns the spec/ modules into the specification chapter.

At ``builder-inited`` it imports every ``spec/test_*.py`` module and writes
one page per chapter into ``specification/chapters/`` (a generated folder
that git ignores). Each page contains the module docstring as prose and one
section per rule, anchored as ``rule-5-3``. A new spec module or a new rule
function therefore shows up in the next build with no other edit.

Directives:

``.. spec-chapter:: MODULE``
    The chapter's prose and its conformance counts; used by the generated pages.
``.. spec-rule:: 5.3``
    A rule's statement, its status per database, its deviation if any, and its source.
``.. spec-summary::``
    A table of chapters with their conformance counts per database, and the reports read.
``.. spec-deviations::``
    Every rule marked as an expected failure, with its reason.

Role: ``:rule:`5.3``` links to rule 5.3 as "rule 5.3"; ``:rule:`this rule <5.3>``` sets the text.

The conformance reports are the JSON files that ``pytest spec
--conformance-report=FILE`` writes, read from ``spec_conformance_dir``. Each
database shows the worst outcome among its newest reports, one per Python and
Django combination.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import split_explicit_title

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spec_rules  # noqa: E402
from spec_rules import Chapter, CombinedReport, Rule  # noqa: E402

logger = logging.getLogger(__name__)

GENERATED_FOLDER = "specification/chapters"

STATUS_TEXT = {
    "passed": "passed",
    "failed": "failed",
    "xfailed": "expected failure",
    "xpassed": "unexpected pass",
    "skipped": "skipped",
    None: "not run",
}


class SpecState:
    """What the extension read at the start of the build: the chapters and the newest reports."""

    def __init__(self, chapters: list[Chapter], reports: dict[str, CombinedReport], spec_dir: Path, report_dir: Path) -> None:
        self.chapters = chapters
        self.reports = reports
        self.spec_dir = spec_dir
        self.report_dir = report_dir
        self.rules: dict[str, Rule] = {rule.id: rule for chapter in chapters for rule in chapter.rules}
        self.by_module = {chapter.module: chapter for chapter in chapters}

    def vendors(self) -> list[str]:
        return spec_rules.ordered_vendors(self.reports)

    def vendor_name(self, vendor: str) -> str:
        return spec_rules.vendor_name(vendor, self.reports)


def state_of(app: Sphinx) -> SpecState:
    return app.spec_state  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Generated pages


def chapter_page(chapter: Chapter, spec_root: Path) -> str:
    """Return the reST of ``chapter``'s page."""
    source = chapter.path.relative_to(spec_root) if chapter.path.is_relative_to(spec_root) else chapter.path
    title = f"Chapter {chapter.number}. {chapter.title}"
    lines = [
        f".. This page is generated from {source} by docs/_ext/spec_docs.py at every build. Do not edit it.",
        "",
        f".. _{chapter.label}:",
        "",
        "=" * len(title),
        title,
        "=" * len(title),
        "",
        f".. spec-chapter:: {chapter.module}",
        "",
    ]
    for rule in chapter.rules:
        heading = f"Rule {rule.id} \N{EM DASH} {rule.title}"
        lines += [f".. _{rule.label}:", "", heading, "-" * len(heading), "", f".. spec-rule:: {rule.id}", ""]
    return "\n".join(lines)


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already contains it, so Sphinx rereads only changed pages."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def on_builder_inited(app: Sphinx) -> None:
    spec_dir = Path(app.config.spec_dir).resolve()
    report_dir = Path(app.config.spec_conformance_dir).resolve()
    if str(spec_dir.parent) not in sys.path:
        sys.path.insert(0, str(spec_dir.parent))

    chapters, problems = spec_rules.read_spec(spec_dir)
    for problem in problems:
        logger.warning(problem.message, location=(str(problem.path), problem.line), type="spec", subtype="rules")

    reports, unreadable = spec_rules.load_reports(report_dir)
    for message in unreadable:
        logger.warning("conformance report not read: %s", message, type="spec", subtype="report")

    app.spec_state = SpecState(chapters, reports, spec_dir, report_dir)  # type: ignore[attr-defined]

    folder = Path(app.srcdir) / GENERATED_FOLDER
    pages = {}
    for chapter in chapters:
        pages[folder / f"chapter-{chapter.number:02d}.rst"] = chapter_page(chapter, spec_dir.parent)
    for path, text in pages.items():
        write_if_changed(path, text)
    # A chapter whose module was removed or renumbered loses its page.
    if folder.is_dir():
        for stale in folder.glob("*.rst"):
            if stale not in pages:
                stale.unlink()


def on_env_get_outdated(app, env, added, changed, removed) -> list[str]:
    """Reread every page that shows conformance statuses, since the reports may have changed."""
    docs = getattr(env, "spec_status_docs", set())
    return sorted(doc for doc in docs if doc in env.found_docs)


def on_env_purge_doc(app, env, docname: str) -> None:
    getattr(env, "spec_status_docs", set()).discard(docname)


def on_env_merge_info(app, env, docnames, other) -> None:
    if not hasattr(env, "spec_status_docs"):
        env.spec_status_docs = set()
    env.spec_status_docs |= getattr(other, "spec_status_docs", set())


# ---------------------------------------------------------------------------
# Nodes


class details(nodes.General, nodes.Element):
    """A collapsible block: HTML's <details>, plain content elsewhere."""


class details_summary(nodes.General, nodes.TextElement):
    """The always visible line of a details block."""


def visit_details_html(self, node: details) -> None:
    self.body.append(self.starttag(node, "details"))


def depart_details_html(self, node: details) -> None:
    self.body.append("</details>\n")


def visit_summary_html(self, node: details_summary) -> None:
    self.body.append(self.starttag(node, "summary", suffix=""))


def depart_summary_html(self, node: details_summary) -> None:
    self.body.append("</summary>\n")


def visit_plain(self, node) -> None:
    pass


def depart_plain(self, node) -> None:
    pass


# ---------------------------------------------------------------------------
# Helpers that build nodes


def rule_reference(rule_id: str, text: str | None = None) -> addnodes.pending_xref:
    """Return a cross-reference to rule ``rule_id``; an unknown rule warns when references are resolved."""
    text = text or f"rule {rule_id}"
    reference = addnodes.pending_xref(
        "", refdomain="std", reftype="ref", reftarget=spec_rules.rule_label(rule_id),
        refexplicit=True, refwarn=True,
    )
    reference += nodes.inline(text, text, classes=["spec-rule-ref"])
    return reference


def chapter_reference(chapter: Chapter) -> addnodes.pending_xref:
    text = f"{chapter.number}. {chapter.title}"
    reference = addnodes.pending_xref(
        "", refdomain="std", reftype="ref", reftarget=chapter.label, refexplicit=True, refwarn=True,
    )
    reference += nodes.inline(text, text)
    return reference


def status_badge(vendor_name: str, outcome: str | None, have_report: bool) -> nodes.inline:
    """Return "SQLite: passed" as an inline node whose class names the outcome."""
    if not have_report:
        text, key = f"{vendor_name}: no report", "none"
    else:
        text, key = f"{vendor_name}: {STATUS_TEXT[outcome]}", outcome or "notrun"
    return nodes.inline(text, text, classes=["spec-status", f"spec-status-{key}"])


def counts_cell(counts: dict[str, int]) -> nodes.inline:
    text = spec_rules.describe_counts(counts)
    worst = next((key for key in ("failed", "xpassed", "xfailed", "not run") if counts.get(key)), "passed")
    return nodes.inline(text, text, classes=["spec-counts", f"spec-status-{worst.replace(' ', '')}"])


def table(headers: list[str], rows: list[list[nodes.Node | str]], widths: list[int] | None = None) -> nodes.table:
    """Return a docutils table with ``headers`` and ``rows``; a cell is a node or a string."""
    result = nodes.table(classes=["spec-table"])
    group = nodes.tgroup(cols=len(headers))
    result += group
    for width in widths or [1] * len(headers):
        group += nodes.colspec(colwidth=width)

    def row_of(cells) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += nodes.Text(cell) if isinstance(cell, str) else cell
            entry += paragraph
            row += entry
        return row

    head = nodes.thead()
    head += row_of(headers)
    group += head
    body = nodes.tbody()
    for cells in rows:
        body += row_of(cells)
    group += body
    return result


def no_report_notice(state: SpecState, missing: list[str]) -> nodes.Node:
    """Return a plain notice that no report was found for the ``missing`` vendors."""
    names = " or ".join(state.vendor_name(vendor) for vendor in missing)
    text = (
        f"No conformance report found for {names} in {state.report_dir}, so this page shows no "
        f"results for it. Run ``python3 dev.py test``, or "
        f"``python -m pytest spec --conformance-report=build/conformance/NAME.json`` with that database, "
        f"and build the documentation again."
    )
    notice = nodes.admonition(classes=["spec-no-report"])
    notice += nodes.title("No conformance report", "No conformance report")
    paragraph = nodes.paragraph()
    for index, part in enumerate(text.split("``")):
        paragraph += nodes.literal(part, part) if index % 2 else nodes.Text(part)
    notice += paragraph
    return notice


class StatusDirective(SphinxDirective):
    """A directive whose output depends on the conformance reports, so its page is reread each build."""

    def note_status_page(self) -> None:
        if not hasattr(self.env, "spec_status_docs"):
            self.env.spec_status_docs = set()
        self.env.spec_status_docs.add(self.env.docname)

    def parse_lines(self, text: str, path: Path, first_line: int, into: nodes.Element) -> None:
        """Parse ``text`` as reST into ``into``; its messages name ``path`` and the line in it."""
        lines = StringList()
        for offset, line in enumerate(text.splitlines()):
            lines.append(line, str(path), first_line - 1 + offset)
        self.state.nested_parse(lines, 0, into)
        self.env.note_dependency(str(path))

    def missing_vendors(self) -> list[str]:
        state = state_of(self.env.app)
        return [vendor for vendor in state.vendors() if vendor not in state.reports]


class SpecChapterDirective(StatusDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.note_status_page()
        state = state_of(self.env.app)
        chapter = state.by_module.get(self.arguments[0])
        if chapter is None:
            logger.warning("no spec chapter in module %s", self.arguments[0], location=self.get_location())
            return []
        container = nodes.container(classes=["spec-chapter"])
        self.parse_lines(chapter.prose, chapter.path, chapter.prose_line, container)

        summary = nodes.paragraph(classes=["spec-chapter-status"])
        summary += nodes.strong("Conformance: ", "Conformance: ")
        parts = []
        for vendor in state.vendors():
            name = state.vendor_name(vendor)
            report = state.reports.get(vendor)
            if report is None:
                parts.append(status_badge(name, None, False))
                continue
            counts = spec_rules.count_outcomes([report.outcome(rule.id) for rule in chapter.rules])
            cell = counts_cell(counts)
            cell.insert(0, nodes.Text(f"{name}: "))
            parts.append(cell)
        for index, part in enumerate(parts):
            if index:
                summary += nodes.Text("; ")
            summary += part
        text = f" ({len(chapter.rules)} rule{'s' if len(chapter.rules) != 1 else ''})"
        summary += nodes.Text(text)
        result = [container, summary]
        missing = self.missing_vendors()
        if missing:
            result.append(no_report_notice(state, missing))
        return result


class SpecRuleDirective(StatusDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.note_status_page()
        state = state_of(self.env.app)
        rule = state.rules.get(self.arguments[0])
        if rule is None:
            logger.warning("no rule %s in the specification", self.arguments[0], location=self.get_location())
            return []

        result = nodes.container(classes=["spec-rule"])
        statement = nodes.container(classes=["spec-rule-statement"])
        self.parse_lines(rule.doc, rule.path, rule.doc_line, statement)
        result += statement

        statuses = nodes.paragraph(classes=["spec-rule-statuses"])
        for index, vendor in enumerate(state.vendors()):
            report = state.reports.get(vendor)
            if index:
                statuses += nodes.Text(" ")
            statuses += status_badge(state.vendor_name(vendor), report.outcome(rule.id) if report else None, report is not None)
        result += statuses

        for deviation in rule.deviations:
            note = nodes.admonition(classes=["spec-deviation"])
            title = "Known deviation" + (f" (case {deviation.case})" if deviation.case else "")
            note += nodes.title(title, title)
            reason = deviation.reason or "No reason given."
            note += nodes.paragraph(reason, reason)
            result += note

        path = rule.path.relative_to(state.spec_dir.parent)
        last = rule.source_line + rule.source.count("\n")
        block = details(classes=["spec-source"])
        summary_text = f"Source: {path.as_posix()}, lines {rule.source_line}\N{EN DASH}{last}"
        block += details_summary(summary_text, summary_text)
        code = nodes.literal_block(rule.source, rule.source, language="python", linenos=True)
        code["highlight_args"] = {"linenostart": rule.source_line}
        block += code
        result += block
        return [result]


class SpecSummaryDirective(StatusDirective):
    """The chapter table with counts per database, and the reports it comes from."""

    def run(self) -> list[nodes.Node]:
        self.note_status_page()
        state = state_of(self.env.app)
        vendors = state.vendors()
        total_rules = sum(len(chapter.rules) for chapter in state.chapters)

        intro = nodes.paragraph(
            "", f"The specification has {total_rules} rules in {len(state.chapters)} chapters.",
            classes=["spec-rule-count"],
        )
        headers = ["Chapter", "Rules"] + [state.vendor_name(vendor) for vendor in vendors]
        rows = []
        totals: dict[str, list[str | None]] = {vendor: [] for vendor in vendors}
        for chapter in state.chapters:
            row: list = [chapter_reference(chapter), str(len(chapter.rules))]
            for vendor in vendors:
                report = state.reports.get(vendor)
                if report is None:
                    row.append(status_badge(state.vendor_name(vendor), None, False).astext().split(": ", 1)[1])
                    continue
                outcomes = [report.outcome(rule.id) for rule in chapter.rules]
                totals[vendor].extend(outcomes)
                row.append(counts_cell(spec_rules.count_outcomes(outcomes)))
            rows.append(row)
        total_row: list = [nodes.strong("All chapters", "All chapters"), str(total_rules)]
        for vendor in vendors:
            if vendor in state.reports:
                total_row.append(counts_cell(spec_rules.count_outcomes(totals[vendor])))
            else:
                total_row.append("no report")
        rows.append(total_row)
        result: list[nodes.Node] = [intro, table(headers, rows, [4, 1] + [3] * len(vendors))]

        if state.reports:
            sources = nodes.bullet_list(classes=["spec-reports"])
            for vendor in vendors:
                combined = state.reports.get(vendor)
                if combined is None:
                    continue
                for report in combined.parts:
                    item = nodes.list_item()
                    paragraph = nodes.paragraph()
                    paragraph += nodes.strong(f"{report.database_name}: ", f"{report.database_name}: ")
                    text = f"{report.describe()}; finished {report.finished}; from "
                    paragraph += nodes.Text(text)
                    paragraph += nodes.literal(report.path.name, report.path.name)
                    if report.data.get("deselected"):
                        paragraph += nodes.Text(f" ({report.data['deselected']} tests deselected in that run)")
                    item += paragraph
                    sources += item
            lead = nodes.paragraph(
                "",
                "The results come from the newest report of each Python and Django combination "
                "on each database, and a rule shows its worst outcome among them:",
            )
            result += [lead, sources]
        missing = self.missing_vendors()
        if missing:
            result.append(no_report_notice(state, missing))
        return result


class SpecDeviationsDirective(StatusDirective):
    """Every rule or case marked as an expected failure, with its reason and its status."""

    def run(self) -> list[nodes.Node]:
        self.note_status_page()
        state = state_of(self.env.app)
        rows = []
        for rule in state.rules.values():
            for deviation in rule.deviations:
                if not deviation.strict:
                    logger.warning(
                        "rule %s is marked xfail without strict=True; a known deviation must be strict, "
                        "so that pytest reports the rule once the implementation meets it",
                        rule.id, location=(str(rule.path), rule.source_line),
                    )
                if not deviation.reason:
                    logger.warning(
                        "rule %s is marked xfail without a reason", rule.id,
                        location=(str(rule.path), rule.source_line),
                    )
                where = nodes.inline()
                where += rule_reference(rule.id, f"Rule {rule.id}")
                if deviation.case:
                    where += nodes.Text(f" [{deviation.case}]")
                statuses = nodes.inline()
                for index, vendor in enumerate(state.vendors()):
                    report = state.reports.get(vendor)
                    if index:
                        statuses += nodes.Text(" ")
                    outcome = report.outcome(rule.id) if report else None
                    statuses += status_badge(state.vendor_name(vendor), outcome, report is not None)
                rows.append([where, rule.title, deviation.reason or "No reason given.", statuses])

        if not rows:
            text = (
                "No rule is marked as an expected failure: the implementation is meant to meet every "
                "rule of the specification."
            )
            return [nodes.paragraph(text, text, classes=["spec-no-deviations"])]
        count = f"{len(rows)} known deviation{'s' if len(rows) != 1 else ''}:"
        return [nodes.paragraph(count, count), table(["Rule", "Title", "Reason", "Status"], rows, [2, 3, 6, 4])]


def rule_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``:rule:`5.3``` links to rule 5.3; ``:rule:`the limit <5.3>``` with other text."""
    has_title, title, target = split_explicit_title(text)
    target = target.strip()
    if not spec_rules.RULE_ID.match(target):
        message = inliner.reporter.error(f"a rule is named CHAPTER.N, as in 5.3; got {target!r}", line=lineno)
        problem = inliner.problematic(rawtext, rawtext, message)
        return [problem], [message]
    return [rule_reference(target, title if has_title else None)], []


def setup(app: Sphinx) -> dict:
    confdir = Path(app.confdir)
    app.add_config_value("spec_dir", str(confdir.parent / "spec"), "env", [str])
    app.add_config_value("spec_conformance_dir", str(confdir.parent / "build" / "conformance"), "env", [str])

    app.add_node(
        details,
        html=(visit_details_html, depart_details_html),
        latex=(visit_plain, depart_plain), text=(visit_plain, depart_plain),
        man=(visit_plain, depart_plain), texinfo=(visit_plain, depart_plain),
    )
    app.add_node(
        details_summary,
        html=(visit_summary_html, depart_summary_html),
        latex=(visit_plain, depart_plain), text=(visit_plain, depart_plain),
        man=(visit_plain, depart_plain), texinfo=(visit_plain, depart_plain),
    )
    app.add_directive("spec-chapter", SpecChapterDirective)
    app.add_directive("spec-rule", SpecRuleDirective)
    app.add_directive("spec-summary", SpecSummaryDirective)
    app.add_directive("spec-deviations", SpecDeviationsDirective)
    app.add_role("rule", rule_role)
    app.add_css_file("spec.css")

    app.connect("builder-inited", on_builder_inited)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("env-purge-doc", on_env_purge_doc)
    app.connect("env-merge-info", on_env_merge_info)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
