"""Several runs of ``bench/run.py`` as one table: each row's ratio in every run, and their median.

    python bench/combine.py RESULTS_DIR RESULTS_DIR [...] [--out DIR]

On a shared machine one run's ratios near 1 move by ±10% or more (a neighbour's load during one
case moves one row), so a goal is judged on the median of whole runs. Each run must have been
made on the same machine description and hold the same rows; every row keeps its goal, and is
met when the median of its runs' figures meets it (the ratio, the speedup, or the framework's
own time). Prints the table and writes it as ``combined.md`` and ``combined.json`` into
``--out`` (default: the first folder). Nothing is measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import Goal, machine_text, quantity_text  # noqa: E402


class CombineError(Exception):
    """Runs that cannot be put in one table, said in one line."""


def load_run(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CombineError(f"{path}: not a bench/run.py result ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("machine"), dict) \
            or not isinstance(record.get("cases"), list):
        raise CombineError(f"{path}: not a bench/run.py result (no machine and cases)")
    if record.get("tiny"):
        raise CombineError(f"{path}: a --tiny run measures nothing")
    return record


def goal_of(row: dict[str, Any]) -> Goal | None:
    goal = row["goal"]
    return None if goal is None else Goal(goal["metric"], goal["limit"])


def figure(row: dict[str, Any]) -> float | None:
    """The number a row's goal is judged on (its ratio without a goal)."""
    goal = goal_of(row)
    return row["ratio"] if goal is None else goal.figure(row["framework_median"], row["plain_median"])


def figure_text(value: float | None, goal: dict[str, Any] | None, quantity: str) -> str:
    if value is None:
        return "–"
    if goal is not None and goal["metric"] == "seconds":
        return quantity_text(value, quantity)
    return f"{value:.1f}× faster" if goal is not None and goal["metric"] == "speedup" else f"{value:.3f}×"


def combined_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row of the first run with every run's figure and their median."""
    first = runs[0]
    names = [(row["name"], row["goal"]) for row in first["cases"]]
    for run in runs[1:]:
        differing = sorted(key for key in first["machine"].keys() | run["machine"].keys()
                           if first["machine"].get(key) != run["machine"].get(key))
        if differing:
            raise CombineError("runs from different machines: " + "; ".join(
                f"{key} {first['machine'].get(key)!r} and {run['machine'].get(key)!r}" for key in differing))
        if [(row["name"], row["goal"]) for row in run["cases"]] != names:
            raise CombineError("the runs hold different rows or goals: run them with the same --cases and code")
    rows = []
    for index, (name, _goal) in enumerate(names):
        per_run = [run["cases"][index] for run in runs]
        row = per_run[0]
        if any(entry["skipped"] for entry in per_run):
            rows.append({"name": name, "unit": row["unit"], "skipped": row["skipped"] or "in some runs"})
            continue
        figures = [figure(entry) for entry in per_run]
        known = [value for value in figures if value is not None]
        median = statistics.median(known) if known else None
        goal = row["goal"]
        met = None
        if goal is not None and median is not None and all(entry["check"] == "ok" for entry in per_run):
            met = goal_of(row).met_by(median)
        rows.append({"name": name, "unit": row["unit"], "quantity": row["quantity"], "goal": goal,
                     "figures": figures, "median": median, "goal_met": met, "skipped": None,
                     "checks": [entry["check"] for entry in per_run]})
    return rows


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], folders: list[Path]) -> str:
    lines = [f"Machine: {machine_text(runs[0]['machine'])}.", "",
             f"{len(runs)} runs of `python bench/run.py` ({', '.join(run['finished'] for run in runs)}): "
             f"{', '.join(str(folder) for folder in folders)}. Each row's figure is its ratio (framework / plain), "
             "or the speedup or time its goal names; a goal is met when the median of the runs meets it.", "",
             "| case | per | each run | median | goal | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["skipped"]:
            lines.append(f"| {row['name']} | {row['unit']} | – | – | – | skipped: {row['skipped']} |")
            continue
        goal, quantity = row["goal"], row["quantity"]
        each = ", ".join(figure_text(value, goal, quantity) for value in row["figures"])
        mark = "–" if goal is None else "✗ (check failed)" if any(c != "ok" for c in row["checks"]) \
            else "✓" if row["goal_met"] else "✗"
        lines.append(f"| {row['name']} | {row['unit']} | {each} | {figure_text(row['median'], goal, quantity)} | "
                     f"{goal['text'] if goal else '–'} | {mark} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="folders holding a bench/run.py results.json")
    parser.add_argument("--out", type=Path, default=None, help="folder for combined.md and combined.json")
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give two runs or more")
    if len({folder.resolve() for folder in args.folders}) < len(args.folders):
        parser.error("a run is given twice")
    try:
        runs = [load_run(folder) for folder in args.folders]
        rows = combined_rows(runs)
    except CombineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = markdown(rows, runs, args.folders)
    print(text, end="")
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "combined.md").write_text(text)
    (out / "combined.json").write_text(json.dumps({"runs": [str(folder) for folder in args.folders],
                                                   "machine": runs[0]["machine"], "rows": rows},
                                                  indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
