"""End to end: multiruns (``python -m framework -m ...``) with the basic, joblib and Optuna plugins,
checked against issue 3: job folders named by the swept values, one TensorBoard run per job with its
hparams, a sweep summary, one failing job not stopping the others, parallel jobs sharing the cores,
and the final loss returned to a sweeper."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli
from tests.framework.compare import events, hparams_data

# --------------------------------------------------------------------------------------------- helpers


class Sweep:
    """One finished ``python -m framework -m ...`` subprocess and its sweep folder."""

    def __init__(self, process, sweep_dir: Path) -> None:
        self.process = process
        self.sweep_dir = sweep_dir
        self.returncode = process.returncode
        self.stdout = process.stdout
        self.stderr = process.stderr
        self.output = process.stdout + process.stderr

    def job_dirs(self) -> dict[str, Path]:
        return {path.name: path for path in self.sweep_dir.iterdir() if path.is_dir()}

    def result(self, job: str) -> dict:
        return json.loads((self.sweep_dir / job / "result.json").read_text())

    def summary_rows(self) -> list[dict[str, str]]:
        with open(self.sweep_dir / "summary.csv", newline="") as file:
            return list(csv.DictReader(file))

    def describe(self) -> str:
        listing = sorted(str(p.relative_to(self.sweep_dir)) for p in self.sweep_dir.rglob("*")) \
            if self.sweep_dir.exists() else "(no sweep folder)"
        return (f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
                f"\n--- sweep folder\n{listing}")


def launch_sweep(base: Path, *args: str) -> Sweep:
    sweep_dir = base / "sweep"
    process = run_cli("-m", *args, f"hydra.sweep.dir={sweep_dir}", cwd=base)
    return Sweep(process, sweep_dir)


def session_hparams(accumulator: EventAccumulator) -> dict:
    """{name: python value} of the run's session-start info (what the HParams table shows)."""
    starts = [data.session_start_info for data in hparams_data(accumulator).values()
              if data.WhichOneof("data") == "session_start_info"]
    assert len(starts) == 1, f"expected one session-start info, found {len(starts)}"
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in starts[0].hparams.items()}


def last_scalar(accumulator: EventAccumulator, tag: str) -> float:
    return accumulator.Scalars(tag)[-1].value


def table_order(text: str) -> list[str]:
    """The job column of each row of a printed or saved Markdown summary table, in order."""
    return [match.group(1) for match in re.finditer(r"^\| \d+ \| ([^|]+?) \|", text, re.MULTILINE)]


# ------------------------------------------------------------------------- the basic launcher, a 2x2 grid

OPTIMIZERS = ("sgd", "nadam")
RATES = ("0.001", "0.01")
GRID_JOBS = [f"optimizer={name},optimizer.lr={lr}" for name in OPTIMIZERS for lr in RATES]
DIVERGING_JOB = "optimizer=sgd,optimizer.lr=0.01"  # sgd at lr 0.01 diverges on polyfit
COMPLETED_JOBS = [job for job in GRID_JOBS if job != DIVERGING_JOB]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Sweep:
    base = tmp_path_factory.mktemp("grid")
    return launch_sweep(base, "+task=polyfit", f"optimizer={','.join(OPTIMIZERS)}",
                        f"optimizer.lr={','.join(RATES)}", "trainer.max_steps=20")


def test_grid_job_folders_are_named_by_the_swept_values(grid):
    assert grid.sweep_dir.is_dir(), grid.describe()
    # Named by what the sweep varies, in command-line order; never by number, never by the
    # overrides every job shares (+task, trainer.max_steps).
    assert set(grid.job_dirs()) == set(GRID_JOBS), grid.describe()


def test_grid_each_job_folder_is_one_tensorboard_run(grid):
    for job, job_dir in grid.job_dirs().items():
        assert (job_dir / ".hydra" / "config.yaml").is_file(), job
        assert (job_dir / "result.json").is_file(), job
        assert list(job_dir.glob("events.out.tfevents.*")), f"no event file directly in {job}"
        # No second (timestamped add_hparams) run, nor any other folder, inside the job's run:
        # Hydra's snapshot and the checkpoints only.
        # (A diverged job keeps no checkpoint and no weights: they would be NaN.)
        completed = json.loads((job_dir / "result.json").read_text())["status"] == "completed"
        sub_folders = sorted(p.name for p in job_dir.iterdir() if p.is_dir())
        assert sub_folders == [".hydra", "checkpoints"] if completed else [".hydra"], f"{job}: {sub_folders}"
        assert (job_dir / "model.safetensors").is_file() == completed, job
        every_event_file = list(job_dir.rglob("events.out.tfevents.*"))
        assert {p.parent for p in every_event_file} == {job_dir}, every_event_file


