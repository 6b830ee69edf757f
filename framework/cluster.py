"""Jobs that Hydra's submitit launcher runs (``hydra/launcher=submitit_slurm`` on a cluster,
``submitit_local`` on this machine).

submitit starts each job's processes ("tasks": ``hydra.launcher.tasks_per_node`` on each of
``hydra.launcher.nodes``) from the job's pickled, already resolved config, and every task calls
the CLI's job function; nothing re-runs the sweep's command line, and no task re-resolves the
sweep's folder (Hydra copies the resolver cache, and so the claimed folder, into each job's
config). Here, before the fit:

- A task of a job with several tasks gets the environment torchrun gives its ranks (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), from
  submitit's own :class:`submitit.helpers.TorchDistributedEnvironment`, so that
  ``trainer.strategy=ddp`` (``init_process_group(init_method="env://")``) joins the job's tasks
  into one process group exactly as under torchrun.
- Only the first task (global rank 0) writes the job's log file in the run folder; the others
  log to their own submitit log (``<sweep>/.submitit/<job id>/<job id>_<rank>_log.out``).
- The scheduler's warning before a job's time limit or preemption (submitit asks SLURM for
  SIGUSR2, ``signal_delay_s`` ahead) stops the fit as SIGTERM does: a checkpoint, result.json
  with status ``interrupted``. Then submitit's own handler requeues the job (Hydra's launcher
  resubmits the same job; ``scontrol requeue`` on SLURM, a restart by its controller under
  submitit_local), and the job, started again in the same folder, resumes from that checkpoint
  (:func:`resume_if_requeued`): it ends as the uninterrupted job would have. submitit's handler
  alone would stop the job in the middle of a step, and the requeued job would start again from
  step 0. A job submitit does not requeue (requeued too often) stays interrupted, and only that
  job: a warning is the scheduler's word on one job, not the user's on the sweep.
- The TensorBoard logger's figure writer is waited for at the end of the job's fit, before the
  job returns its result or is requeued (the sweep reads the result at once, and SLURM ends a
  job's leftover processes: plugins/tensorboard_logger.py), and again when the task exits
  (plugins/_figure_writer.py). It ignores the warning, which SLURM sends to every process of
  the job's step.
- ``hydra.launcher.cpus_per_task``, where set, is the number of torch threads of each task
  (SLURM reserves that many cores; submitit_local does not pin, so this is how its parallel
  jobs share the cores).

Outside a submitit job nothing here does anything.

In the sweep's own process: a job whose process was killed (out of memory, by the scheduler, a
failed node) leaves no result, and the launcher raises as soon as it reaches that job, while
later jobs may still run. :func:`job_lost` turns that error into one that names it; the CLI
then waits for the local jobs still running and writes the summary (:func:`framework.cli.cut_short`).

In the sweep's own process under submitit_local, each job's controller is started so that a
Ctrl-C stops the jobs' tasks and not the controllers (:func:`keep_local_controllers_from_ctrl_c`).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from framework.errors import TrainingError

if TYPE_CHECKING:  # the figure writer imports this module: it stays light
    from omegaconf import DictConfig

log = logging.getLogger("framework")

# submitit sets it in every job it starts (to "local" or "slurm"); its JobEnvironment reads the
# scheduler's own variables, which a job started without submitit (srun python ...) also has.
SUBMITIT_EXECUTOR_ENV = "SUBMITIT_EXECUTOR"
# Left in the job's submitit folder (<sweep>/.submitit/<job id>/) by a task that has the job
# requeued, with the run folder to resume in it; the requeued job's tasks read it.
REQUEUED_MARK = "{job_id}_requeued_run"
# Hydra's launcher for submitit's local mode (hydra/launcher=submitit_local).
LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
# Hydra's launcher for SLURM (hydra/launcher=submitit_slurm).
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SUBMITIT_LAUNCHERS = (LOCAL_LAUNCHER, SLURM_LAUNCHER)


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in its submitit job."""

    rank: int  # global rank among the job's tasks
    tasks: int  # the job's tasks, on all its nodes
    # What the scheduler sends ahead of the time limit or a preemption: submitit's choice (USR2
    # unless SUBMITIT_PREEMPT_SIGNAL says otherwise).
    warning_signal: int


def in_submitit_job() -> bool:
    """Whether this process is a task of a submitit job."""
    return bool(os.environ.get(SUBMITIT_EXECUTOR_ENV))


def cluster_task() -> ClusterTask | None:
    """This process's task of a submitit job, or None outside one."""
    if not in_submitit_job():
        return None
    import submitit  # only in a submitit job, where it is installed

    job = submitit.JobEnvironment()
    return ClusterTask(rank=job.global_rank, tasks=job.num_tasks, warning_signal=job._usr_sig())


@dataclass
class SchedulersWarning:
    """Whether this task got the scheduler's warning, and submitit's own handler of it (which
    checkpoints the job's submission and requeues it)."""

    signum: int = 0
    received: bool = False
    requeue: Callable[[int, Any], None] | None = None


