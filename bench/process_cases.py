"""The whole-process cases: start-up and teardown of ``python -m framework +task=linear`` against
a plain script, the multirun cost per job, and the answers that need no training (``--help``, a
misspelt key). Processes alternate (A B, then B A) after a warm-up round, each in a fresh
temporary folder; every process is checked (exit status, what it wrote), so a broken one fails
the case instead of being reported as fast.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.measure import Goal, ProcessRun, Row, run_process
from bench.step_cases import Settings
from framework_plugins._figure_writer import wait_for_figures

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


class BrokenRun(RuntimeError):
    """A process of a case did not do its work; the case is reported as failed."""


def process_env() -> dict[str, str]:
    """The user's environment with this checkout importable (an uninstalled checkout works too),
    and without HYDRA_FULL_ERROR (it changes what an error costs)."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def framework_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "framework", *args]


def in_fresh_folder(command: list[str], check: Callable[[ProcessRun, Path], None]) -> Callable[[], ProcessRun]:
    """Run ``command`` in a new temporary folder (its outputs never pile up), then ``check`` it."""

    def run() -> ProcessRun:
        with tempfile.TemporaryDirectory(prefix="bench_process_") as folder:
            ran = run_process(command, cwd=Path(folder), env=process_env())
            check(ran, Path(folder))
            # The figure writer may still be drawing into the run folders after the process
            # exited (it does not make the user wait); wait before the folder is removed.
            for result in Path(folder).rglob("result.json"):
                wait_for_figures(result.parent)
        return ran

    return run


def expect(returncode: int, *, says: str = "") -> Callable[[ProcessRun, Path], None]:
    def check(ran: ProcessRun, _folder: Path) -> None:
        if ran.returncode != returncode or says not in ran.output:
            raise BrokenRun(f"exit {ran.returncode} (expected {returncode}"
                            f"{f', output with {says!r}' if says else ''}): {ran.output[-600:]}")

    return check


def alternating(runs: dict[str, Callable[[], ProcessRun]], repeats: int, warmups: int) -> dict[str, list[ProcessRun]]:
    """Each run ``repeats`` times, in turn (A B C, then C B A), after ``warmups`` untimed rounds
    (the page cache, .pyc files)."""
    for _ in range(warmups):
        for run in runs.values():
            run()
    done: dict[str, list[ProcessRun]] = {label: [] for label in runs}
    for repeat in range(repeats):
        for label in (list(runs) if repeat % 2 == 0 else list(reversed(runs))):
            done[label].append(runs[label]())
    return done


def median_of(runs: list[ProcessRun], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


# ------------------------------------------------------------------------------------------------
# Start-up and teardown
# ------------------------------------------------------------------------------------------------

FINAL_PARAMS: dict[str, list[float]] = {}  # each side's last final parameters, for the trained check


def framework_trained(ran: ProcessRun, folder: Path) -> None:
    expect(0)(ran, folder)
    results = list(folder.glob("outputs/*/*/result.json"))
    if len(results) != 1:
        raise BrokenRun(f"expected one run folder with result.json, found {len(results)}: {ran.output[-600:]}")
    result = json.loads(results[0].read_text())
    if result["status"] != "completed" or result["steps"] != 200:
        raise BrokenRun(f"the framework's run ended {result['status']} after {result['steps']} steps")
    FINAL_PARAMS["framework"] = [result["params"]["weight"][0][0], result["params"]["bias"][0]]


def plain_trained(ran: ProcessRun, folder: Path) -> None:
    expect(0)(ran, folder)
    printed = json.loads(ran.output.strip().splitlines()[-1])
    if not list((folder / "runs" / "plain_linear").glob("events.out.tfevents.*")):
        raise BrokenRun("the plain script wrote no TensorBoard events")
    FINAL_PARAMS["plain"] = [printed["params"]["weight"][0][0], printed["params"]["bias"][0]]


def startup(settings: Settings) -> list[Row]:
    framework_describe = "python -m framework +task=linear (default settings: console, TensorBoard, figures)"
    plain_describe = ("python bench/plain_linear.py: imports torch, 200 SGD steps, SummaryWriter scalars "
                      "train/loss, train/lr, train/grad_norm, params/* every 10 steps")
    runs = alternating({
        "framework": in_fresh_folder(framework_command("+task=linear"), framework_trained),
        "plain": in_fresh_folder([sys.executable, str(BENCH / "plain_linear.py")], plain_trained),
    }, settings.times(5), settings.warmups)
    ours, theirs = FINAL_PARAMS["framework"], FINAL_PARAMS["plain"]
    check = "ok" if all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(ours, theirs)) else (
        f"final parameters differ: framework {ours}, plain {theirs}")
    samples = {label: [run.seconds for run in done] for label, done in runs.items()}
    memory = {label: [run.peak_rss_mib for run in done] for label, done in runs.items()}
    wall = Row("startup", "whole process +task=linear, wall time", framework_describe, plain_describe, "process",
               framework_median=median_of(runs["framework"], "seconds"),
               plain_median=median_of(runs["plain"], "seconds"), goal=Goal("ratio", 1.20), check=check,
               notes="wall time from the start of the process to its exit, each in a fresh folder",
               samples=samples)
    peak = Row("startup", "whole process +task=linear, peak memory", framework_describe,
               plain_describe, "process",
               framework_median=median_of(runs["framework"], "peak_rss_mib"),
               plain_median=median_of(runs["plain"], "peak_rss_mib"), goal=Goal("ratio", 1.10), check=check,
               notes="peak resident memory of the process (its own rusage, from os.wait4), in MiB",
               samples=memory, quantity="MiB")
    return [wall, peak]