def test_grid_one_failed_job_does_not_stop_the_others(grid):
    diverged = grid.result(DIVERGING_JOB)
    assert diverged["status"] == "failed", diverged
    assert diverged["stop_reason"] == "non_finite_loss", diverged
    assert diverged["final_loss"] is None
    for job in COMPLETED_JOBS:
        result = grid.result(job)
        assert result["status"] == "completed", (job, result)
        assert result["steps"] == 20, (job, result)
        assert isinstance(result["final_loss"], float) and math.isfinite(result["final_loss"])


def test_grid_exit_status_says_how_many_jobs_failed(grid):
    assert grid.returncode != 0, grid.describe()
    assert "1 of 4 jobs failed" in grid.stderr, grid.describe()
    assert "Traceback" not in grid.output, grid.describe()


def test_grid_summary_files_sorted_by_final_loss_with_the_failed_job_last(grid):
    rows = grid.summary_rows()
    assert [row["job"] for row in rows] == sorted(
        GRID_JOBS, key=lambda job: (job == DIVERGING_JOB, grid.result(job)["final_loss"] or 0.0)
    ), rows
    # The numbers are those of each job's result.json.
    for row in rows:
        result = grid.result(row["job"])
        assert row["status"] == result["status"], row
        assert int(row["steps"]) == result["steps"], row
        if result["final_loss"] is None:
            assert row["final_loss"] == "", row
        else:
            assert float(row["final_loss"]) == pytest.approx(result["final_loss"], rel=1e-9), row
    losses = [float(row["final_loss"]) for row in rows[:-1]]
    assert losses == sorted(losses)

    # The failed job carries its error: why it failed, and at which step.
    failed = rows[-1]
    assert failed["job"] == DIVERGING_JOB and failed["status"] == "failed", failed
    error = failed["error"]
    assert "diverged" in error, failed
    assert re.search(rf"\bstep {grid.result(DIVERGING_JOB)['steps']}\b", error), failed
    assert all(row["error"] == "" for row in rows[:-1]), rows

    markdown = (grid.sweep_dir / "summary.md").read_text()
    assert table_order(markdown) == [row["job"] for row in rows], markdown
    assert error in markdown, markdown


def test_grid_summary_is_printed(grid):
    rows = grid.summary_rows()
    assert table_order(grid.stdout) == [row["job"] for row in rows], grid.describe()


def test_grid_each_job_writes_its_hparams(grid):
    for name in OPTIMIZERS:
        for lr in RATES:
            job = f"optimizer={name},optimizer.lr={lr}"
            result = grid.result(job)
            accumulator = events(grid.sweep_dir / job)
            hparams = session_hparams(accumulator)
            # The overrides, and the main component choices.
            assert hparams["optimizer"] == name, (job, hparams)
            assert hparams["optimizer.lr"] == pytest.approx(float(lr)), (job, hparams)
            assert hparams["model"] == "polynomial", (job, hparams)
            assert hparams["loss"] == "mse", (job, hparams)
            assert hparams["data"] == "polynomial", (job, hparams)

            # The metrics, as scalars in the job's own run.
            scalar_tags = set(accumulator.Tags()["scalars"])
            assert {"hparams/steps", "hparams/wall_s"} <= scalar_tags, (job, scalar_tags)
            assert last_scalar(accumulator, "hparams/steps") == result["steps"]
            assert last_scalar(accumulator, "hparams/wall_s") == pytest.approx(result["wall_s"], rel=1e-6, abs=1e-6)
            if result["status"] == "completed":
                assert "hparams/final_loss" in scalar_tags, (job, scalar_tags)
                assert last_scalar(accumulator, "hparams/final_loss") == pytest.approx(result["final_loss"], rel=1e-6)
            else:
                assert "hparams/final_loss" not in scalar_tags, (job, scalar_tags)


def test_grid_no_job_declares_an_hparams_experiment_without_the_final_loss(grid):
    """TensorBoard takes *one* run's ``_hparams_/experiment`` (any of them) as the experiment of the
    whole logdir; so no run may declare one that lacks the metric the sweep is compared by."""
    for job in GRID_JOBS:
        for tag, data in hparams_data(events(grid.sweep_dir / job)).items():
            if data.WhichOneof("data") == "experiment":
                metrics = {info.name.tag for info in data.experiment.metric_infos}
                assert "hparams/final_loss" in metrics, f"{job}: {tag} declares only {sorted(metrics)}"


# --------------------------------------------------- least-squares jobs: ranked by their optimality gap


