"""The one benchmark command: every case of issue 10, the framework against the plain PyTorch way.

    python bench/run.py [--tiny] [--cases w1,w2,...] [--repeats N] [--out bench/results]

Each case runs the framework and the plain way in turn, in one process (in-process cases) or
as alternating processes (whole-process cases), after a warm-up round, and reports the medians
and their ratio beside the issue's goal (✓/✗). Every side's outcome is checked (both trained,
final parameters agree), so a broken side is reported as broken, not as fast. Prints the table
and writes it as ``results.md`` and ``results.json`` into ``--out``. ``--tiny`` runs every case
on tiny sizes with one repeat (seconds; CI runs it so the command never rots): its figures are
no measurement. A benchmark, not a test: nothing here asserts a time. On a shared machine, put
several runs in one table with ``python bench/combine.py DIR DIR ...`` (each goal judged on the
median of the runs).

Cases (``--cases``, comma-separated; default all):

- ``w1``: W1 polyfit per step, against the tutorial's own loop (one (3,1) weight on [x², x, 1]),
  with no logging, TensorBoard every 50 steps and every step.
- ``w2``: W2 legendre per step, against the PyTorch tutorial polynomial_custom_function, the
  same three variants.
- ``w3``: a full batch of 10 million rows per step (linear 1 → 1, MSE, SGD).
- ``w4``: one shuffled epoch of 1 million rows at batch 1024, the step included, against a
  DataLoader and against plain randperm index slicing.
- ``tasks``: the six reference tasks' whole fits against their plain loops, with no loggers,
  with checkpoints, and with the default loggers (what bench/loop_overhead.py measured).
- ``startup``: the whole process ``python -m framework +task=linear`` against
  bench/plain_linear.py: wall time and peak memory.
- ``multirun``: the cost per sweep job with Hydra's basic launcher, against a Hydra app that
  does nothing.
- ``answers``: ``--help``, ``model=linear --help`` and a misspelt key, whole processes, with
  ``python -c "import torch"`` for reference.
- ``vectorized``: 16- and 256-job learning-rate sweeps of polyfit (16 of legendre) with
  ``hydra/launcher=vectorized``, whole processes, against one job, with the basic launcher's
  16-job sweep for comparison (issue 12).
- ``cuda``: W1 per step on the GPU against the plain loop on the GPU (skipped without CUDA).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import process_cases, step_cases  # noqa: E402
from bench.measure import Row, machine_description, machine_text, quantity_text  # noqa: E402

# name -> (what it measures, function(framework_side or None, settings) -> rows)
CASES: dict[str, tuple[str, Callable[..., list[Row]]]] = {
    "w1": ("W1 polyfit per step", step_cases.w1_polyfit),
    "w2": ("W2 legendre per step", step_cases.w2_legendre),
    "w3": ("W3 full batch of 10M rows per step", step_cases.w3_full_batch),
    "w4": ("W4 one shuffled epoch of 1M rows", step_cases.w4_shuffled_epoch),
    "tasks": ("reference tasks, whole fits", step_cases.reference_tasks),
    "startup": ("whole process +task=linear", lambda _framework, settings: process_cases.startup(settings)),
    "multirun": ("multirun cost per job", lambda _framework, settings: process_cases.multirun(settings)),
    "answers": ("answers without training", lambda _framework, settings: process_cases.answers(settings)),
    "vectorized": ("vectorised lr sweeps", lambda _framework, settings: process_cases.vectorized(settings)),
    "cuda": ("CUDA W1 polyfit per step", step_cases.cuda_polyfit),
}
IN_PROCESS = {"w1", "w2", "w3", "w4", "tasks", "cuda"}
DEFAULT_OUT = ROOT / "bench" / "results"


def run_case(name: str, framework, settings: step_cases.Settings) -> list[Row]:
    """The case's rows; a case that breaks gives one row saying how, and the others still run."""
    title, measure = CASES[name]
    try:
        return measure(framework, settings)
    except Exception as error:  # a broken side: reported in the table, never as a figure
        return [Row(name, title, "", "", "", check=f"error: {type(error).__name__}: {error}")]


def goal_mark(row: Row) -> str:
    if row.skipped:
        return "skipped"
    if row.goal is None:
        return "–"
    if row.check != "ok":
        return "✗ (check failed)"
    if not row.measurable:
        return "✗ (a median ≤ 0: noise)"
    return "✓" if row.goal_met else "✗"


def ratio_text(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "–"
    text = f"{ratio:.3f}×"
    if row.goal is not None and row.goal.metric == "speedup" and ratio > 0:
        text += f" ({1 / ratio:.0f}× faster)"
    return text


def markdown_table(rows: list[Row]) -> str:
    lines = ["| case | per | framework | plain | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.name} | {row.unit} | – | – | – | – | skipped: {row.skipped} |")
            continue
        goal = row.goal.text() if row.goal is not None else "–"
        lines.append(f"| {row.name} | {row.unit} | {quantity_text(row.framework_median, row.quantity)} | "
                     f"{quantity_text(row.plain_median, row.quantity)} | {ratio_text(row)} | {goal} | "
                     f"{goal_mark(row)} |")
    return "\n".join(lines)


def sides_and_notes(rows: list[Row]) -> str:
    """What each row runs on either side, the method notes, and any failed check."""
    lines, noted = [], set()
    for row in rows:
        lines.append(f"- **{row.name}**: framework: `{row.framework}`; plain: {row.plain}.")
        if row.notes and row.notes not in noted:  # a case's rows share their notes: said once
            noted.add(row.notes)
            lines.append(f"  {row.notes[0].upper()}{row.notes[1:]}.")
        if row.check != "ok":
            lines.append(f"  **Check failed**: {row.check}")
    return "\n".join(lines)


def report(rows: list[Row], machine: dict[str, Any], *, tiny: bool, seconds: float, command: str) -> str:
    sizes = "TINY SIZES, one repeat: a smoke run, not a measurement" if tiny else "full sizes"
    return "\n\n".join([
        f"Machine: {machine_text(machine)}.",
        f"`{command}` ({sizes}; {seconds:.0f} s). Ratio = framework / plain; medians per unit.",
        markdown_table(rows),
        sides_and_notes(rows),
    ]) + "\n"


def finite_or_none(value):
    return value if value is None or not isinstance(value, float) or math.isfinite(value) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", "--quick", action="store_true", help="tiny sizes, one repeat: seconds, no measurement")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default: each case's own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CASES]
    if unknown or not chosen:
        parser.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; the cases are: {', '.join(CASES)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")

    settings = step_cases.Settings(tiny=args.tiny, repeats=args.repeats)
    machine = machine_description()
    command = "python bench/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    framework = None
    if IN_PROCESS.intersection(chosen):
        from bench.framework_side import FrameworkSide

        framework = FrameworkSide()
    started = time.perf_counter()
    rows: list[Row] = []
    for name in chosen:
        case_started = time.perf_counter()
        print(f"[bench] {name}: {CASES[name][0]} ...", file=sys.stderr, flush=True)
        rows.extend(run_case(name, framework, settings))
        print(f"[bench] {name}: {time.perf_counter() - case_started:.1f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started

    text = report(rows, machine, tiny=args.tiny, seconds=seconds, command=command)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    record = {
        "command": command, "tiny": args.tiny, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": seconds, "machine": machine,
        "cases": [{key: finite_or_none(value) for key, value in row.as_json(machine).items()} for row in rows],
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    broken = [row for row in rows if row.check != "ok" and not row.skipped]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