# ------------------------------------------------------------------------------------------------
# Multirun: the cost per job
# ------------------------------------------------------------------------------------------------


def jobs_completed(jobs: int) -> Callable[[ProcessRun, Path], None]:
    def check(ran: ProcessRun, folder: Path) -> None:
        expect(0)(ran, folder)
        results = [json.loads(path.read_text()) for path in folder.glob("multirun/*/*/**/result.json")]
        completed = sum(result["status"] == "completed" for result in results)
        if completed != jobs:
            raise BrokenRun(f"{completed} of {jobs} sweep jobs completed: {ran.output[-600:]}")

    return check


def hydra_jobs_ran(jobs: int) -> Callable[[ProcessRun, Path], None]:
    def check(ran: ProcessRun, folder: Path) -> None:
        expect(0)(ran, folder)
        ran_jobs = len(list(folder.glob("multirun/*/*/*/.hydra")))
        if ran_jobs != jobs:
            raise BrokenRun(f"{ran_jobs} of {jobs} Hydra jobs ran: {ran.output[-600:]}")

    return check


def multirun(settings: Settings) -> list[Row]:
    # 16 and 32 jobs, five times: the per-job figure is a difference of two whole processes of
    # seconds each, divided by the jobs between them (with 8 jobs and 3 repeats, one second of
    # noise moved it by 125 ms; runs the same hour gave 42, 66 and 163 ms).
    few = settings.size(16, 1)
    runs = {}
    for jobs in (few, 2 * few):
        runs[f"framework {jobs}"] = in_fresh_folder(
            framework_command("-m", "+task=linear", "trainer.max_steps=1", f"trainer.seed=range({jobs})"),
            jobs_completed(jobs))
        runs[f"hydra {jobs}"] = in_fresh_folder(
            [sys.executable, str(BENCH / "hydra_app.py"), "-m", f"seed=range({jobs})"], hydra_jobs_ran(jobs))
    done = alternating(runs, settings.times(5), settings.warmups)
    per_job = {side: [(more.seconds - fewer.seconds) / few
                      for fewer, more in zip(done[f"{side} {few}"], done[f"{side} {2 * few}"])]
               for side in ("framework", "hydra")}
    return [Row("multirun", "multirun: cost per job (basic launcher, 1-step jobs)",
                "python -m framework -m +task=linear trainer.max_steps=1 'trainer.seed=range(N)'",
                "python bench/hydra_app.py -m 'seed=range(N)': a Hydra app that does nothing", "job",
                framework_median=statistics.median(per_job["framework"]),
                plain_median=statistics.median(per_job["hydra"]), goal=Goal("seconds", 0.100),
                notes=f"per job = (t({2 * few} jobs) − t({few} jobs)) / {few}, whole processes; the goal is "
                      "on the framework's own cost per job (one training step is microseconds)",
                samples=per_job)]


# ------------------------------------------------------------------------------------------------
# Vectorised sweeps (issue 12): N jobs as one batched computation
# ------------------------------------------------------------------------------------------------

# task -> the log10 range of its learning rates: polyfit's NAdam, and legendre's SGD below its
# divergence (3e-5).
SWEPT_TASKS = {"polyfit": (-3.0, -1.0), "legendre": (-7.0, -5.5)}
SWEEP_FINAL_LOSSES: dict[str, dict[str, float]] = {}  # each launcher's last sweep: job -> final loss


def log_spaced(count: int, low: float, high: float) -> str:
    return ",".join(f"{10 ** (low + (high - low) * i / max(count - 1, 1)):.6g}" for i in range(count))


