"""Multirun support: job folders named by their swept values, parallel jobs sharing the cores,
and a summary of every job when a sweep ends.

Job folders: the CLI adds the keys every job shares (``+task=polyfit``, fixed ``trainer.*``) to
Hydra's ``override_dirname`` exclusions, so a job's folder, and so its TensorBoard run, is named
by what the sweep varies: ``optimizer=adam,optimizer.lr=0.01``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from framework.cluster import LOCAL_LAUNCHER, SLURM_LAUNCHER, jobs_folder, keep_local_controllers_from_ctrl_c
from framework.console import print_quietly
from framework.errors import TrainingError
from framework.outputs import RESULT_FILE, atomic_write_text
from framework.quick_answers import HELP_FLAGS
from framework.overrides import last_override_index
from framework.signals import (
    RAISED_BEFORE_A_FIT,
    interrupt_once_on_stop_signals,
    on_stop_signals,
    restore_handlers,
    signals_held,
)

MULTIRUN_FLAGS = ("-m", "--multirun")
EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"
INTERRUPTED_MARK = ".interrupted"  # in a sweep folder: the signal that stopped the sweep
SUMMARY_COLUMNS = ("job", "status", "final_loss", "steps", "wall_s", "stop_reason", "device", "overrides", "error")
# result.json fields a summary shows, after final_loss, only when some job has a value.
OPTIONAL_COLUMNS = ("final_val_loss", "optimality_gap")


def exclude_fixed_overrides(args: list[str]) -> list[str]:
    """For a multirun, add the keys that do not vary to Hydra's folder-name exclusions."""
    if not any(arg in MULTIRUN_FLAGS for arg in args) or any(arg.startswith(EXCLUDE_KEYS) for arg in args):
        return args
    parser = OverridesParser.create()
    fixed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra itself reports a malformed override
            continue
        if not override.is_sweep_override() and not override.is_hydra_override():
            fixed.append(override.key_or_group)
    if not fixed:
        return args
    # Next to the user's overrides: Hydra's argparse takes them as one run of positionals, and an
    # override after a flag (`... --help`) would be "unrecognized".
    at = last_override_index(args) + 1
    return [*args[:at], f"{EXCLUDE_KEYS}=[{','.join(fixed)}]", *args[at:]]


def help_without_sweeps(args: list[str]) -> list[str]:
    """``-m ... 'optimizer.lr=0.1,0.01' --help``: the help of the swept config. Hydra composes
    the help's config as one run's, where a sweep's values are an error ("Ambiguous value"), so
    the swept overrides are left out: the options and defaults the help lists are the same."""
    if not any(arg in HELP_FLAGS for arg in args) or not any(arg in MULTIRUN_FLAGS for arg in args):
        return args
    parser = OverridesParser.create()
    kept = []
    for arg in args:
        if not arg.startswith("-") and "=" in arg:
            try:
                if parser.parse_override(arg).is_sweep_override():
                    continue
            except Exception:  # Hydra itself reports a malformed override
                pass
        kept.append(arg)
    return kept


def threads_per_job(n_jobs: int | None, cores: int | None = None) -> int | None:
    """Torch threads for each of ``n_jobs`` parallel jobs (joblib's convention: -1 = all cores)."""
    if not n_jobs:
        return None
    cores = cores or os.cpu_count() or 1
    workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // workers)


# --------------------------------------------------------------------------------------------
# An interrupted sweep: the running jobs stop cleanly, the others do not start
# --------------------------------------------------------------------------------------------


def mark_interrupted(sweep_dir: Path, signum: int) -> None:
    """Record that a signal stopped the sweep; jobs read it before they start (they may run in
    other processes, so the mark is a file)."""
    mark = Path(sweep_dir) / INTERRUPTED_MARK
    if not mark.exists():
        mark.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mark, str(signum))


