"""The demo's tasks, each doing real work on files of this repository.

``process_tasks`` imports this module because it is the ``tasks`` module of
an installed app. Every argument is a JSON value (paths travel as strings),
since the queue stores a call's arguments as JSON.
"""

import json
import logging
from pathlib import Path

from django.core.mail import send_mail

from background_task import background
from reports.results import load_reports, read_counter

logger = logging.getLogger(__name__)

#: How many runs of :func:`flaky_step` raise before one succeeds.
FLAKY_FAILURES = 2


def count_text(text: str) -> dict[str, int]:
    """Count the lines (as ``str.splitlines`` splits them), whitespace-separated words and characters of ``text``."""
    return {"lines": len(text.splitlines()), "words": len(text.split()), "characters": len(text)}


@background
def write_word_count(source: str, report: str) -> None:
    """Count the lines and words of the file ``source`` and write them to ``report`` as JSON."""
    counts = count_text(Path(source).read_text(encoding="utf-8"))

    report_path = Path(report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps({"source": source, **counts}, indent=2) + "\n", encoding="utf-8")
    logger.info("Counted %s: %d lines, %d words", source, counts["lines"], counts["words"])


@background(schedule=5)
def mail_summary(report_dir: str, recipient: str) -> None:
    """Mail ``recipient`` the word counts of every report in ``report_dir``.

    Scheduled 5 seconds after the call by default, so the word counts stored
    in the same moment are written first.
    """
    reports = load_reports(report_dir)
    if not reports:
        # Raising makes the queue retry later, when the reports may exist.
        raise FileNotFoundError(
            f"No word-count reports in {report_dir}; run the write_word_count tasks first."
        )

    lines = [f"{report['words']:>7} words {report['lines']:>6} lines  {report['source']}" for report in reports]
    total = sum(report["words"] for report in reports)
    body = "\n".join([f"Word counts of {len(reports)} documentation files:", "", *lines, "", f"{total:>7} words in all", ""])

    send_mail(f"Word counts of {len(reports)} documentation files", body, None, [recipient])
    logger.info("Mailed the summary of %d reports to %s", len(reports), recipient)


@background
def flaky_step(counter_file: str) -> None:
    """Raise on the first two runs and succeed on the third, counting runs in ``counter_file``.

    The counter lives in a file because each run may happen in a different
    worker process.
    """
    run = read_counter(counter_file) + 1
    Path(counter_file).write_text(f"{run}\n", encoding="utf-8")

    if run <= FLAKY_FAILURES:
        raise ConnectionError(f"Simulated outage on run {run}; run {FLAKY_FAILURES + 1} will succeed.")
    logger.info("Flaky step succeeded on run %d", run)
