"""End to end: ``python -m framework -m hydra/launcher=vectorized ...`` writes what the basic
launcher writes for the same sweep (issue 12, point 1): every job's folder with ``.hydra/``,
result.json (wall time apart), its TensorBoard curves and HParams, its final checkpoint (model,
optimizer state, progress), the sweep summary and the exit status, including a job that diverges
while the others go on (point 4)."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.cli.test_sweeps import launch_sweep
from tests.framework.compare import (assert_identical, curves, events, final_checkpoint, hparams_data,
                                     result_without_time)

# SGD at 0.01 diverges on polyfit (its stable bound is 2/L = 0.00056); the other two complete.
SWEEP = ("+task=polyfit", "optimizer=sgd", "optimizer.momentum=0.5", "optimizer.lr=0.0001,0.01,0.0003",
         "trainer.max_steps=300")


def basic_and_vectorized(tmp_path_factory, name: str, sweep: tuple[str, ...]):
    """The same sweep through the basic launcher, then the vectorized one."""
    basic = launch_sweep(tmp_path_factory.mktemp(f"basic_{name}"), *sweep)
    vectorized = launch_sweep(tmp_path_factory.mktemp(f"vectorized_{name}"), "hydra/launcher=vectorized", *sweep)
    return basic, vectorized


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    return basic_and_vectorized(tmp_path_factory, "lr", SWEEP)


def test_the_jobs_train_as_one_batch_and_the_sweep_ends_as_with_the_basic_launcher(sweeps):
    basic, vectorized = sweeps
    assert "trained jobs #0, #1, #2 as one batch" in vectorized.output, vectorized.describe()
    assert vectorized.returncode == basic.returncode == 5, vectorized.describe()  # one job diverged
    assert sorted(vectorized.job_dirs()) == sorted(basic.job_dirs()) == [
        "optimizer.lr=0.0001", "optimizer.lr=0.0003", "optimizer.lr=0.01"]


def test_every_job_folder_holds_what_the_basic_launcher_writes(sweeps):
    basic, vectorized = sweeps
    for job, basic_dir in basic.job_dirs().items():
        job_dir = vectorized.job_dirs()[job]
        for name in ("config.yaml", "overrides.yaml"):
            assert (job_dir / ".hydra" / name).read_text() == (basic_dir / ".hydra" / name).read_text(), (job, name)
        hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        assert hydra["hydra"]["launcher"]["_target_"].endswith("VectorizedLauncher")
        assert result_without_time(job_dir) == result_without_time(basic_dir), job
        assert curves(job_dir) == curves(basic_dir), job
        assert hparams_data(events(job_dir)) == hparams_data(events(basic_dir)), job
        figures = sorted(events(job_dir).Tags()["images"])
        assert figures == sorted(events(basic_dir).Tags()["images"]) and figures, job
    failed = vectorized.result("optimizer.lr=0.01")
    assert failed["status"] == "failed" and failed["stop_reason"] == "non_finite_loss"


def test_completed_jobs_end_with_the_basic_launchers_parameters_and_optimizer_state(sweeps):
    basic, vectorized = sweeps
    for job in ("optimizer.lr=0.0001", "optimizer.lr=0.0003"):
        left, right = final_checkpoint(vectorized.job_dirs()[job]), final_checkpoint(basic.job_dirs()[job])
        for part in ("model", "optimizer", "scheduler", "progress"):
            assert_identical(left[part], right[part], f"{job} {part}")


def test_the_summary_ranks_the_same_jobs_with_the_same_values(sweeps):
    basic, vectorized = sweeps

    def rows(sweep):
        return [{key: value for key, value in row.items() if key != "wall_s"} for row in sweep.summary_rows()]

    assert rows(vectorized) == rows(basic)


# Per-job stops that act in each job's replayed fit: the loss tolerance (lr 0.1, 0.5), early
# stopping (lr 0.003, whose loss falls too slowly), with every job's gradients clipped by its own
# norm and a checkpoint every 20 steps.
STOPS = ("+task=polyfit", "trainer.grad_clip=50", "trainer.tol.loss=1", "trainer.checkpoint_every=20",
         "trainer.keep_checkpoints=null", "trainer.max_steps=400", "callback=[early_stopping]",
         "callback.early_stopping.min_delta=500", "callback.early_stopping.patience=2",
         "optimizer.lr=0.003,0.02,0.1,0.5")


@pytest.fixture(scope="module")
def stop_sweeps(tmp_path_factory):
    return basic_and_vectorized(tmp_path_factory, "stops", STOPS)


def test_stops_clipping_and_checkpoints_act_per_job_as_with_the_basic_launcher(stop_sweeps):
    basic, vectorized = stop_sweeps
    assert "trained jobs #0, #1, #2, #3 as one batch" in vectorized.output, vectorized.describe()
    assert vectorized.returncode == basic.returncode == 0, vectorized.describe()
    reasons = {job: vectorized.result(job)["stop_reason"] for job in vectorized.job_dirs()}
    assert reasons["optimizer.lr=0.003"].startswith("early_stopping"), reasons
    assert reasons["optimizer.lr=0.1"].startswith("loss ") and reasons["optimizer.lr=0.5"].startswith("loss "), reasons
    steps = [vectorized.result(job)["steps"] for job in vectorized.job_dirs()]
    assert len(set(steps)) == len(steps) and max(steps) < 400, steps  # each job stopped at its own step
    compared = 0
    for job, basic_dir in basic.job_dirs().items():
        job_dir = vectorized.job_dirs()[job]
        assert result_without_time(job_dir) == result_without_time(basic_dir), job
        assert curves(job_dir) == curves(basic_dir), job
        saved = sorted(path.name for path in (basic_dir / "checkpoints").iterdir())
        assert sorted(path.name for path in (job_dir / "checkpoints").iterdir()) == saved, job
        compared += len(saved)
        for name in saved:
            left = torch.load(job_dir / "checkpoints" / name, weights_only=True)
            right = torch.load(basic_dir / "checkpoints" / name, weights_only=True)
            for part in ("model", "optimizer", "progress", "plugins"):
                assert_identical(left[part], right[part], f"{job} {name} {part}")
    assert compared > len(basic.job_dirs())  # periodic checkpoints too, not only each job's last


# bf16 autocast: the batched fit mirrors the default step in trainer.dtype only, so these jobs
# run one by one, as the basic launcher runs them.
BF16 = ("+task=polyfit", "trainer.precision=bf16", "trainer.max_steps=30", "optimizer.lr=0.01,0.02")


def test_jobs_with_another_precision_run_alone_and_say_why(tmp_path_factory):
    vectorized = launch_sweep(tmp_path_factory.mktemp("vectorized_bf16"), "hydra/launcher=vectorized", *BF16)
    basic = launch_sweep(tmp_path_factory.mktemp("basic_bf16"), *BF16)
    assert vectorized.returncode == basic.returncode == 0, vectorized.describe()
    assert "as one batch" not in vectorized.output, vectorized.describe()
    assert vectorized.output.count("runs alone: trainer.precision=bf16") == 2, vectorized.describe()
    for job, basic_dir in basic.job_dirs().items():
        assert result_without_time(vectorized.job_dirs()[job]) == result_without_time(basic_dir), job


# Optuna hands the launcher n_jobs trials at a time and samples the next ones from the losses it
# got back: the second four learning rates are the same only if the first four jobs returned the
# same losses through both launchers.
OPTUNA = ("hydra/sweeper=optuna", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4", "hydra.sweeper.sampler.seed=3",
          "+task=polyfit", "trainer.max_steps=50", "optimizer.lr=tag(log, interval(0.001, 0.3))")


def test_under_optuna_each_batch_of_trials_trains_as_one_and_the_search_is_the_same(tmp_path_factory):
    basic, vectorized = basic_and_vectorized(tmp_path_factory, "optuna", OPTUNA)
    assert vectorized.returncode == basic.returncode == 0, vectorized.describe()
    assert vectorized.output.count("Launching 4 jobs: 4 in 1 batch(es)") == 2, vectorized.describe()
    assert sorted(vectorized.job_dirs()) == sorted(basic.job_dirs()) and len(basic.job_dirs()) == 8
    for job, basic_dir in basic.job_dirs().items():
        assert result_without_time(vectorized.job_dirs()[job]) == result_without_time(basic_dir), job
    best = [yaml.safe_load((sweep.sweep_dir / "optimization_results.yaml").read_text()) for sweep in (basic, vectorized)]
    assert best[0] == best[1] and best[0]["best_value"] is not None, best