def sweep_completed(jobs: int, label: str, batched: bool) -> Callable[[ProcessRun, Path], None]:
    def check(ran: ProcessRun, folder: Path) -> None:
        expect(0)(ran, folder)
        results = {path.parent.name: json.loads(path.read_text())
                   for path in folder.glob("multirun/*/*/*/result.json")}
        completed = sum(result["status"] == "completed" for result in results.values())
        if completed != jobs:
            raise BrokenRun(f"{completed} of {jobs} sweep jobs completed: {ran.output[-600:]}")
        if batched and f"{jobs} in 1 batch(es)" not in ran.output:
            raise BrokenRun(f"the vectorized launcher did not train the {jobs} jobs as one batch: {ran.output[-600:]}")
        SWEEP_FINAL_LOSSES[label] = {job: result["final_loss"] for job, result in results.items()}
    return check


def vectorized(settings: Settings) -> list[Row]:
    """A learning-rate sweep, whole processes: the vectorized launcher and the basic launcher
    against one job of the same task. Issue 12's goals: 16 jobs within 2 job-times, 256 within 5."""
    rows = []
    steps = ("trainer.max_steps=20",) if settings.tiny else ()
    sweeps = {"polyfit": [(settings.size(16, 2), 2.0), (settings.size(256, 3), 5.0)]}  # (jobs, goal)
    if not settings.tiny:
        sweeps["legendre"] = [(16, None)]  # recorded, no goal
    for task, counts in sweeps.items():
        low, high = SWEPT_TASKS[task]
        for count, goal in counts:
            rates = log_spaced(count, low, high)
            sweep = ("-m", f"+task={task}", *steps, f"optimizer.lr={rates}")
            runs = {"one job": in_fresh_folder(framework_command(f"+task={task}", *steps), expect(0))}
            runs["vectorized"] = in_fresh_folder(framework_command(*sweep[:1], "hydra/launcher=vectorized", *sweep[1:]),
                                                 sweep_completed(count, "vectorized", batched=True))
            basic = count <= 16 or settings.tiny  # 256 jobs one by one: minutes per repeat
            if basic:
                runs["basic"] = in_fresh_folder(framework_command(*sweep), sweep_completed(count, "basic", batched=False))
            done = alternating(runs, settings.times(2), settings.warmups)
            one_job = median_of(done["one job"], "seconds")
            check = "ok"
            if basic and SWEEP_FINAL_LOSSES["vectorized"] != SWEEP_FINAL_LOSSES["basic"]:
                check = "the two launchers' final losses differ"
            samples = {label: [run.seconds for run in runs_done] for label, runs_done in done.items()}
            command = f"python -m framework -m hydra/launcher=vectorized +task={task} 'optimizer.lr=<{count} rates>'"
            rows.append(Row("vectorized", f"{task}: {count}-job lr sweep, vectorized launcher", command,
                            f"python -m framework +task={task} (one job)", "sweep",
                            framework_median=median_of(done["vectorized"], "seconds"), plain_median=one_job,
                            goal=None if goal is None else Goal("ratio", goal), check=check,
                            notes=f"whole processes; learning rates log-spaced 1e{low:g}..1e{high:g}; every "
                                  "job's final loss equal to the basic launcher's",
                            samples=samples))
            if basic:
                rows.append(Row("vectorized", f"{task}: {count}-job lr sweep, basic launcher",
                                command.replace(" hydra/launcher=vectorized", ""),
                                f"python -m framework +task={task} (one job)", "sweep",
                                framework_median=median_of(done["basic"], "seconds"), plain_median=one_job,
                                notes="whole processes, for comparison", samples=samples))
    return rows


# ------------------------------------------------------------------------------------------------
# Answers without training
# ------------------------------------------------------------------------------------------------

ANSWERS = {
    "--help": (["--help"], expect(0, says="framework")),
    "model=linear --help": (["model=linear", "--help"], expect(0, says="linear")),
    "misspelt key (+task=linear trainer.max_stepz=3, exit 2)": (["+task=linear", "trainer.max_stepz=3"],
                                                               expect(2, says="max_stepz")),
}


def answers(settings: Settings) -> list[Row]:
    runs = {name: in_fresh_folder(framework_command(*args), check) for name, (args, check) in ANSWERS.items()}
    runs["import torch"] = in_fresh_folder([sys.executable, "-c", "import torch"], expect(0))
    done = alternating(runs, settings.times(5), settings.warmups)
    reference = median_of(done["import torch"], "seconds")
    return [Row("answers", f"python -m framework {name}", f"python -m framework {' '.join(ANSWERS[name][0])}",
                'python -c "import torch" (for reference)', "process",
                framework_median=median_of(done[name], "seconds"), plain_median=reference,
                goal=Goal("seconds", 1.0), notes="whole process; the goal is on the framework's own seconds",
                samples={"framework": [run.seconds for run in done[name]],
                         "import torch": [run.seconds for run in done["import torch"]]})
            for name in ANSWERS]
