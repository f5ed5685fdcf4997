"""Summaries, targets, the printed table and the JSON document."""

import json
import statistics

#: (database, figure, comparison, threshold, wording). A figure is a key of
#: the database's "figures"; the comparison is ">=" or "<=".
TARGETS = [
    ("sqlite", "drain_1_vs_limit", ">=", 0.75, "one worker drains at >= 75 % of the limit"),
    ("postgresql", "drain_1_vs_limit", ">=", 0.75, "one worker drains at >= 75 % of the limit"),
    ("postgresql", "drain_4_vs_drain_1", ">=", 2.5, "4 workers drain >= 2.5x one worker"),
    ("postgresql", "drain_duplicates", "<=", 0, "no task runs twice with 2 or 4 workers"),
    ("sqlite", "deep_vs_empty", ">=", 0.90, "deep table (future + failed rows): drain within 10 % of empty"),
    ("postgresql", "deep_vs_empty", ">=", 0.90, "deep table (future + failed rows): drain within 10 % of empty"),
    ("sqlite", "enqueue_vs_insert", ">=", 0.80, "enqueue in autocommit >= 80 % of a raw INSERT + commit"),
    ("postgresql", "enqueue_vs_insert", ">=", 0.80, "enqueue in autocommit >= 80 % of a raw INSERT + commit"),
    ("postgresql", "pickup_default_sleep_ms", "<=", 50, "idle worker at the default --sleep starts a new task within 50 ms (median)"),
    ("sqlite", "memory_growth_mb", "<=", 5, "worker RSS grows < 5 MB over the memory run, DEBUG = True"),
    ("postgresql", "memory_growth_mb", "<=", 5, "worker RSS grows < 5 MB over the memory run, DEBUG = True"),
]


def summary(samples: list[float], unit: str) -> dict:
    return {
        "unit": unit,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def ratios(measurements: dict) -> dict:
    """Return the figures the targets compare, from the medians of one database's measurements."""
    def median(name: str) -> float | None:
        entry = measurements.get(name)
        return entry["median"] if entry else None

    def ratio(top: str, bottom: str) -> float | None:
        a, b = median(top), median(bottom)
        return a / b if a is not None and b else None

    figures = {
        "drain_1_vs_limit": ratio("drain_1_worker", "limit"),
        "drain_2_vs_limit": ratio("drain_2_workers", "limit"),
        "drain_4_vs_limit": ratio("drain_4_workers", "limit"),
        "drain_2_vs_drain_1": ratio("drain_2_workers", "drain_1_worker"),
        "drain_4_vs_drain_1": ratio("drain_4_workers", "drain_1_worker"),
        "deep_vs_empty": ratio("drain_1_worker_deep", "drain_1_worker"),
        "deep_drain_vs_limit": ratio("drain_1_worker_deep", "limit_deep"),
        "limit_deep_vs_empty": ratio("limit_deep", "limit"),
        "enqueue_vs_insert": ratio("enqueue_autocommit", "insert_limit"),
        "enqueue_atomic_vs_insert": ratio("enqueue_atomic", "insert_limit"),
        "drain_duplicates": sum(measurements.get(name, {}).get("duplicates", 0)
                                for name in ("drain_2_workers", "drain_4_workers")),
        "pickup_default_sleep_ms": _scaled(median("pickup_default_sleep"), 1000),
        "pickup_fast_sleep_ms": _scaled(median("pickup_fast_sleep"), 1000),
        "memory_growth_mb": median("memory_growth"),
    }
    return {name: value for name, value in figures.items() if value is not None}


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def evaluate(results: dict) -> list[dict]:
    verdicts = []
    for database, figure, comparison, threshold, wording in TARGETS:
        if database not in results:
            continue
        value = results[database]["figures"].get(figure)
        if value is None:
            result = "n/a"
        elif value >= threshold if comparison == ">=" else value <= threshold:
            result = "PASS"
        else:
            result = "MISS"
        verdicts.append({
            "database": database, "figure": figure, "value": value, "comparison": comparison,
            "threshold": threshold, "target": wording,
            "result": result,
        })
    return verdicts


#: The measurement each one is divided by in the table's ratio column.
RATIO_BASE = {
    "drain_1_worker": "limit", "drain_2_workers": "limit", "drain_4_workers": "limit",
    "drain_1_worker_deep": "limit_deep", "limit_deep": "limit", "floor": "limit",
    "enqueue_autocommit": "insert_limit", "enqueue_atomic": "insert_limit",
}


def table(results: dict, verdicts: list[dict]) -> str:
    lines = [f"{'database':<11} {'measurement':<24} {'median':>10} {'min-max':>21} {'unit':<9} ratio"]
    for database, result in results.items():
        measurements = result["measurements"]
        for name, entry in measurements.items():
            base = RATIO_BASE.get(name)
            ratio = ""
            if base in measurements and measurements[base]["median"]:
                ratio = f"{entry['median'] / measurements[base]['median']:.2f} of {base}"
            spread = f"{_number(entry['min'])}-{_number(entry['max'])}"
            lines.append(
                f"{database:<11} {name:<24} {_number(entry['median']):>10} {spread:>21} {entry['unit']:<9} {ratio}"
            )
    lines.append("")
    lines.append(f"{'database':<11} {'target':<66} {'value':>9}  result")
    for verdict in verdicts:
        value = "-" if verdict["value"] is None else _number(verdict["value"])
        lines.append(f"{verdict['database']:<11} {verdict['target']:<66} {value:>9}  {verdict['result']}")
    return "\n".join(lines)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def write_json(path: str, document: dict) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
