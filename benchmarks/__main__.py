"""``python -m benchmarks run``: measure the queue and compare it with the database's own limit."""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys

from benchmarks import databases, measures, report
from benchmarks.runner import Sizes, measure_database, progress


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the benchmarks and print a table of medians")
    run.add_argument("--quick", action="store_true", help="small sizes and one repeat, to check that it works")
    run.add_argument("--databases", default="sqlite,postgresql",
                     help="comma-separated: sqlite, postgresql (default: both)")
    run.add_argument("--repeat", type=int, help="times each throughput figure is measured (default 3, quick 1)")
    run.add_argument("--tasks", type=int, help="tasks per drain and enqueue measurement (default 5000, quick 200)")
    run.add_argument("--memory-tasks", type=int, help="tasks in the memory measurement (default 100000, quick 500)")
    run.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    run.add_argument("--postgres-url", metavar="URL",
                     help="a PostgreSQL server to use (the benchmark creates and drops a database on it); "
                          "without it a throw-away server is started on a unix socket")
    options = parser.parse_args(argv)
    options.databases = [name.strip() for name in options.databases.split(",") if name.strip()]
    unknown = set(options.databases) - {"sqlite", "postgresql"}
    if unknown or not options.databases:
        parser.error(f"--databases takes sqlite and/or postgresql; got {','.join(sorted(unknown)) or 'nothing'}")
    for name in ("repeat", "tasks", "memory_tasks"):
        value = getattr(options, name)
        if value is not None and value < (2 if name != "repeat" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least {2 if name != 'repeat' else 1}; got {value}")
    return options


def machine() -> dict:
    import django

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "django": django.get_version(),
    }


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        return run(options)
    except Exception as error:  # setup problems: a bad URL, no server, a failed worker
        if error.__class__.__name__ not in _REPORTED:
            raise
        print(f"benchmarks: {error}", file=sys.stderr)
        return 1


#: Errors shown as one message instead of a traceback: a bad --postgres-url,
#: an unreachable server, no PostgreSQL binaries, or a worker or probe that failed.
_REPORTED = {"ValueError", "OperationalError", "SetupError", "RuntimeError"}


def run(options: argparse.Namespace) -> int:
    sizes = Sizes.quick() if options.quick else Sizes()
    for name in ("repeat", "tasks", "memory_tasks"):
        if getattr(options, name) is not None:
            setattr(sizes, name, getattr(options, name))

    folder = databases.make_temp_dir()
    results = {}
    try:
        for name in options.databases:
            target = _open_target(name, folder, options.postgres_url)
            try:
                progress(target.label, f"measuring in {folder}")
                results[name] = measure_database(measures.Context(target, folder), sizes)
            finally:
                target.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    for result in results.values():
        result["figures"] = report.ratios(result["measurements"])
    verdicts = report.evaluate(results)
    document = {"machine": machine(), "sizes": vars(sizes), "quick": options.quick,
                "results": results, "targets": verdicts}
    if options.quick:
        print(f"Quick run ({sizes.tasks} tasks, {sizes.repeat} repeat): it checks that the benchmark works; "
              "its figures are not comparable with a full run's.\n")
    print(report.table(results, verdicts))
    if options.json:
        report.write_json(options.json, document)
        print(f"\nJSON written to {options.json}")
    return 0


def _open_target(name: str, folder, postgres_url: str | None):
    if name == "sqlite":
        return databases.SqliteTarget(folder)
    if postgres_url:
        return databases.PostgresTarget(postgres_url)
    url, cluster = databases.start_postgres()
    try:
        return databases.PostgresTarget(url, cluster)
    except BaseException:
        cluster.stop()
        raise


if __name__ == "__main__":
    sys.exit(main())
