"""The documentation's specification pages follow spec/ and the conformance reports with no other edit.

Each build here runs sphinx-build in a subprocess on a copy of docs/ and
spec/ in a temporary folder, so the tests can add rules and chapters, and
write reports, without touching the repository. The copy keeps only the
pages that docs/_ext generates or fills in, so the other pages' state does
not matter here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("furo")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Prints the rules that the extension reads from spec/, as JSON. It runs in a
#: subprocess, because importing the spec modules here would register their
#: tasks in this test process.
LIST_RULES = """
import json, os, sys
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "docs", "_ext")]
os.environ["DJANGO_SETTINGS_MODULE"] = "spec.settings"
import django
django.setup()
import spec_rules
from pathlib import Path
chapters, problems = spec_rules.read_spec(Path("spec").resolve())
print(json.dumps({
    "rules": [[rule.path.relative_to(Path.cwd()).as_posix(), rule.function, rule.id]
              for chapter in chapters for rule in chapter.rules],
    "problems": [problem.message for problem in problems],
}))
"""

#: The pages of docs/ that the tests build; all others are left out of the copy.
PAGES = ["specification/index.rst", "specification/deviations.rst", "reference/process_tasks.rst"]

INDEX = """\
Test site
=========

.. toctree::

   specification/index
   specification/deviations
   reference/process_tasks
"""

NEW_RULE = '''

@pytest.mark.rule(99)
def test_rule_added_for_the_docs_test():
    """A rule added to a spec module appears in its chapter with no other edit.

    It states ``nothing`` about the queue.
    """
'''

NEW_CHAPTER = '''"""Extra chapter.

