"""Sweep helpers: which overrides name a job folder, threads per parallel job, the summary."""

from __future__ import annotations

import csv
import json

import pytest

from framework.run_folders import BASIC_SWEEPER, job_folder_name
from framework.sweeps import (
    EXCLUDE_KEYS,
    collect_jobs,
    exclude_fixed_overrides,
    help_without_sweeps,
    threads_per_job,
    write_summary,
)


def test_fixed_overrides_are_excluded_from_folder_names_in_a_multirun():
    args = ["-m", "+task=polyfit", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1", "trainer.max_steps=20",
            "hydra/launcher=joblib"]
    assert exclude_fixed_overrides(args) == [*args, f"{EXCLUDE_KEYS}=[task,trainer.max_steps]"]


def test_single_runs_and_explicit_exclusions_are_left_alone():
    assert exclude_fixed_overrides(["+task=polyfit"]) == ["+task=polyfit"]
    own = ["-m", "+task=polyfit", f"{EXCLUDE_KEYS}=[seed]"]
    assert exclude_fixed_overrides(own) == own


def test_the_exclusion_goes_next_to_the_overrides_so_flags_after_them_still_parse():
    # argparse takes Hydra's overrides as one run of positionals: one after --help was refused.
    from hydra._internal.utils import get_args_parser

    args = ["-m", "+task=polyfit", "optimizer.lr=0.1,0.01", "--help"]
    exclusion = f"{EXCLUDE_KEYS}=[task]"
    assert exclude_fixed_overrides(args) == ["-m", "+task=polyfit", "optimizer.lr=0.1,0.01", exclusion, "--help"]
    # An option's value is not an override: the exclusion goes after the last real one.
    args = ["+task=polyfit", "optimizer.lr=0.1,0.01", "-m", "--config-name", "config", "--info", "config"]
    placed = exclude_fixed_overrides(args)
    assert placed == ["+task=polyfit", "optimizer.lr=0.1,0.01", exclusion, *args[2:]]
    parsed = get_args_parser().parse_args(placed)
    assert parsed.overrides == ["+task=polyfit", "optimizer.lr=0.1,0.01", exclusion]


def test_help_of_a_sweep_leaves_out_the_swept_values_only():
    args = ["-m", "+task=polyfit", "optimizer.lr=0.1,0.01", "trainer.max_steps=5", "--help"]
    assert help_without_sweeps(args) == ["-m", "+task=polyfit", "trainer.max_steps=5", "--help"]
    assert help_without_sweeps(args[:-1]) == args[:-1]  # no help: the sweep runs
    assert help_without_sweeps(args[1:]) == args[1:]  # no -m: Hydra's own "Ambiguous value" stands


def test_job_folder_is_named_by_the_varied_overrides_in_command_line_order():
    overrides = ["+task=polyfit", "optimizer=adam", "optimizer.lr=0.01", "data.path=/a/b.csv"]
    assert job_folder_name(3, overrides, ["task"], BASIC_SWEEPER) == "optimizer=adam,optimizer.lr=0.01,data.path=%2Fa%2Fb.csv"
    # A sampling sweeper can repeat values: the job number keeps folders apart.
    assert job_folder_name(3, overrides[:2], ["task"], "hydra_plugins.optuna.OptunaSweeper") == "3_optimizer=adam"
    assert job_folder_name(4, ["+task=polyfit"], ["task"], BASIC_SWEEPER) == "job4"


@pytest.mark.parametrize("n_jobs, cores, expected", [(2, 2, 1), (2, 8, 4), (-1, 8, 1), (-2, 8, 1), (3, 2, 1), (None, 8, None)])
def test_parallel_jobs_share_the_cores(n_jobs, cores, expected):
    assert threads_per_job(n_jobs, cores) == expected


def make_job(sweep, name, result, overrides=("x=1",), log_line=None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if result is not None:
        (job / "result.json").write_text(json.dumps(result))
    if log_line:
        (job / "framework.log").write_text(f"[2026-01-01 00:00:01,000][framework][ERROR] - {log_line}\n")


def result(status, loss, steps=10, error=None):
    return {"task": "t", "status": status, "steps": steps, "final_loss": loss, "params": {},
            "wall_s": 0.5, "device": "cpu", "stop_reason": "max_steps" if status == "completed" else "error",
            "error": error}


def test_summary_sorts_by_final_loss_and_lists_failures_with_their_error(tmp_path):
    make_job(tmp_path, "lr=0.1", result("completed", 2.5))
    make_job(tmp_path, "lr=1", result("failed", None, 3, error="training diverged at step 3"),
             log_line="a log line is not the record")
    make_job(tmp_path, "lr=0.01", result("completed", 0.5))
    make_job(tmp_path, "lr=5", None, log_line="unexpected RuntimeError: boom")
    rows = collect_jobs(tmp_path)
    assert [row["job"] for row in rows[:2]] == ["lr=0.01", "lr=0.1"]
    assert {row["job"] for row in rows[2:]} == {"lr=1", "lr=5"}
    failed = {row["job"]: row for row in rows if row["status"] != "completed"}
    assert failed["lr=1"]["error"] == "training diverged at step 3"
    assert failed["lr=5"]["stop_reason"] == "no result.json" and failed["lr=5"]["error"] == ""

    text = write_summary(tmp_path, rows)
    assert "| 1 | lr=0.01 | 0.5 |" in text and "- lr=1: training diverged at step 3" in text
    assert (tmp_path / "summary.md").read_text().endswith(text)
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["job"] for row in table[:2]] == ["lr=0.01", "lr=0.1"]
    assert table[0]["final_loss"] == "0.5" and table[0]["overrides"] == "x=1"


