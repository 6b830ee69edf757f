"""End to end: sweeps through Hydra's submitit launcher for SLURM (``hydra/launcher=submitit_slurm``)
on a stand-in for a one-node cluster (:mod:`tests.fake_slurm`: ``sbatch``, ``srun``, ``sacct``,
``scancel`` and ``scontrol`` that do on this machine what SLURM does with what submitit gives
them). What runs is submitit's SLURM executor as on a cluster: its batch script, its job arrays,
its ``srun`` tasks reading SLURM's variables, its ``sacct`` polls and its ``scontrol requeue``
(issue 11, point 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests import fake_slurm
from tests.cli.test_submitit import (
    ended_sweep,
    no_other_run_folders,
    requeued_and_resumed_as_uninterrupted,
    sweep_in_its_own_group,
    sweep_result,
    wait_until_training,
)
from tests.cli.test_sweeps import Sweep
from tests.conftest import cli_env, run_cli
from tests.framework.compare import events
from tests.plain_linear import plain_linear

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SLURM = "hydra/launcher=submitit_slurm"
STEPS = 20


@contextlib.contextmanager
def fake_cluster(tmp_path: Path):
    """The environment that puts the fake cluster's commands first on the PATH (its files in
    ``tmp_path/cluster``), and the folder to run the sweep from (``tmp_path/work``); every job
    the cluster started is killed when the test ends."""
    state = tmp_path / "cluster" / "state"
    (tmp_path / "work").mkdir()
    try:
        yield fake_slurm.install(tmp_path / "cluster" / "bin", state), tmp_path / "work"
    finally:
        fake_slurm.end_all(state)


def slurm(env: dict, *args: str) -> None:
    """One of the fake cluster's commands, as a user types it."""
    subprocess.run(list(args), env=cli_env(env), check=True, timeout=60)


def submitted_jobs(state: Path) -> dict[str, dict]:
    """{SLURM job id (``A_a`` for an array's task): what the fake cluster knows of it}."""
    return {path.stem: json.loads(path.read_text()) for path in state.glob("*.json")}


def wait_for_status(job: Path, status: str, deadline: float) -> None:
    while sweep_result(job)["status"] != status:
        assert time.monotonic() < deadline, f"{job.name} did not reach {status!r}: {sweep_result(job)}"
        time.sleep(0.2)


def completed_sweep_on_cluster(tmp_path: Path, *args: str) -> tuple[Sweep, dict[str, dict]]:
    """``python -m framework -m SLURM ARGS`` on the fake cluster, run to its end (exit 0), no run
    folder but the sweep's; the sweep, and the jobs the cluster ran."""
    with fake_cluster(tmp_path) as (env, work):
        sweep_dir = work / "sweep"
        ran = run_cli("-m", SLURM, *args, f"hydra.sweep.dir={sweep_dir}", cwd=work, env=env)
        sweep = Sweep(ran, sweep_dir)
        assert ran.returncode == 0, sweep.describe()
        jobs = submitted_jobs(Path(env["FAKE_SLURM_DIR"]))
    no_other_run_folders(sweep, work)
    return sweep, jobs