A chapter that only this test adds, to show that a new module gets a page.
"""

import pytest

CHAPTER = 12


@pytest.mark.rule(1)
def test_first_rule_of_new_chapter():
    """The first rule of a new chapter is rule 12.1."""


@pytest.mark.rule(2)
@pytest.mark.xfail(strict=True, reason="not met yet, tracked for the docs test")
def test_known_shortcoming():
    """A rule marked as a strict expected failure is listed as a known deviation."""
    raise AssertionError("not met")
'''


def copy_site(folder: Path) -> tuple[Path, Path]:
    """Copy docs/ (the extension and the specification pages only) and spec/ into ``folder``; return both."""
    docs = folder / "docs"
    shutil.copytree(DOCS / "_ext", docs / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DOCS / "_static", docs / "_static")
    shutil.copy(DOCS / "conf.py", docs / "conf.py")
    for page in PAGES:
        (docs / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DOCS / page, docs / page)
    (docs / "index.rst").write_text(INDEX, encoding="utf-8")
    spec = folder / "spec"
    shutil.copytree(ROOT / "spec", spec, ignore=shutil.ignore_patterns("__pycache__"))
    return docs, spec


def build(docs: Path, out: Path, reports: Path) -> subprocess.CompletedProcess:
    """Build ``docs`` as HTML into ``out`` with warnings as errors, reading reports from ``reports``."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["BACKGROUND_TASK_CONFORMANCE_DIR"] = str(reports)
    # background_task comes from this checkout; spec comes from the copy, which conf.py puts first.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(docs), str(out)]
    result = subprocess.run(command, cwd=docs.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return result


def page_text(html_file: Path) -> str:
    """Return the visible text of a built page's article, with whitespace collapsed."""
    html = html_file.read_text(encoding="utf-8")
    article = re.search(r"<article[^>]*>(.*)</article>", html, re.S).group(1)
    text = re.sub(r"<[^>]+>", " ", article)
    return " ".join(text.replace("&#8212;", "\N{EM DASH}").split())


def sqlite_report(rules: dict[str, str]) -> dict:
    """Return a conformance report for SQLite with the given outcome per rule."""
    return {
        "format": 1,
        "implementation": {"name": "background_task", "version": "9.9.9"},
        "python": "3.11.0",
        "django": "5.2",
        "database": {"vendor": "sqlite", "name": "SQLite", "version": "3.99.0"},
        "started": "2030-01-01T00:00:00+00:00",
        "finished": "2030-01-01T00:01:00+00:00",
        "deselected": 0,
        "rules": {rule: {"outcome": outcome, "cases": {}} for rule, outcome in rules.items()},
    }


@pytest.fixture(scope="module")
def extended_site(tmp_path_factory):
    """A site built after adding rule 5.99 and chapter 12 to spec/, with an SQLite report only."""
    folder = tmp_path_factory.mktemp("extended")
    docs, spec = copy_site(folder)
    with (spec / "test_05_retries.py").open("a", encoding="utf-8") as module:
        module.write(NEW_RULE)
    (spec / "test_12_extra.py").write_text(NEW_CHAPTER, encoding="utf-8")

    reports = folder / "reports"
    reports.mkdir()
    older = sqlite_report({"5.1": "passed"})
    older["finished"] = "2029-01-01T00:00:00+00:00"
    (reports / "old.json").write_text(json.dumps(older), encoding="utf-8")
    newest = sqlite_report({"5.1": "failed", "5.2": "passed", "5.99": "passed", "12.1": "passed", "12.2": "xfailed"})
    (reports / "new.json").write_text(json.dumps(newest), encoding="utf-8")

    out = folder / "html"
    build(docs, out, reports)
    return out


@pytest.fixture(scope="module")
def unreported_site(tmp_path_factory):
    """A site built from an unchanged copy with no conformance report at all."""
    folder = tmp_path_factory.mktemp("unreported")
    docs, _ = copy_site(folder)
    out = folder / "html"
    build(docs, out, folder / "no-reports-here")
    return out


def test_added_rule_appears_in_its_chapter(extended_site):
    html = (extended_site / "specification/chapters/chapter-05.html").read_text(encoding="utf-8")
    text = page_text(extended_site / "specification/chapters/chapter-05.html")

    assert 'id="rule-5-99"' in html
    assert "Rule 5.99 \N{EM DASH} Rule added for the docs test" in text
    assert "A rule added to a spec module appears in its chapter with no other edit." in text
    assert "<code class=\"docutils literal notranslate\"><span class=\"pre\">nothing</span></code>" in html
    assert "test_rule_added_for_the_docs_test" in text
    assert "Source: spec/test_05_retries.py, lines" in text


def test_added_module_gets_a_chapter(extended_site):
    text = page_text(extended_site / "specification/chapters/chapter-12.html")
    assert "Chapter 12. Extra chapter" in text
    assert "A chapter that only this test adds" in text
    assert "Rule 12.1 \N{EM DASH} First rule of new chapter" in text

    summary = page_text(extended_site / "specification/index.html")
    assert "12. Extra chapter" in summary
    count = len(collected_rules())
    assert f"The specification has {count + 3} rules in 12 chapters." in summary


def test_statuses_come_from_newest_report(extended_site):
    text = page_text(extended_site / "specification/chapters/chapter-05.html")
    rule_1 = text.split("Rule 5.1 \N{EM DASH}")[1].split("Rule 5.2 \N{EM DASH}")[0]
    rule_3 = text.split("Rule 5.3 \N{EM DASH}")[1].split("Rule 5.4 \N{EM DASH}")[0]

    assert "SQLite: failed" in rule_1
    assert "SQLite: not run" in rule_3
    assert "PostgreSQL: no report" in rule_1
    assert "No conformance report found for PostgreSQL" in text

    summary = page_text(extended_site / "specification/index.html")
    assert "background_task 9.9.9 on Python 3.11.0, Django 5.2, SQLite 3.99.0" in summary
    assert "2030-01-01T00:01:00+00:00" in summary


def test_strict_xfail_listed_as_deviation(extended_site):
    text = page_text(extended_site / "specification/deviations.html")
    assert "1 known deviation:" in text
    assert "Rule 12.2" in text
    assert "not met yet, tracked for the docs test" in text
    assert "SQLite: expected failure" in text

    chapter = page_text(extended_site / "specification/chapters/chapter-12.html")
    assert "Known deviation not met yet, tracked for the docs test" in chapter


def test_no_report_says_so(unreported_site):
    summary = page_text(unreported_site / "specification/index.html")
    chapter = page_text(unreported_site / "specification/chapters/chapter-05.html")
    deviations = page_text(unreported_site / "specification/deviations.html")

    assert "No conformance report found for SQLite or PostgreSQL" in summary
    assert "No conformance report found for SQLite or PostgreSQL" in chapter
    assert "passed" not in chapter.split("Rule 5.1")[1].split("Rule 5.2")[0].replace("passed anyway", "")
    assert "SQLite: no report PostgreSQL: no report" in chapter
    assert "No rule is marked as an expected failure" in deviations


def test_state_diagram_links_rules(unreported_site):
    html = (unreported_site / "specification/index.html").read_text(encoding="utf-8")
    svg = re.search(r'<svg class="state-diagram".*?</svg>', html, re.S).group(0)
    links = re.findall(r'<a href="([^"]+)">', svg)
    assert "chapters/chapter-05.html#rule-5-1" in links
    assert "chapters/chapter-07.html#rule-7-4" in links
    assert len(links) == len(re.findall(r'class="edge"', svg))


def test_every_process_tasks_option_is_documented(unreported_site):
    from django.core.management import load_command_class
    from django.core.management.base import BaseCommand

    parser = load_command_class("background_task", "process_tasks").create_parser("manage.py", "process_tasks")
    common = {option for action in BaseCommand().create_parser("manage.py", "x")._actions for option in action.option_strings}
    own = [action for action in parser._actions if action.option_strings and not set(action.option_strings) & common]
    html = (unreported_site / "reference/process_tasks.html").read_text(encoding="utf-8")
    text = page_text(unreported_site / "reference/process_tasks.html")

    assert len(own) >= 5
    for action in own:
        for option in action.option_strings:
            assert f'id="cmdoption-process_tasks-{option.lstrip("-")}"' in html, option
        assert " ".join(action.help.split()) in text, action.help


_collected: list[set] = []


def collected_rules() -> set[tuple[str, str]]:
    """Return (file, function) for every test that ``pytest spec --collect-only`` finds."""
    if not _collected:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "spec.settings"}
        env.pop("BACKGROUND_TASK_DATABASE_URL", None)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "spec", "--collect-only", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        _collected.append({
            (line.split("::")[0], line.split("::")[1].split("[")[0])
            for line in result.stdout.splitlines() if line.startswith("spec/") and "::" in line
        })
    return _collected[0]