_warning = SchedulersWarning()


def stop_as_on_sigterm(signum: int, frame) -> None:
    """The scheduler's warning: a fit under way stops as on SIGTERM (framework.signals), and the
    job is requeued once it has saved (:func:`requeue_job`)."""
    _warning.received = True
    os.kill(os.getpid(), signal.SIGTERM)


def warned() -> bool:
    """Whether the scheduler's warning stopped this task's fit."""
    return _warning.received


def start_task(trainer: DictConfig, launcher: DictConfig) -> ClusterTask | None:
    """Prepare this process for its part of a submitit job (see the module's docstring); return
    its task, or None outside a submitit job."""
    task = cluster_task()
    if task is None:
        return None
    submitits = signal.signal(task.warning_signal, stop_as_on_sigterm)
    _warning.signum, _warning.received = task.warning_signal, False
    _warning.requeue = submitits if callable(submitits) else None
    threads = launcher.get("cpus_per_task")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    # A job of one task with trainer.strategy=ddp is a group of one, as torchrun
    # --nproc_per_node=1 makes it (a sweep of DDP jobs tried small first).
    if task.tasks > 1 or trainer.get("strategy") == "ddp":
        export_torchrun_env()
        if task.rank > 0:
            leave_log_file_to_rank_zero()
        if trainer.get("strategy") == "single":
            log.warning("this job runs %d processes (hydra.launcher.tasks_per_node x nodes); they train one "
                        "model together only with trainer.strategy=ddp or auto", task.tasks)
    return task


def requeue_job(run_dir: Path) -> None:
    """Once a fit stopped on the scheduler's warning has saved its checkpoint into ``run_dir``:
    have submitit requeue the job, which ends this process (SystemExit). Returns where the job
    is not requeued: submitit says why (it was requeued too often), and the job ends
    interrupted. On a task other than the first, submitit leaves the requeue to the first task
    (the requeue ends the job's every task)."""
    if _warning.requeue is None:
        log.warning("the scheduler's warning stopped the job, and nothing here can requeue it: it ends interrupted")
        return
    import submitit
    from submitit.core.utils import UncompletedJobError

    job = submitit.JobEnvironment()
    if job.global_rank == 0:
        from framework.outputs import atomic_write_text

        mark = job.paths.folder / REQUEUED_MARK.format(job_id=job.job_id)
        atomic_write_text(mark, str(run_dir))
        log.info("requeueing the job: it resumes from its checkpoint in %s", run_dir)
    try:
        _warning.requeue(_warning.signum, None)
    except UncompletedJobError as error:
        log.warning("the job ends interrupted: submitit does not requeue it (%s)", error)
    except (subprocess.SubprocessError, OSError) as error:  # scontrol refused (a job sbatch --no-requeue)
        log.warning("the job ends interrupted: the scheduler did not requeue it (%s)", error)


def resume_if_requeued(cfg: DictConfig) -> None:
    """In a job that :func:`requeue_job` requeued: set ``trainer.resume`` to the run folder its
    first run saved into, so that the fit goes on from the last checkpoint in that folder."""
    if not in_submitit_job():
        return
    import submitit

    job = submitit.JobEnvironment()
    try:
        run_dir = (job.paths.folder / REQUEUED_MARK.format(job_id=job.job_id)).read_text()
    except OSError:
        return  # the job's first run
    from framework.checkpoints import latest_checkpoint

    if latest_checkpoint(Path(run_dir)) is None:  # stopped before its fit saved anything
        log.info("this job was requeued before its run saved a checkpoint: it starts again in %s", run_dir)
        return
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.trainer.resume = run_dir
    log.info("this job was requeued: resuming the run in %s", run_dir)


