from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from background_task.models import Task
from reports.results import load_mail, load_reports, read_counter


def display_path(path: str) -> str:
    """Return ``path`` relative to the repository root when it lies inside it."""
    repository_root = settings.BASE_DIR.parent
    try:
        return str(Path(path).relative_to(repository_root))
    except ValueError:
        return path


class Command(BaseCommand):
    help = "Print what the demo's tasks did: reports written, mails sent, and tasks still queued or failed."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--check", action="store_true",
            help="Exit with status 1 unless reports and a mail exist and no task is left queued or failed.",
        )

    def handle(self, *args, check: bool, **options) -> None:
        reports = load_reports(settings.REPORTS_DIR)
        self.stdout.write(f"Reports written: {len(reports)} in {settings.REPORTS_DIR}")
        for report in reports:
            self.stdout.write(
                f"  {report['words']:>7} words {report['lines']:>6} lines  {display_path(report['source'])}"
            )

        mails = load_mail(settings.MAIL_DIR)
        self.stdout.write(f"Mails sent: {len(mails)} in {settings.MAIL_DIR}")
        for message in mails:
            self.stdout.write(f"  to {message['To']}: {message['Subject']}")

        runs = read_counter(settings.FLAKY_COUNTER_FILE)
        self.stdout.write(f"Flaky task runs: {runs}")

        queued = list(Task.objects.filter(failed_at__isnull=True).order_by("run_at", "id"))
        self.stdout.write(f"Tasks left in the queue: {len(queued)}")
        for task in queued:
            self.stdout.write(f"  {task} due at {task.run_at:%H:%M:%S}, {task.attempts} failed attempts so far")

        failed = list(Task.objects.failed().order_by("id"))
        self.stdout.write(f"Tasks failed for good: {len(failed)}")
        for task in failed:
            last_line = (task.last_error.strip().splitlines() or [""])[-1]
            self.stdout.write(f"  {task} after {task.attempts} attempts: {last_line}")

        if check:
            problems = []
            if not reports:
                problems.append("no report was written")
            if not mails:
                problems.append("no mail was sent")
            if queued:
                problems.append(f"{len(queued)} tasks are still queued")
            if failed:
                problems.append(f"{len(failed)} tasks failed")
            if problems:
                raise CommandError(
                    "The demo did not finish: " + ", ".join(problems) + ". "
                    "Run process_tasks with a longer --duration, or read the worker's log above."
                )
            self.stdout.write("The demo finished: every task ran and the queue is empty.")
