import os

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "benchmarks.project.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        if os.environ.get("BENCH_COUNT") == "1":
            from benchmarks.project.benchapp import counting

            counting.install()