def test_a_ctrl_c_while_the_summary_is_written_leaves_the_one_before_whole(tmp_path, monkeypatch):
    """A Ctrl-C that lands while summary.md is written (the sweep's stop handlers are gone by then)
    left it empty: a real process caught it (tests/cli/test_interrupts.py). Here the interrupt
    comes once the new text is written, before it replaces the file."""
    import framework.outputs

    make_job(tmp_path, "lr=0.1", result("completed", 2.5))
    write_summary(tmp_path, collect_jobs(tmp_path))
    before = {name: (tmp_path / name).read_text() for name in ("summary.md", "summary.csv")}
    make_job(tmp_path, "lr=0.01", result("completed", 0.5))

    def interrupted(_descriptor):
        raise KeyboardInterrupt

    monkeypatch.setattr(framework.outputs.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_summary(tmp_path, collect_jobs(tmp_path))
    assert {name: (tmp_path / name).read_text() for name in before} == before
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == ["summary.csv", "summary.md"]


def test_a_ctrl_c_as_the_summary_is_written_takes_effect_once_it_is_whole(tmp_path, monkeypatch):
    """At the end of a sweep its stop handlers are gone; a Ctrl-C then waits until summary.csv and
    summary.md are written, and interrupts right after, as if it had come then."""
    import os
    import signal

    import framework.sweeps
    from framework.sweeps import SweepSummary

    make_job(tmp_path, "lr=0.1", result("completed", 2.5))
    written = framework.sweeps.atomic_write_text

    def ctrl_c_then_write(path, text):
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands as the file is written
        written(path, text)

    monkeypatch.setattr(framework.sweeps, "atomic_write_text", ctrl_c_then_write)
    monkeypatch.setattr(SweepSummary, "sweep_dir", tmp_path)
    monkeypatch.setattr(SweepSummary, "previous_handlers", {})
    monkeypatch.setattr(SweepSummary, "summarised", False)
    monkeypatch.setattr(SweepSummary, "interrupted", None)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C
    try:
        with pytest.raises(KeyboardInterrupt):
            SweepSummary.summarise()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "| lr=0.1 |" in (tmp_path / "summary.md").read_text()
    assert "lr=0.1" in (tmp_path / "summary.csv").read_text()
    assert signal.getsignal(signal.SIGINT) is previous


def fit_result(loss, gap):
    return {**result("completed", loss), "optimal_loss": None if gap is None else loss - gap, "optimality_gap": gap}


def test_least_squares_jobs_are_ranked_by_their_optimality_gap(tmp_path):
    # Jobs fitting different data: the larger final loss can be the better fit of its own data.
    make_job(tmp_path, "noise=0", fit_result(4.0, 4.0))
    make_job(tmp_path, "noise=4", fit_result(13.0, 1e-6))
    make_job(tmp_path, "noise=2", fit_result(5.0, 0.5))
    make_job(tmp_path, "diverged", result("failed", None, 3, error="training diverged at step 3"))
    rows = collect_jobs(tmp_path)
    assert [row["job"] for row in rows] == ["noise=4", "noise=2", "noise=0", "diverged"]

    text = write_summary(tmp_path, rows)
    assert text.splitlines()[0] == "| rank | job | final_loss | optimality_gap | steps | wall_s | stop_reason | status |"
    assert "| 1 | noise=4 | 13 | 1e-06 |" in text
    assert "Jobs sorted by optimality gap, best first." in (tmp_path / "summary.md").read_text()
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["job"], row["optimality_gap"]) for row in table] == [
        ("noise=4", "1e-06"), ("noise=2", "0.5"), ("noise=0", "4.0"), ("diverged", "")]


def test_jobs_are_ranked_by_final_loss_unless_every_scored_job_has_a_gap(tmp_path):
    # A model that is no least-squares problem has no gap: gaps and losses do not compare.
    make_job(tmp_path, "model=polynomial", fit_result(4.0, 3.9))
    make_job(tmp_path, "model=sine_cubic", fit_result(2.0, None))
    rows = collect_jobs(tmp_path)
    assert [row["job"] for row in rows] == ["model=sine_cubic", "model=polynomial"]
    write_summary(tmp_path, rows)
    assert "Jobs sorted by final loss, best first." in (tmp_path / "summary.md").read_text()


def test_the_gap_column_is_shown_only_when_some_job_has_a_gap(tmp_path):
    make_job(tmp_path, "a", result("completed", 1.0))
    text = write_summary(tmp_path, collect_jobs(tmp_path))
    assert "optimality_gap" not in text