def test_a_sweep_runs_as_a_job_array_each_job_in_its_own_folder(tmp_path):
    """Two jobs: one sbatch of a two-task array, with the launcher's settings as #SBATCH lines;
    each array task's srun starts the job's process, which knows itself as that task, trains in
    its own folder, gets the plain loop's parameters, and writes result.json and TensorBoard; the
    summary lists both."""
    sweep, jobs = completed_sweep_on_cluster(tmp_path, "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=5",
                                             "+task=linear", f"trainer.max_steps={STEPS}", "optimizer.lr=0.001,0.01")
    sweep_dir = sweep.sweep_dir
    assert sorted(jobs) == ["1001_0", "1001_1"], jobs  # one array: one sbatch
    script = Path(jobs["1001_0"]["script"]).read_text()
    for line in ("#SBATCH --array=0-1%", "#SBATCH --partition=debug", "#SBATCH --time=5",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@", "export SUBMITIT_EXECUTOR=slurm\nsrun "):
        assert line in script, script

    for index, lr in enumerate((0.001, 0.01)):
        folder = sweep_dir / f"optimizer.lr={lr}"
        result = sweep.result(folder.name)
        params, final_loss = plain_linear(lr, STEPS)
        assert (result["status"], result["steps"], result["params"]) == ("completed", STEPS, params), result
        assert result["final_loss"] == pytest.approx(final_loss, rel=1e-6)
        # Its figures too, once the sweep has its result: the job's task waited for them (the
        # cluster then ends every process of the job, the figure writer with it).
        assert {"fit/curve", "fit/loss"} <= set(events(folder).Tags()["images"]), folder
        # The job's process ran as the array's task `index` (submitit read SLURM's variables).
        task_log = (sweep_dir / ".submitit" / f"1001_{index}" / f"1001_{index}_0_log.out").read_text()
        assert f"JobEnvironment(job_id=1001_{index}," in task_log and "global_rank=0(1)" in task_log, task_log
        assert f"lr={lr}" in (folder / ".hydra" / "overrides.yaml").read_text()
    assert {row["job"]: row["status"] for row in sweep.summary_rows()} == {
        "optimizer.lr=0.001": "completed", "optimizer.lr=0.01": "completed"}


def test_a_job_of_two_tasks_trains_one_model_with_ddp(tmp_path):
    """One job (a plain sbatch, no array) of two srun tasks, ``trainer.strategy=ddp``: the tasks
    join one gloo group from SLURM's variables, train the full batch split between them, and rank
    0 writes the one run folder; the parameters are the single-process loop's."""
    sweep, jobs = completed_sweep_on_cluster(tmp_path, "hydra.launcher.tasks_per_node=2", "trainer.strategy=ddp",
                                             "+task=linear", f"trainer.max_steps={STEPS}", "optimizer.lr=0.01")
    sweep_dir = sweep.sweep_dir
    assert list(jobs) == ["1001"] and "--array" not in Path(jobs["1001"]["script"]).read_text(), jobs
    assert "#SBATCH --ntasks-per-node=2" in Path(jobs["1001"]["script"]).read_text()
    (folder,) = [path for path in sweep.job_dirs().values() if path.name != ".submitit"]
    log = (folder / "framework.log").read_text()
    assert "data-parallel training over 2 processes (gloo)" in log, log
    task_logs = [(sweep_dir / ".submitit" / "1001" / f"1001_{rank}_log.out").read_text() for rank in (0, 1)]
    for rank, task_log in enumerate(task_logs):
        assert f"global_rank={rank}(2)" in task_log, task_log
    result = sweep.result(folder.name)
    params, final_loss = plain_linear(0.01, STEPS)
    assert (result["status"], result["steps"]) == ("completed", STEPS), result
    # Each rank's two rows' gradient, averaged by DDP: the full batch's, up to rounding.
    assert result["params"].keys() == params.keys()
    for name, value in params.items():
        torch.testing.assert_close(torch.tensor(result["params"][name]), torch.tensor(value), rtol=1e-5, atol=0)
    assert result["final_loss"] == pytest.approx(final_loss, rel=1e-5)
    assert [row["status"] for row in sweep.summary_rows()] == ["completed"]


# Seconds of training: the warning, sent once the job has logged its first step, reaches it
# under way.
REQUEUED_STEPS = 20_000
REQUEUED_LR = 1e-5  # far from converged after REQUEUED_STEPS: the parameters show every step


def test_the_schedulers_warning_requeues_the_job_and_scancel_signal_term_stops_one_cleanly(tmp_path):
    """SLURM's warning before a time limit (``scancel --signal=USR2``, what ``--signal=USR2@120``
    sends: to every process of the job's step) stops that job with a checkpoint, and its figures
    are written; submitit's ``scontrol requeue`` ends the job (SIGTERM to its processes, srun
    kills its tasks) and SLURM runs it again, and it resumes from that checkpoint and ends as the
    plain loop's uninterrupted run, bit for bit. ``scancel --signal=TERM`` of the other job (to
    its tasks) stops it with a checkpoint and an interrupted result.json; the sweep summarises
    both and exits 5, one job not having completed (the sweep itself was not interrupted)."""
    sweep_dir = tmp_path / "work" / "sweep"
    warned = sweep_dir / f"trainer.max_steps={REQUEUED_STEPS}"
    stopped = sweep_dir / "trainer.max_steps=1000000000"
    with fake_cluster(tmp_path) as (env, work), sweep_in_its_own_group(
            work, sweep_dir, "+task=linear", f"optimizer.lr={REQUEUED_LR}",
            f"trainer.max_steps={REQUEUED_STEPS},1000000000",
            env={**env, fake_slurm.KILL_WAIT_ENV: "0.2"}, launcher=SLURM) as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [warned, stopped], deadline)
        slurm(env, "scancel", "--signal=USR2", "1001_0")
        wait_for_status(warned, "completed", deadline)
        stopped_was_running = not (stopped / "result.json").exists()
        slurm(env, "scancel", "--signal=TERM", "1001_1")
        sweep = ended_sweep(process, sweep_dir, timeout=120)
        jobs = submitted_jobs(Path(env["FAKE_SLURM_DIR"]))
    assert stopped_was_running, sweep.describe()
    # The signal was for that job alone: the sweep was not interrupted, one of its jobs was.
    assert sweep.returncode == 5, sweep.describe()
    assert "1 of 2 jobs did not complete, stopped by a signal to them alone" in sweep.stderr, sweep.describe()
    assert not (sweep_dir / ".interrupted").exists()
    assert jobs["1001_0"]["restarts"] == 1 and jobs["1001_1"]["restarts"] == 0, jobs

    stopped_at = requeued_and_resumed_as_uninterrupted(sweep, warned, REQUEUED_LR, REQUEUED_STEPS)
    # The interrupted fit's loss figure, written before the requeue ended the job's processes
    # (a KillWait of 0.2 s leaves the figure writer no time after), and the resumed fit's.
    drawn = [image.step for image in events(warned).Images("fit/loss")]
    assert sorted(drawn) == [stopped_at, REQUEUED_STEPS], drawn

    result = sweep.result(stopped.name)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGTERM"), result
    saved = sorted((stopped / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name == f"step_{result['steps']:010d}.pt", saved
    rows = {row["job"]: row["status"] for row in sweep.summary_rows()}
    assert rows == {warned.name: "completed", stopped.name: "interrupted"}, (rows, sweep.describe())
    assert "Traceback" not in sweep.output, sweep.describe()


def test_a_job_slurm_will_not_requeue_ends_interrupted_and_a_cancelled_job_is_lost(tmp_path):
    """Jobs submitted with ``--no-requeue``: after the warning, the job saves, ``scontrol
    requeue`` is refused, and the job ends interrupted with its checkpoint, without a traceback.
    A plain ``scancel`` ends the other job's processes (srun answers SIGTERM with SIGKILL): it
    leaves no result, and the sweep lists it as failed and exits 5."""
    sweep_dir = tmp_path / "work" / "sweep"
    warned, cancelled = sweep_dir / "trainer.max_steps=1000000000", sweep_dir / "trainer.max_steps=1000000001"
    with fake_cluster(tmp_path) as (env, work), sweep_in_its_own_group(
            work, sweep_dir, "+hydra.launcher.additional_parameters={no-requeue:true}", "+task=linear",
            "trainer.max_steps=1000000000,1000000001", env=env, launcher=SLURM) as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [warned, cancelled], deadline)
        slurm(env, "scancel", "--signal=USR2", "1001_0")
        wait_for_status(warned, "interrupted", deadline)
        slurm(env, "scancel", "1001_1")
        sweep = ended_sweep(process, sweep_dir, timeout=120)
        jobs = submitted_jobs(Path(env["FAKE_SLURM_DIR"]))
    assert "#SBATCH --no-requeue" in Path(jobs["1001_0"]["script"]).read_text()
    assert jobs["1001_0"]["restarts"] == 0 and jobs["1001_1"]["state"].startswith("CANCELLED"), jobs
    assert sweep.returncode == 5, sweep.describe()
    assert "error: a job ended without a result" in sweep.stderr and "Traceback" not in sweep.output, sweep.describe()
    assert "the scheduler did not requeue it" in (warned / "framework.log").read_text()
    result = sweep.result(warned.name)
    assert result["status"] == "interrupted", result
    saved = sorted((warned / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name == f"step_{result['steps']:010d}.pt", saved
    assert sweep_result(cancelled)["status"] != "interrupted"  # killed: no last save
    rows = {row["job"]: row["status"] for row in sweep.summary_rows()}
    assert rows == {warned.name: "interrupted", cancelled.name: "failed"}, (rows, sweep.describe())


def test_ctrl_c_stops_watching_a_cluster_sweep_whose_jobs_run_on(tmp_path):
    """A Ctrl-C to the sweep's process (its terminal's group): the jobs are the cluster's, and
    this process only watches them. It writes the summary as the jobs are now (the running one
    ``running``), names the ``scancel`` that stops them and exits 130 at once, without marking
    the sweep interrupted, all of it even when an impatient second Ctrl-C comes; the running job
    goes on. The ``scancel --signal=INT`` it names then stops that job with a checkpoint."""
    sweep_dir = tmp_path / "work" / "sweep"
    endless, short = sweep_dir / "trainer.max_steps=1000000000", sweep_dir / "trainer.max_steps=20"
    with fake_cluster(tmp_path) as (env, work), sweep_in_its_own_group(
            work, sweep_dir, "+task=linear", "trainer.max_steps=1000000000,20", env=env, launcher=SLURM) as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [endless], deadline)
        wait_for_status(short, "completed", deadline)
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.002)  # while the first is being handled
        os.killpg(process.pid, signal.SIGINT)  # impatient: the summary is still whole
        sweep = ended_sweep(process, sweep_dir, timeout=60)
        running_after = submitted_jobs(Path(env["FAKE_SLURM_DIR"]))["1001_0"]["state"]
        steps_logged = (endless / "framework.log").read_text().count("step ")
        slurm(env, "scancel", "--signal=INT", "1001")
        wait_for_status(endless, "interrupted", deadline)
    assert sweep.returncode == 130, sweep.describe()
    assert "Traceback" not in sweep.output, sweep.describe()
    assert "`scancel --signal=INT 1001`" in sweep.stderr and "`scancel --state=PENDING 1001`" in sweep.stderr
    assert {row["job"]: row["status"] for row in sweep.summary_rows()} == {
        short.name: "completed", endless.name: "running"}, sweep.describe()
    assert not (sweep_dir / ".interrupted").exists()
    assert running_after == "RUNNING" and steps_logged > 0
    result = sweep.result(endless.name)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGINT"), result
    saved = sorted((endless / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name == f"step_{result['steps']:010d}.pt", saved


DDP_REQUEUED_STEPS = 3000  # gloo's all-reduce makes a step milliseconds


def test_a_ddp_job_warned_by_the_scheduler_is_requeued_and_both_ranks_resume(tmp_path):
    """A job of two srun tasks training with DDP: SLURM's warning reaches both tasks; they stop
    at the same step with one checkpoint, rank 0 has the job requeued, and both tasks of the
    requeued job resume from it and finish with the single-process loop's parameters (up to
    rounding: each rank takes half of the batch)."""
    sweep_dir = tmp_path / "work" / "sweep"
    job = sweep_dir / "job0"
    with fake_cluster(tmp_path) as (env, work), sweep_in_its_own_group(
            work, sweep_dir, "hydra.launcher.tasks_per_node=2", "trainer.strategy=ddp", "+task=linear",
            f"optimizer.lr={REQUEUED_LR}", f"trainer.max_steps={DDP_REQUEUED_STEPS}", env=env,
            launcher=SLURM) as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [job], deadline)
        slurm(env, "scancel", "--signal=USR2", "1001")
        sweep = ended_sweep(process, sweep_dir, timeout=240)
        jobs = submitted_jobs(Path(env["FAKE_SLURM_DIR"]))
    assert sweep.returncode == 0 and "Traceback" not in sweep.output, sweep.describe()
    assert jobs["1001"]["restarts"] == 1, jobs
    log = (job / "framework.log").read_text()
    assert "requeueing the job" in log and "data-parallel training over 2 processes" in log, log[-3000:]
    stopped_at = [int(step) for step in re.findall(r"resumed from \S+step_\d+\.pt at step (\d+)", log)]
    assert len(stopped_at) == 1 and 0 < stopped_at[0] < DDP_REQUEUED_STEPS, log[-3000:]
    # Rank 1 logs to its submitit file: it resumed too (from the same checkpoint, or DDP's
    # all-reduce would not have matched it with rank 0, and the parameters below would differ).
    rank_1 = (sweep_dir / ".submitit" / "1001" / "1001_1_log.out").read_text()
    assert "this job was requeued: resuming the run" in rank_1, rank_1[-3000:]
    result = sweep.result(job.name)
    params, final_loss = plain_linear(REQUEUED_LR, DDP_REQUEUED_STEPS)
    assert (result["status"], result["steps"]) == ("completed", DDP_REQUEUED_STEPS), result
    for name, value in params.items():
        torch.testing.assert_close(torch.tensor(result["params"][name]), torch.tensor(value), rtol=1e-5, atol=0)


def test_a_cancelled_job_is_reported_once_the_jobs_after_it_have_ended(tmp_path):
    """A plain ``scancel`` of the sweep's first job while the second trains: Hydra's launcher
    stops at the first job without a result, and the sweep still waits until SLURM says the
    other job has ended (here stopped by ``scancel --signal=INT``) before its summary: the first
    job failed, the second interrupted with its checkpoint, exit 5."""
    sweep_dir = tmp_path / "work" / "sweep"
    cancelled, later = sweep_dir / "trainer.max_steps=1000000000", sweep_dir / "trainer.max_steps=1000000001"
    with fake_cluster(tmp_path) as (env, work), sweep_in_its_own_group(
            work, sweep_dir, "+task=linear", "trainer.max_steps=1000000000,1000000001", env=env,
            launcher=SLURM) as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [cancelled, later], deadline)
        slurm(env, "scancel", "1001_0")
        # submitit asks sacct every few seconds this early, then waits 15 s for a result file
        # (a slow file system): by then the launcher has raised for the first job.
        time.sleep(25)
        still_watching = process.poll() is None and not (sweep_dir / "summary.md").exists()
        slurm(env, "scancel", "--signal=INT", "1001_1")
        sweep = ended_sweep(process, sweep_dir, timeout=120)
    assert still_watching, sweep.describe()
    assert sweep.returncode == 5, sweep.describe()
    assert "error: a job ended without a result" in sweep.stderr and "Traceback" not in sweep.output, sweep.describe()
    result = sweep.result(later.name)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGINT"), result
    assert not (cancelled / "result.json").exists()
    rows = {row["job"]: row["status"] for row in sweep.summary_rows()}
    assert rows == {cancelled.name: "failed", later.name: "interrupted"}, (rows, sweep.describe())