def interrupted_by(sweep_dir: Path) -> int | None:
    """The signal that stopped the sweep, or None."""
    mark = Path(sweep_dir) / INTERRUPTED_MARK
    try:
        return int(mark.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The summary of a finished sweep
# --------------------------------------------------------------------------------------------


def collect_jobs(sweep_dir: Path, interrupted: bool = False, unwatched: bool = False) -> list[dict[str, Any]]:
    """One row per job folder (a folder with Hydra's .hydra/) under the sweep.

    A job that left no result.json failed, or, in an interrupted sweep, did not finish (it may
    have been stopped before Hydra wrote all its snapshot), or, in a sweep no longer watched,
    is still running."""
    rows = []
    for snapshot in sorted(sweep_dir.glob("*/.hydra")):
        job_dir = snapshot.parent
        overrides_file = snapshot / "overrides.yaml"
        overrides = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.exists() else []
        result_file = job_dir / RESULT_FILE
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        status = result.get("status", "running" if unwatched else "interrupted" if interrupted else "failed")
        rows.append({
            "job": job_dir.name,
            "status": status,
            "final_loss": result.get("final_loss"),
            "steps": result.get("steps"),
            "wall_s": result.get("wall_s"),
            "stop_reason": result.get("stop_reason", "still running: no result.json yet" if unwatched
                                      else "unfinished: no result.json" if interrupted else "no result.json"),
            "device": result.get("device"),
            "overrides": " ".join(overrides),
            "error": result.get("error") or "",
            **{column: result.get(column) for column in OPTIONAL_COLUMNS},
        })
    ranking = ranked_by(rows)
    rows.sort(key=lambda row: (row[ranking] is None, row[ranking] if row[ranking] is not None else 0))
    return rows


def ranked_by(rows: list[dict[str, Any]]) -> str:
    """The column jobs are ranked by: ``optimality_gap`` when every job with a final loss has one
    (least-squares fits: jobs with different data or models then compare fairly, each against
    its own optimum), else ``final_loss``."""
    scored = [row for row in rows if row["final_loss"] is not None]
    if scored and all(row.get("optimality_gap") is not None for row in scored):
        return "optimality_gap"
    return "final_loss"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def with_optional_columns(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """``columns`` with the :data:`OPTIONAL_COLUMNS` some row has a value for, after final_loss."""
    shown = tuple(column for column in OPTIONAL_COLUMNS if any(row.get(column) is not None for row in rows))
    at = columns.index("final_loss") + 1
    return columns[:at] + shown + columns[at:]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = with_optional_columns(("rank", "job", "final_loss", "steps", "wall_s", "stop_reason", "status"), rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for rank, row in enumerate(rows, 1):
        lines.append("| " + " | ".join(_cell(rank if c == "rank" else row[c]) for c in columns) + " |")
    failed = [row for row in rows if row["status"] != "completed"]
    if failed:
        lines += ["", "Jobs that did not complete:"] + [f"- {row['job']}: {row['error'] or row['stop_reason']}" for row in failed]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    """Write summary.csv and summary.md into the sweep folder; return the Markdown.

    Each file is written whole or not at all (:func:`framework.outputs.atomic_write_text`): a Ctrl-C
    in the middle of a plain write left an empty summary.md behind (tests/cli/test_interrupts.py
    caught one). :meth:`SweepSummary.summarise` also holds such a signal until both are written."""
    columns = with_optional_columns(SUMMARY_COLUMNS, rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in columns})
    text = markdown_table(rows)
    ranking = ranked_by(rows).replace("_", " ")
    document = f"# Sweep {sweep_dir}\n\nJobs sorted by {ranking}, best first.\n\n{text}"
    for name, content in (("summary.csv", buffer.getvalue()), ("summary.md", document)):
        atomic_write_text(sweep_dir / name, content)
    return text


class SweepFailed(TrainingError):
    def __init__(self, failed: int, total: int, sweep_dir: Path, interrupted: int = 0) -> None:
        what = [f"{failed} of {total} jobs failed"] if failed else []
        if interrupted:  # a signal to those jobs alone (scancel, a time limit), not to the sweep
            what.append(f"{interrupted} of {total} jobs did not complete, stopped by a signal to them alone "
                        "(scancel --signal, the scheduler's time limit; each one's log says how to resume it)")
        super().__init__(f"{'; '.join(what)}; the summary above and {sweep_dir}/summary.md list every job")


class SweepSummary(Callback):
    """Hydra callback: while a multirun runs, a signal marks the sweep interrupted instead of
    killing it (so parallel workers can finish their jobs' outputs); when it ends, print and
    save the table of its jobs.

    Hydra turns an exception raised here into a warning, so failed jobs are kept in
    ``failure``, and the signal that interrupted the sweep in ``interrupted``, for the CLI to
    turn into the exit status.
    """

    failure: SweepFailed | None = None
    interrupted: int | None = None
    sweep_dir: Path | None = None  # of the sweep under way, until its summary is written
    summarised = False  # the sweep has ended, and its summary is written
    on_a_cluster = False  # its jobs run on a SLURM cluster, which this process watches
    cluster_jobs: Path | None = None  # there, the folder of submitit's folder per job
    previous_handlers: dict = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        SweepSummary.sweep_dir = sweep_dir
        launcher = config.hydra.launcher.get("_target_")
        if launcher == LOCAL_LAUNCHER:
            keep_local_controllers_from_ctrl_c()
        SweepSummary.on_a_cluster = launcher == SLURM_LAUNCHER
        if SweepSummary.on_a_cluster:
            SweepSummary.cluster_jobs = jobs_folder(config.hydra.launcher)
            # The jobs are the cluster's, and this process only watches them: a Ctrl-C or a
            # SIGTERM here stops the watch (framework.cli.cut_short), not the jobs, and a second
            # one leaves the summary it then writes whole.
            interrupt_once_on_stop_signals()
            return

        def stop_the_sweep(signum: int) -> None:
            mark_interrupted(sweep_dir, signum)
            # A job of this process (the basic launcher's) being set up stops at its fit's
            # first step, saved, as it would have in its fit (its fit's handler is not yet set).
            RAISED_BEFORE_A_FIT.append(signum)

        SweepSummary.previous_handlers = on_stop_signals(stop_the_sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.summarise()

    @classmethod
    def summarise(cls, unwatched: bool = False) -> None:
        """Print and save the table of the sweep's jobs, once: when the sweep ends, or, when it
        was cut short (a Ctrl-C while the launcher starts its workers), as the CLI ends.
        ``unwatched``: this process stopped watching jobs that run on (on a cluster)."""
        sweep_dir, cls.sweep_dir = cls.sweep_dir, None
        if sweep_dir is None:
            return
        restore_handlers(cls.previous_handlers)
        cls.previous_handlers = {}
        cls.summarised = True
        cls.interrupted = interrupted_by(sweep_dir)
        rows = collect_jobs(sweep_dir, interrupted=cls.interrupted is not None, unwatched=unwatched)
        if not rows and cls.interrupted is None:
            return
        with signals_held():  # the sweep's own handlers are gone: a Ctrl-C waits for the files
            text = write_summary(sweep_dir, rows)
        print_quietly(f"\nSweep summary ({len(rows)} jobs, best first; saved in {sweep_dir}/summary.csv and summary.md)")
        print_quietly(text, end="")
        failed = [row for row in rows if row["status"] not in ("completed", "interrupted", "running")]
        # Jobs interrupted while the sweep was not: stopped one by one (a cluster job's scancel).
        stopped = [row for row in rows if row["status"] == "interrupted"] if cls.interrupted is None else []
        if failed or stopped:
            cls.failure = SweepFailed(len(failed), len(rows), sweep_dir, interrupted=len(stopped))