def test_least_squares_jobs_are_ranked_by_optimality_gap_not_final_loss(tmp_path):
    # Noisy data have a larger optimum: LBFGS's fit of them has the larger final loss but the
    # smaller gap than the preset's 1000 NAdam steps on clean data.
    sweep = launch_sweep(tmp_path, "+task=polyfit", "optimizer=lbfgs,nadam", "data.noise=0,4", "logger=[]")
    assert sweep.returncode == 0, sweep.describe()
    rows = sweep.summary_rows()
    assert len(rows) == 4, rows
    for row in rows:
        result = sweep.result(row["job"])
        assert result["optimality_gap"] == result["final_loss"] - result["optimal_loss"], row
        assert float(row["optimality_gap"]) == pytest.approx(result["optimality_gap"], rel=1e-9), row
    gaps = [float(row["optimality_gap"]) for row in rows]
    assert gaps == sorted(gaps)
    by_loss = sorted(rows, key=lambda row: float(row["final_loss"]))
    assert [row["job"] for row in rows] != [row["job"] for row in by_loss]
    assert {row["job"] for row in rows[:2]} == {"optimizer=lbfgs,data.noise=0", "optimizer=lbfgs,data.noise=4"}
    markdown = (sweep.sweep_dir / "summary.md").read_text()
    assert "Jobs sorted by optimality gap" in markdown and "| optimality_gap |" in markdown
    assert table_order(markdown) == table_order(sweep.stdout) == [row["job"] for row in rows]


# ------------------------------------------------------------------------ joblib: parallel jobs, threads


def test_joblib_jobs_share_the_cores(tmp_path):
    sweep = launch_sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+task=linear",
                         "optimizer.lr=0.001,0.002", "trainer.max_steps=20")
    assert sweep.returncode == 0, sweep.describe()
    assert "Joblib.Parallel(n_jobs=2" in sweep.output, sweep.describe()
    jobs = sweep.job_dirs()
    assert set(jobs) == {"optimizer.lr=0.001", "optimizer.lr=0.002"}, sweep.describe()
    threads = max(1, (os.cpu_count() or 1) // 2)
    for job, job_dir in jobs.items():
        result = sweep.result(job)
        assert result["status"] == "completed" and result["steps"] == 20, (job, result)
        log = (job_dir / "framework.log").read_text()
        assert f"({threads} threads)" in log, f"{job}: expected {threads} torch threads\n{log}"
    assert [row["status"] for row in sweep.summary_rows()] == ["completed", "completed"]


# ------------------------------------------------------------------- Optuna: the final loss is minimised


def test_optuna_searches_and_receives_the_final_loss(tmp_path):
    sweep = launch_sweep(tmp_path, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                         "hydra.sweeper.sampler.seed=0", "optimizer.lr=tag(log, interval(0.001, 0.1))",
                         "+task=polyfit", "trainer.max_steps=20")
    assert sweep.returncode == 0, sweep.describe()

    # A sampling sweeper can repeat values: each folder starts with its job number.
    jobs = sweep.job_dirs()
    named = {job: re.fullmatch(r"(\d+)_optimizer\.lr=(.+)", job) for job in jobs}
    assert all(named.values()) and sorted(int(m.group(1)) for m in named.values()) == [0, 1, 2], sorted(jobs)
    for job, match in named.items():
        lr = float(match.group(2))
        assert 0.001 <= lr <= 0.1, job
        config = yaml.safe_load((jobs[job] / ".hydra" / "config.yaml").read_text())
        assert config["optimizer"]["lr"] == pytest.approx(lr), job
        assert sweep.result(job)["status"] == "completed", job

    rows = sweep.summary_rows()
    assert len(rows) == 3 and {row["job"] for row in rows} == set(jobs), rows
    best_loss = min(float(row["final_loss"]) for row in rows)

    # What the sweeper minimised is the final loss the app returned.
    reported = re.search(r"Best value: (\S+)", sweep.output)
    assert reported, sweep.describe()
    assert float(reported.group(1)) == pytest.approx(best_loss, rel=1e-9), sweep.describe()
    results = yaml.safe_load((sweep.sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best_loss, rel=1e-9)
    best_job = rows[0]["job"]
    assert results["best_params"]["optimizer.lr"] == pytest.approx(float(named[best_job].group(2)))


def test_optuna_search_goes_on_past_diverged_trials(tmp_path):
    """A diverged job is the worst trial, not the end of the search (Optuna 2 aborts on NaN)."""
    sweep = launch_sweep(tmp_path, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                         "hydra.sweeper.sampler.seed=0", "optimizer=sgd", "optimizer.lr=tag(log, interval(0.1, 1))",
                         "+task=polyfit", "trainer.max_steps=20")
    jobs = sweep.job_dirs()
    assert len(jobs) == 3, sweep.describe()
    assert all(sweep.result(job)["stop_reason"] == "non_finite_loss" for job in jobs), sweep.describe()
    assert "3 of 3 jobs failed" in sweep.stderr and "Traceback" not in sweep.output, sweep.describe()
    assert sweep.returncode != 0
    assert "setup plugin" not in sweep.output  # Optuna's database layer kept quiet