def export_torchrun_env() -> None:
    """Set torchrun's variables for this task from submitit's job environment.

    ``overwrite``: the job's own values win over any the sweep's shell passed down (a job run from
    inside another job). CUDA_VISIBLE_DEVICES is left as the scheduler set it: as under torchrun,
    each rank sees the node's GPUs and uses ``cuda:LOCAL_RANK`` (submitit's default, device number
    LOCAL_RANK alone, would give GPUs to a CPU job that asked for none and pick the wrong ones of
    a ``visible_gpus`` subset).
    """
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def leave_log_file_to_rank_zero() -> None:
    """Stop writing this process's log into the run folder's log file: Hydra configured the same
    file in every task of the job, and rank 0 writes it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


# --------------------------------------------------------------------------------------------
# The sweep's process: a job that ended without a result
# --------------------------------------------------------------------------------------------


class JobLost(TrainingError):
    def __init__(self, detail: str, sweep_dir: Path) -> None:
        super().__init__(
            f"a job ended without a result: its process was killed (out of memory, by the scheduler, "
            f"a failed node) or could not start. submitit: {detail}. The other jobs ran to their end "
            f"(on a cluster, those still queued or running go on); see {sweep_dir}/summary.md"
        )


def job_lost(error: BaseException, sweep_dir: Path) -> JobLost | None:
    """``error`` as a :class:`JobLost` where it is submitit's word that a job left no result;
    None for any other error."""
    if "submitit" not in sys.modules:  # no submitit launcher ran
        return None
    from submitit.core.utils import UncompletedJobError

    if not isinstance(error, UncompletedJobError):
        return None
    return JobLost(str(error).strip().splitlines()[0], sweep_dir)


def jobs_folder(launcher: DictConfig) -> Path:
    """The folder in which submitit keeps a folder per job (``hydra.launcher.submitit_folder``,
    ``<sweep>/.submitit/%j`` by default, up to its ``%j``)."""
    return Path(str(launcher.submitit_folder).split("%j")[0])


def slurm_jobs(folder: Path) -> list[str]:
    """The SLURM jobs of a sweep (``A_i`` for an array's task, ``A`` alone), from submitit's
    folder of each (the one holding the job's pickle)."""
    return sorted(path.parent.name for path in Path(folder).glob("*/*_submitted.pkl"))


def slurm_job_ids(folder: Path) -> list[str]:
    """The SLURM job ids of a sweep's jobs: an array's for its tasks."""
    return sorted({job.split("_")[0] for job in slurm_jobs(folder)}, key=int)


def wait_for_cluster_jobs(folder: Path, poll_s: float = 2.0) -> None:
    """Wait until SLURM says every job of the sweep has ended (submitit's own check: its result
    file, or sacct), so that the summary sees their results."""
    from submitit.slurm.slurm import SlurmJob  # only on a cluster, where it is installed

    jobs = [SlurmJob(folder=Path(folder) / "%j", job_id=job) for job in slurm_jobs(folder)]
    while not all(job.done() for job in jobs):
        time.sleep(poll_s)


def wait_for_local_jobs(poll_s: float = 0.5) -> None:
    """Wait until the jobs submitit_local started from this process (its child processes, one
    controller a job) have all ended, so that the summary sees their results. On a cluster the
    jobs are not this process's children: nothing to wait for."""
    from framework.signals import child_processes  # not at import: the figure writer imports this module

    while child_processes():
        time.sleep(poll_s)


def keep_local_controllers_from_ctrl_c() -> bool:
    """submitit_local: start each job's controller with a Ctrl-C handler that does nothing, so
    that a terminal's Ctrl-C stops the jobs' tasks (each as a single run stops: a checkpoint,
    result.json) and the sweep, and leaves the controllers waiting for their tasks to end.
    Returns whether it did.

    A Ctrl-C reaches every process of the terminal's foreground group. submitit's controller
    (``python -m submitit.local._local FOLDER``, one a job) took it as a KeyboardInterrupt: it
    printed its traceback, sent its tasks SIGINT again and SIGKILL a second later, which could
    cut a slow last save short. The controller now runs that same module after setting its
    handler; a handler (unlike an ignored signal) is reset by ``exec``, so the tasks it starts
    take Ctrl-C as usual. The controllers stay in the terminal's process group: a hangup, a
    SIGTERM or SIGKILL to the group reaches them as before. The command is rewritten only where
    it has the form this submitit gives it.
    """
    from submitit.local import local

    if getattr(local.subprocess, "framework_controllers_ignore_ctrl_c", False):
        return True
    if local.subprocess is not subprocess or not hasattr(local, "start_controller"):
        return False

    def popen(command, *args, **kwargs):
        return subprocess.Popen(controller_ignoring_ctrl_c(command), *args, **kwargs)

    # The module's own name for subprocess, used by start_controller in this process (the
    # controller starts the tasks in its own process, with the module it imports there).
    patched = types.SimpleNamespace(**vars(subprocess))
    patched.Popen = popen
    patched.framework_controllers_ignore_ctrl_c = True
    local.subprocess = patched
    return True


LOCAL_CONTROLLER = ["-m", "submitit.local._local"]
# The controller's module run after a Ctrl-C handler that does nothing (``python -c`` leaves the
# folder as sys.argv[1], where the module reads it).
CONTROLLER_IGNORING_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, lambda signum, frame: None); "
    "runpy.run_module('submitit.local._local', run_name='__main__', alter_sys=True)"
)


def controller_ignoring_ctrl_c(command):
    """submitit's controller command (a list, or a shell line after ``hydra.launcher.setup``)
    with the controller's module run by :data:`CONTROLLER_IGNORING_CTRL_C`; any other command
    unchanged."""
    if isinstance(command, list) and len(command) == 4 and command[1:3] == LOCAL_CONTROLLER:
        return [command[0], "-c", CONTROLLER_IGNORING_CTRL_C, command[3]]
    if isinstance(command, str):
        words = shlex.split(command)
        if len(words) >= 4 and words[-3:-1] == LOCAL_CONTROLLER:
            tail = shlex.join(words[-4:])
            if command.endswith(tail):
                return command[:-len(tail)] + shlex.join(controller_ignoring_ctrl_c(words[-4:]))
    return command
