"""How every case measures: sides timed in turn (A B, then B A), medians, goals, the trained
check, whole processes with their peak memory, and the machine's description.

A *side* is one way of doing the work (the framework, or the plain PyTorch way). Each is called
with a number of units (steps, epochs) and returns the seconds its timed window took and what it
trained (:class:`Outcome`), so a broken side is caught rather than reported as fast.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass
class Outcome:
    """What one timed run trained: the loss before and after, and the final parameters flat, in
    the model's order. ``initial_loss`` is None where the side cannot see it (the framework's
    result.json has the final loss only); the check then takes the plain side's, which starts from
    the same data and the same initial values. A loss of None is not checked (the project's plain
    reference loops return their parameters only)."""

    final_loss: float | None
    params: list[float]
    initial_loss: float | None = None


@dataclass
class Side:
    """One way of doing the work. ``run(units)`` returns (seconds, Outcome).

    ``method``: ``difference`` times a run of ``units`` and a short run of ``base`` units and
    takes (t(N) − t(base)) / (N − base), so the costs paid once per run (the first step's
    allocations, the end of a fit) cancel; ``direct`` times ``units`` once and divides (for a
    side too slow to run twice, such as the DataLoader epoch, or a whole fit).
    """

    label: str  # "framework", "plain", "DataLoader"...
    describe: str  # what runs, in words, for the table and the JSON
    run: Callable[[int], tuple[float, Outcome]]
    method: str = "difference"
    warmup: bool = True  # False for a side slow enough to have no first-call cost worth a round


def quiet_collect() -> None:
    """Collect garbage before a timed window, so one side's leftovers are not charged to the next."""
    gc.collect()


def interleaved(sides: Sequence[Side], units: int, repeats: int, warmups: int = 1, *,
                base: int = 1) -> dict[str, dict[str, Any]]:
    """Time every side per unit, ``repeats`` times, in turn: A B in even repeats and B A in odd
    ones, so drift of the machine's load and order effects hit all sides alike. After
    ``warmups`` untimed rounds (first-call costs: lazy imports, allocator, caches). Returns, per
    side label, its per-unit ``samples`` (seconds), their ``median``, and the last ``outcome``
    (of the run of ``units``).

    A ``difference`` side's short run has ``base`` units (fewer than ``units``). One step, for
    the per-step cases: its sample then has the noise of one run of N steps, where the former
    (t(2N) − t(N)) / N had that of two, for a third of the steps."""
    if any(side.method == "difference" for side in sides) and not 0 < base < units:
        raise ValueError(f"a difference needs 0 < base < units, not base {base} and units {units}")
    for _ in range(warmups):
        for side in sides:
            if side.warmup:
                side.run(units)
    samples: dict[str, list[float]] = {side.label: [] for side in sides}
    outcomes: dict[str, Outcome] = {}
    for repeat in range(repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        full: dict[str, float] = {}
        for side in order:
            quiet_collect()
            full[side.label], outcomes[side.label] = side.run(units)
        for side in order:
            if side.method == "direct":
                samples[side.label].append(full[side.label] / units)
                continue
            quiet_collect()
            short, _ = side.run(base)
            samples[side.label].append((full[side.label] - short) / (units - base))
    return {label: {"samples": values, "median": statistics.median(values), "outcome": outcomes[label]}
            for label, values in samples.items()}


@dataclass(frozen=True)
class Goal:
    """The issue's goal for a row. ``metric``: ``ratio`` (framework / plain, at most ``limit``),
    ``speedup`` (plain / framework, at least ``limit``), or ``seconds`` (the framework's own
    median, at most ``limit`` seconds)."""

    metric: str
    limit: float

    def figure(self, framework: float | None, plain: float | None) -> float | None:
        """The number the goal is judged on, from the two medians (None where one is missing or 0)."""
        if self.metric == "seconds":
            return framework
        if not framework or not plain:
            return None
        return plain / framework if self.metric == "speedup" else framework / plain

    def met_by(self, figure: float) -> bool:
        return figure >= self.limit if self.metric == "speedup" else figure <= self.limit

    def met(self, framework: float, plain: float) -> bool:
        return self.met_by(self.figure(framework, plain))

    def text(self) -> str:
        if self.metric == "ratio":
            return f"≤ {self.limit:g}×"
        if self.metric == "speedup":
            return f"≥ {self.limit:g}× faster"
        return f"≤ {seconds_text(self.limit)}"

    def as_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "limit": self.limit, "text": self.text()}


