"""End to end: sweeps through Hydra's submitit launcher in its local mode
(``hydra/launcher=submitit_local``), which starts each job's processes from the job's pickled
config as submitit does on SLURM (issue 11, point 3).

Each job is real processes (submitit's controller and one per task), so each test runs two
jobs of a few steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli.test_sweeps import Sweep, launch_sweep
from tests.conftest import cli_env
from tests.framework.compare import events
from tests.plain_linear import plain_linear
from tests.plugin_site import install_distribution, plugin_env

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

LOCAL = "hydra/launcher=submitit_local"
STEPS = 20


def no_other_run_folders(sweep: Sweep, base: Path) -> None:
    """No task claimed a folder of its own: the sweep folder is the only one, and nothing wrote
    Hydra's single-run folder (outputs/)."""
    assert sorted(path.name for path in base.iterdir() if path.is_dir()) == ["sweep"], sweep.describe()


def test_jobs_run_in_their_own_folders_and_return_their_loss_to_the_sweeper(tmp_path):
    """Optuna (a grid over two learning rates) through submitit_local: one job trains, one
    diverges. Each gets its own folder, result.json and TensorBoard run (with its figures) and
    cpus_per_task torch threads; the summary lists both; Optuna receives the loss each job
    returned; the sweep exits 5 for the failed job."""
    sweep = launch_sweep(tmp_path, LOCAL, "hydra.launcher.cpus_per_task=3",
                         "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.n_jobs=2", "optimizer.lr=choice(0.001, 1e9)",
                         "+task=linear", f"trainer.max_steps={STEPS}")
    assert sweep.returncode == 5, sweep.describe()
    assert "1 of 2 jobs failed" in sweep.stderr and "Traceback" not in sweep.output, sweep.describe()
    no_other_run_folders(sweep, tmp_path)

    jobs = {name: path for name, path in sweep.job_dirs().items() if name != ".submitit"}
    by_lr = {yaml.safe_load((path / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]: name
             for name, path in jobs.items()}
    assert set(by_lr) == {0.001, 1e9} and len(jobs) == 2, sweep.describe()

    trained, diverged = sweep.result(by_lr[0.001]), sweep.result(by_lr[1e9])
    params, final_loss = plain_linear(0.001, STEPS)
    assert (trained["status"], trained["steps"], trained["params"]) == ("completed", STEPS, params)
    assert trained["final_loss"] == pytest.approx(final_loss, rel=1e-6)
    assert (diverged["status"], diverged["stop_reason"]) == ("failed", "non_finite_loss")
    for name, path in jobs.items():
        # cpus_per_task is each job's torch threads (not torch's default: all cores, or OMP_NUM_THREADS).
        assert "(3 threads)" in (path / "framework.log").read_text(), name
    for name, path in jobs.items():  # each job folder is its TensorBoard run
        logged = [event.step for event in events(path).Scalars("train/loss")]
        assert logged and logged[-1] <= sweep.result(name)["steps"], name
    # The figures too: a job's task waits for its figure writer before it exits (a scheduler
    # would end the writer with the job).
    assert {"fit/curve", "fit/loss"} <= set(events(jobs[by_lr[0.001]]).Tags()["images"])

    rows = {row["job"]: row for row in sweep.summary_rows()}
    assert set(rows) == set(jobs)
    assert (rows[by_lr[0.001]]["status"], rows[by_lr[1e9]]["status"]) == ("completed", "failed")

    # What Optuna minimised is what the jobs returned: the trained job's final loss, the failed
    # one's +inf (its worst), across the processes submitit started.
    best = yaml.safe_load((sweep.sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(trained["final_loss"], rel=1e-12)
    assert best["best_params"] == {"optimizer.lr": 0.001}


# A Hydra callback that every task of a job runs after the job function: it records the
# environment the task got and joins the job's process group with it (gloo, env://), as
# trainer.strategy=ddp does.
TASK_PROBE = '''
    import json
    import os
    from datetime import timedelta
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig
    from hydra.experimental.callback import Callback

    NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


    class RecordTask(Callback):
        def on_job_end(self, config, job_return, **kwargs):
            record = {name: os.environ.get(name) for name in NAMES}
            dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=120))
            ranks = torch.tensor([float(dist.get_rank())])
            dist.all_reduce(ranks)
            record.update(group_rank=dist.get_rank(), group_size=dist.get_world_size(), rank_sum=ranks.item(),
                          pid=os.getpid(), job_id=os.environ.get("SUBMITIT_LOCAL_JOB_ID"))
            dist.destroy_process_group()
            folder = Path(HydraConfig.get().runtime.output_dir)
            (folder / f"task_{record['RANK']}.json").write_text(json.dumps(record))
'''


def test_a_job_of_two_tasks_gets_torchruns_variables_and_one_folder(tmp_path):
    """Two jobs of two tasks each: every task gets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_* from
    submitit, the two tasks of a job form one process group (and the two jobs two groups), and
    each job has one folder, whose log file only rank 0 writes."""
    (tmp_path / "task_probe.py").write_text(textwrap.dedent(TASK_PROBE))
    sweep = launch_sweep(tmp_path, LOCAL, "hydra.launcher.tasks_per_node=2",
                         "+hydra.callbacks.probe._target_=task_probe.RecordTask",
                         "+task=linear", "trainer.seed=1,2", "trainer.max_steps=5", "logger=[]",
                         "trainer.strategy=single")  # the probe, not the fit, joins the tasks' group
    no_other_run_folders(sweep, tmp_path)
    jobs = {name: path for name, path in sweep.job_dirs().items() if name != ".submitit"}
    assert set(jobs) == {"trainer.seed=1", "trainer.seed=2"}, sweep.describe()

    ports = set()
    for name, folder in jobs.items():
        tasks = [json.loads((folder / f"task_{rank}.json").read_text()) for rank in (0, 1)]
        for rank, task in enumerate(tasks):
            assert (task["RANK"], task["LOCAL_RANK"], task["WORLD_SIZE"], task["LOCAL_WORLD_SIZE"]) == (
                str(rank), str(rank), "2", "2"), (name, task)
            assert (task["group_rank"], task["group_size"], task["rank_sum"]) == (rank, 2, 1.0), (name, task)
        assert tasks[0]["pid"] != tasks[1]["pid"] and tasks[0]["job_id"] == tasks[1]["job_id"], tasks
        assert [task["MASTER_ADDR"] for task in tasks] == [tasks[0]["MASTER_ADDR"]] * 2
        assert [task["MASTER_PORT"] for task in tasks] == [tasks[0]["MASTER_PORT"]] * 2
        ports.add(tasks[0]["MASTER_PORT"])
        assert sorted(path.name for path in folder.glob("task_*.json")) == ["task_0.json", "task_1.json"]
        # Both tasks logged the warning that they train apart without ddp; the run's log file has rank 0's.
        assert (folder / "framework.log").read_text().count("trainer.strategy=ddp") == 1, name
    assert len(ports) == 2  # the jobs run side by side: each its own rendezvous
    assert {row["job"] for row in sweep.summary_rows()} == set(jobs)


def test_a_ddp_job_of_one_task_trains_as_a_group_of_one(tmp_path):
    """trainer.strategy=ddp in a job of one task runs as torchrun --nproc_per_node=1 would, where
    it was refused for want of torchrun's variables; and as the same job in one process does."""
    sweep = launch_sweep(tmp_path, LOCAL, "hydra.launcher.tasks_per_node=1", "+task=linear", "trainer.device=cpu",
                         f"trainer.max_steps={STEPS}", "logger=[]", "trainer.strategy=ddp,single")
    jobs = {name: path for name, path in sweep.job_dirs().items() if name != ".submitit"}
    results = {name: json.loads((folder / "result.json").read_text()) for name, folder in jobs.items()}
    assert {name: result["status"] for name, result in results.items()} == {
        "trainer.strategy=ddp": "completed", "trainer.strategy=single": "completed"}, sweep.describe()
    assert "data-parallel training over 1 processes (gloo)" in (jobs["trainer.strategy=ddp"] / "framework.log").read_text()
    assert results["trainer.strategy=ddp"]["final_loss"] == results["trainer.strategy=single"]["final_loss"]


def processes_of(sweep_dir: Path, module: bytes) -> list[int]:
    """The pids of the processes whose command line runs a ``module`` of submitit's on the
    sweep's ``.submitit`` folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(module in word for word in words) and any(str(sweep_dir).encode() in word for word in words):
            pids.append(int(entry.name))
    return pids


def task_processes(sweep_dir: Path) -> list[int]:
    """The pids of the submitit tasks (``python -m submitit.core._submit <sweep>/.submitit/...``)."""
    return processes_of(sweep_dir, b"submitit.core._submit")


def task_log(sweep_dir: Path, pid: int) -> str:
    """What the submitit task ``pid`` has logged (its job's ``.submitit/<job id>/<job id>_0_log.out``)."""
    variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    environ = dict(item.split(b"=", 1) for item in variables if b"=" in item)
    job_id = environ[b"SUBMITIT_LOCAL_JOB_ID"].decode()
    return (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()


def sweep_processes(sweep_dir: Path) -> list[int]:
    """The pids of the submitit controllers and tasks of the sweep."""
    return processes_of(sweep_dir, b"submitit.")


@contextlib.contextmanager
def sweep_in_its_own_group(tmp_path: Path, sweep_dir: Path, *args: str, env: dict | None = None,
                           launcher: str = LOCAL):
    """``python -m framework -m LAUNCHER ARGS`` in its own process group, as from a terminal of
    its own (:func:`ended_sweep` reads its outputs). If the test fails while the sweep runs, the
    group is killed, and any process of the sweep's jobs that left it: no job is left training."""
    process = subprocess.Popen(
        [sys.executable, "-m", "framework", "-m", launcher, *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in sweep_processes(sweep_dir):  # before reading: they would hold its pipes open
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if process.returncode is None:
            process.communicate()


def wait_until_training(process: subprocess.Popen, jobs: list[Path], deadline: float) -> None:
    while not all((job / "framework.log").exists() and "step 1/" in (job / "framework.log").read_text()
                  for job in jobs):
        assert process.poll() is None and time.monotonic() < deadline, "the jobs did not start training"
        time.sleep(0.2)


def ended_sweep(process: subprocess.Popen, sweep_dir: Path, timeout: float) -> Sweep:
    stdout, stderr = process.communicate(timeout=timeout)
    return Sweep(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), sweep_dir)


# Seconds of training: the warning, sent once the job has logged its first step, reaches it
# under way (a few hundred steps in, here).
REQUEUED_STEPS = 20_000
REQUEUED_LR = 1e-5  # far from converged after REQUEUED_STEPS: the parameters show every step


def requeued_and_resumed_as_uninterrupted(sweep: Sweep, job: Path, lr: float, steps: int) -> int:
    """The job was stopped, requeued, resumed from its checkpoint and completed as the plain
    loop's uninterrupted run, bit for bit; the step it was stopped at."""
    log = (job / "framework.log").read_text()
    stopped_at = re.search(r"resumed from \S+step_(\d+)\.pt at step (\d+)", log)
    assert stopped_at and 0 < int(stopped_at[2]) < steps, log[-3000:]
    assert int(stopped_at[1]) == int(stopped_at[2])
    assert "requeueing the job" in log and "this job was requeued" in log, log[-3000:]
    result = sweep.result(job.name)
    params, _ = plain_linear(lr, steps)
    assert (result["status"], result["steps"], result["params"]) == ("completed", steps, params), result
    return int(stopped_at[2])


def test_the_schedulers_warning_requeues_the_job_which_resumes_and_sigterm_stops_the_sweep(tmp_path):
    """The scheduler's warning before a time limit (USR2, to a job's task, as submitit's
    controller sends it) stops that job as SIGTERM does, with a checkpoint; submitit requeues it,
    and the requeued job resumes from that checkpoint in its folder and ends as the plain loop's
    uninterrupted run, bit for bit. Then SIGTERM to the sweep's process (what `kill` sends)
    reaches the other job's task through submitit's controller: it saves a checkpoint and an
    interrupted result.json, the summary lists both jobs, and the sweep exits 143."""
    sweep_dir = tmp_path / "sweep"
    warned = sweep_dir / f"trainer.max_steps={REQUEUED_STEPS}"
    endless = sweep_dir / "trainer.max_steps=1000000000"
    with sweep_in_its_own_group(tmp_path, sweep_dir, "+task=linear", f"optimizer.lr={REQUEUED_LR}",
                                f"trainer.max_steps={REQUEUED_STEPS},1000000000") as process:
        deadline = time.monotonic() + 240
        wait_until_training(process, [warned], deadline)
        (warned_task,) = [pid for pid in task_processes(sweep_dir)
                          if f"for {REQUEUED_STEPS} steps" in task_log(sweep_dir, pid)]
        os.kill(warned_task, signal.SIGUSR2)
        while not (warned / "result.json").exists() or sweep_result(warned)["status"] != "completed":
            assert process.poll() is None and time.monotonic() < deadline, "the warned job did not end"
            time.sleep(0.2)
        wait_until_training(process, [endless], deadline)
        endless_was_running = not (endless / "result.json").exists()
        process.send_signal(signal.SIGTERM)
        sweep = ended_sweep(process, sweep_dir, timeout=120)
    assert endless_was_running, sweep.describe()
    assert sweep.returncode == 128 + signal.SIGTERM, sweep.describe()

    requeued_and_resumed_as_uninterrupted(sweep, warned, REQUEUED_LR, REQUEUED_STEPS)

    result = sweep.result(endless.name)
    assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGTERM"), result
    saved = sorted((endless / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name == f"step_{result['steps']:010d}.pt", saved
    rows = {row["job"]: row["status"] for row in sweep.summary_rows()}
    assert rows == {warned.name: "completed", endless.name: "interrupted"}, rows


# A plugin whose last work after a fit (framework_fit_end) takes longer than the second that
# submitit's controller gave a job's tasks before SIGKILL, when a Ctrl-C reached it too.
SLOW_LAST_SAVE = '''
    import time

    from framework import hookimpl

    @hookimpl
    def framework_fit_end(state, result):
        time.sleep(2.5)
        (state.run.run_dir / "slow_save_done").write_text(result["status"])
'''


@pytest.mark.parametrize("setup", [[], ["+hydra.launcher.setup=[echo setting up]"]], ids=["python", "setup"])
def test_ctrl_c_stops_every_job_cleanly_however_long_its_last_save(tmp_path, setup):
    """A terminal's Ctrl-C (SIGINT to the sweep's process group) reaches the jobs' tasks, which
    save a checkpoint and an interrupted result.json, and a plugin's final work of 2.5 s ends
    too; submitit's controllers print no traceback and kill nothing (they sent SIGKILL a second
    after the Ctrl-C). Every process of the sweep is in its group, so a hangup or a SIGKILL to
    the group ends them all. With ``hydra.launcher.setup`` the controller is started by a shell.
    The sweep exits 130."""
    site = install_distribution(tmp_path / "site", distribution="slow-save", package="slow_save",
                                source=SLOW_LAST_SAVE, entry_point="slow_save")
    sweep_dir = tmp_path / "sweep"
    jobs = [sweep_dir / "trainer.max_steps=1000000000", sweep_dir / "trainer.max_steps=1000000001"]
    with sweep_in_its_own_group(tmp_path, sweep_dir, "+task=linear", "trainer.max_steps=1000000000,1000000001",
                                *setup, env=plugin_env(site)) as process:
        wait_until_training(process, jobs, time.monotonic() + 240)
        in_group = {pid: os.getpgid(pid) == process.pid for pid in sweep_processes(sweep_dir)}
        os.killpg(process.pid, signal.SIGINT)
        sweep = ended_sweep(process, sweep_dir, timeout=120)
    assert len(in_group) >= 4 and all(in_group.values()), in_group  # two controllers, two tasks
    assert sweep.returncode == 128 + signal.SIGINT, sweep.describe()
    assert "Traceback" not in sweep.output, sweep.describe()
    for job in jobs:
        result = sweep.result(job.name)
        assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGINT"), result
        saved = sorted((job / "checkpoints").glob("step_*.pt"))
        assert saved and saved[-1].name == f"step_{result['steps']:010d}.pt", saved
        assert (job / "slow_save_done").read_text() == "interrupted", sweep.describe()
    assert {row["job"]: row["status"] for row in sweep.summary_rows()} == {job.name: "interrupted" for job in jobs}
    assert not sweep_processes(sweep_dir)


def sweep_result(job: Path) -> dict:
    try:
        return json.loads((job / "result.json").read_text())
    except (OSError, ValueError):  # being replaced
        return {"status": None}


def test_a_killed_job_is_reported_once_the_other_jobs_have_ended(tmp_path):
    """A job whose process is killed (SIGKILL: out of memory, a failed node) leaves no result, and
    submitit's launcher raises as soon as it reaches it; the sweep still waits for the job that
    is running, summarises both, names the lost one and exits 5."""
    sweep_dir = tmp_path / "sweep"
    endless, short = sweep_dir / "trainer.max_steps=1000000000", sweep_dir / "trainer.max_steps=60000"
    with sweep_in_its_own_group(tmp_path, sweep_dir, "+task=linear", "trainer.max_steps=1000000000,60000") as process:
        wait_until_training(process, [endless, short], time.monotonic() + 240)
        # The endless job is the sweep's first: the launcher reaches it while the other runs.
        (endless_task,) = [pid for pid in task_processes(sweep_dir)
                           if "for 1000000000 steps" in task_log(sweep_dir, pid)]
        os.kill(endless_task, signal.SIGKILL)
        short_was_running = not (short / "result.json").exists()
        sweep = ended_sweep(process, sweep_dir, timeout=240)
    assert short_was_running, "the short job ended before the other was killed: nothing was waited for"
    assert sweep.returncode == 5, sweep.describe()
    assert "error: a job ended without a result" in sweep.stderr and "Traceback" not in sweep.output, sweep.describe()
    assert (sweep.result(short.name)["status"], sweep.result(short.name)["steps"]) == ("completed", 60000)
    assert not (endless / "result.json").exists()
    rows = {row["job"]: row for row in sweep.summary_rows()}
    assert (rows[short.name]["status"], rows[endless.name]["status"]) == ("completed", "failed"), rows
