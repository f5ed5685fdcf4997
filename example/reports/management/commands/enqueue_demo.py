from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from reports.tasks import FLAKY_FAILURES, flaky_step, mail_summary, write_word_count

#: Documentation files of the repository that get a word count, relative to its root.
DOCUMENTATION_PATTERNS = ["*.rst", "*.md", "docs/*.rst", "docs/*.md", "example/*.rst", "example/*.md"]


def documentation_files(root: Path) -> list[Path]:
    """Return the files under ``root`` that match DOCUMENTATION_PATTERNS, sorted by path."""
    found = {path for pattern in DOCUMENTATION_PATTERNS for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def report_path(root: Path, source: Path) -> Path:
    """Return where the report of ``source`` goes: docs/index.rst gives docs__index.rst.json."""
    name = "__".join(source.relative_to(root).parts)
    return settings.REPORTS_DIR / f"{name}.json"


class Command(BaseCommand):
    help = (
        "Store the demo's tasks: a word count of each documentation file, a summary mail "
        f"5 seconds later, and a task that fails {FLAKY_FAILURES} times before it succeeds."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--source-root", type=Path, default=settings.BASE_DIR.parent,
            help="Folder whose documentation files are counted (default: the repository root).",
        )
        parser.add_argument(
            "--recipient", default="you@example.com",
            help="Address the summary mail is sent to (default: you@example.com).",
        )

    def handle(self, *args, source_root: Path, recipient: str, **options) -> None:
        root = source_root.resolve()
        if not root.is_dir():
            raise CommandError(f"--source-root {root} is not a folder. Pass the repository's root folder.")
        sources = documentation_files(root)
        if not sources:
            raise CommandError(
                f"No documentation files in {root} (looked for {', '.join(DOCUMENTATION_PATTERNS)}). "
                "Pass --source-root with the repository's root folder."
            )

        for source in sources:
            task = write_word_count(str(source), str(report_path(root, source)))
            self.stdout.write(f"Stored task {task.pk}: count the words of {source.relative_to(root)}")

        task = mail_summary(str(settings.REPORTS_DIR), recipient)
        self.stdout.write(f"Stored task {task.pk}: mail the summary to {recipient}, due at {task.run_at:%H:%M:%S}")

        # A fresh counter makes the flaky task fail again even if the demo ran before.
        settings.FLAKY_COUNTER_FILE.write_text("0\n", encoding="utf-8")
        task = flaky_step(str(settings.FLAKY_COUNTER_FILE))
        self.stdout.write(
            f"Stored task {task.pk}: fail {FLAKY_FAILURES} times, retried after 6 s and then 21 s, then succeed"
        )