def test_extension_finds_every_collected_rule():
    """The rules the docs list are exactly the rule-marked tests that pytest collects from spec/."""
    env = dict(os.environ)
    env.pop("BACKGROUND_TASK_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", LIST_RULES], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    listed = {(path, function) for path, function, _ in found["rules"]}

    assert found["problems"] == []
    assert len(found["rules"]) == len(listed) == len(collected_rules())
    assert listed == collected_rules()


def test_reports_combine_across_versions(tmp_path):
    """A rule that fails under one Python and Django combination shows as failed for that database."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import spec_rules
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    older_django = sqlite_report({"5.1": "passed", "5.2": "passed"})
    newer_django = sqlite_report({"5.1": "failed", "5.2": "passed"})
    newer_django["django"] = "6.0"
    stale_newer_django = sqlite_report({"5.1": "passed", "5.2": "failed"})
    stale_newer_django["django"] = "6.0"
    stale_newer_django["finished"] = "2029-01-01T00:00:00+00:00"
    for name, report in [("a.json", older_django), ("b.json", newer_django), ("c.json", stale_newer_django)]:
        (tmp_path / name).write_text(json.dumps(report), encoding="utf-8")

    reports, unreadable = spec_rules.load_reports(tmp_path)

    assert unreadable == []
    assert len(reports["sqlite"].parts) == 2
    assert reports["sqlite"].outcome("5.1") == "failed"
    assert reports["sqlite"].outcome("5.2") == "passed"
    assert reports["sqlite"].outcome("5.3") is None