def seconds_text(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits readable: µs, ms or s."""
    if not math.isfinite(seconds):
        return str(seconds)
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the table: the framework against one plain way, per ``unit``."""

    case: str
    name: str
    framework: str  # what the framework side runs
    plain: str  # what the plain side runs
    unit: str  # "step", "epoch", "fit", "process", "job"
    framework_median: float | None = None  # seconds (or MiB, see quantity) per unit
    plain_median: float | None = None
    quantity: str = "seconds"  # what the medians measure: "seconds" or "MiB" (peak memory)
    goal: Goal | None = None
    check: str = "ok"  # "ok", or why the two sides' outcomes show that one did not train
    notes: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None  # why the row was not measured

    @property
    def ratio(self) -> float | None:
        if self.framework_median is None or not self.plain_median:
            return None
        return self.framework_median / self.plain_median

    @property
    def goal_met(self) -> bool | None:
        if self.goal is None or self.ratio is None:
            return None
        return self.measurable and self.check == "ok" and self.goal.met(self.framework_median, self.plain_median)

    @property
    def measurable(self) -> bool:
        """False when a median is not above zero: a difference of two runs lost in the noise (tiny
        sizes), which is no figure to hold against a goal."""
        return self.framework_median is not None and self.framework_median > 0 and bool(self.plain_median) \
            and self.plain_median > 0

    def as_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "case": self.case, "name": self.name, "framework": self.framework, "plain": self.plain,
            "unit": self.unit, "quantity": self.quantity, "framework_median": self.framework_median,
            "plain_median": self.plain_median, "ratio": self.ratio, "goal": None if self.goal is None else self.goal.as_json(),
            "goal_met": self.goal_met, "check": self.check, "notes": self.notes, "skipped": self.skipped,
            "samples": self.samples, "machine": machine,
        }


def quantity_text(value: float | None, quantity: str) -> str:
    if value is None:
        return "–"
    return seconds_text(value) if quantity == "seconds" else f"{value:.1f} {quantity}"


def row_from(case: str, name: str, timed: dict[str, dict[str, Any]], framework: Side, plain: Side, *,
             unit: str, goal: Goal | None, check: str, notes: str = "") -> Row:
    """A Row from :func:`interleaved`'s medians of two of its sides."""
    return Row(case, name, framework.describe, plain.describe, unit,
               framework_median=timed[framework.label]["median"], plain_median=timed[plain.label]["median"],
               goal=goal, check=check, notes=notes,
               samples={framework.label: timed[framework.label]["samples"], plain.label: timed[plain.label]["samples"]})


def trained_check(framework: Outcome, plain: Outcome, *, rtol: float, atol: float) -> str:
    """"ok" when both sides trained and agree: the plain loss fell, the framework's final loss is
    below the plain side's initial loss (the same data and initial values), and the final
    parameters agree within the tolerances. Otherwise what is wrong, in words."""
    initial = plain.initial_loss
    problems = []
    for label, outcome in (("framework", framework), ("plain", plain)):
        start = outcome.initial_loss if outcome.initial_loss is not None else initial
        if outcome.final_loss is None:
            continue
        if not math.isfinite(outcome.final_loss):
            problems.append(f"{label} final loss {outcome.final_loss}")
        elif start is not None and not outcome.final_loss < start:
            problems.append(f"{label} loss did not fall ({start:.4g} -> {outcome.final_loss:.4g})")
    if len(framework.params) != len(plain.params):
        problems.append(f"{len(framework.params)} framework parameters, {len(plain.params)} plain")
    else:
        far = [(ours, theirs) for ours, theirs in zip(framework.params, plain.params)
               if not math.isclose(ours, theirs, rel_tol=rtol, abs_tol=atol)]
        if far:
            problems.append(f"final parameters differ: framework {framework.params}, plain {plain.params}")
    return "ok" if not problems else "; ".join(problems)


# ------------------------------------------------------------------------------------------------
# Whole processes
# ------------------------------------------------------------------------------------------------


@dataclass
class ProcessRun:
    seconds: float  # wall time, from the start of the process to its exit
    peak_rss_mib: float  # the child's own peak resident memory (rusage ru_maxrss)
    returncode: int
    output: str


LAUNCHER = Path(__file__).resolve().parent / "launch.py"


def run_process(command: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> ProcessRun:
    """Run ``command`` (its first word an absolute path) through bench/launch.py, which waits
    for it with ``os.wait4`` and reports this child's own wall time and peak memory (launch.py
    says why a launcher), and return them with the exit status and the output (stdout and
    stderr, kept in a file so a full pipe never stalls the child)."""
    log_path = Path(cwd) / f".bench_output_{os.getpid()}_{time.monotonic_ns()}.txt"
    launched = subprocess.run([sys.executable, str(LAUNCHER), str(log_path), *command], cwd=cwd, env=env,
                              check=True, capture_output=True, text=True)
    report = json.loads(launched.stdout)
    output = log_path.read_text(errors="replace")
    log_path.unlink()
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = report["maxrss_kib"] / (1024 * 1024 if platform.system() == "Darwin" else 1024)
    return ProcessRun(report["seconds"], peak, report["returncode"], output)


# ------------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_text(machine: dict[str, Any]) -> str:
    return (f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
            f"({machine['torch_threads']} threads), Python {machine['python']}, {machine['device']}")


def machine_description() -> dict[str, Any]:
    """CPU model, cores, torch's version and threads, and the device the cases ran on."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu" + (f"; cuda: {torch.cuda.get_device_name(0)}" if cuda else " (no CUDA device)"),
    }
