"""``python -m framework``: plugins -> registry -> ConfigStore -> Hydra -> one run per job.

The CLI owns error reporting. It asks Hydra to let exceptions through (HYDRA_FULL_ERROR=1 for the
Hydra call only) and prints one paragraph per error; a user who sets HYDRA_FULL_ERROR=1 themselves
gets the full traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from framework import distributed, job_runs, schema_cache, sweep_configs
from framework.cluster import (
    SUBMITIT_LAUNCHERS,
    job_lost,
    requeue_job,
    resume_if_requeued,
    slurm_job_ids,
    start_task,
    wait_for_cluster_jobs,
    wait_for_local_jobs,
    warned,
)
from framework.console import stop_writing_to
from framework.eager_optimizers import skip_dynamo_import
from framework.error_messages import FULL_ERROR_ENV, describe_error
from framework.errors import STARTUP_INTERRUPTED, user_message
from framework.locations import config_dir
from framework.plugin_manager import build_registry, create_plugin_manager
from framework.outputs import unstarted_result, write_result
from framework.resume import run_folder_overrides
from framework.run import run_hydra_job
from framework.run_folders import register_resolvers
from framework.schema import null_group_overrides, store_configs
from framework.signals import (Interrupted, exit_code, handled_signals, interrupt_behind, interrupts_as_raised,
                               raise_interrupted, signal_of)
from framework.sweeps import (
    SweepSummary,
    exclude_fixed_overrides,
    help_without_sweeps,
    interrupted_by,
    mark_interrupted,
    threads_per_job,
)
from framework.vectorized import share_components

log = logging.getLogger("framework")

# At import, not in main(): parallel launchers (joblib) name job folders in worker processes,
# which import this module to run the job but never call main().
register_resolvers()


def main() -> None:
    # Under torchrun, every rank joins the process group here and all take rank 0's run folder.
    with distributed.launch_scope(sys.argv[1:]):
        run_command_line()


def run_command_line() -> None:
    user_wants_traceback = os.environ.get(FULL_ERROR_ENV) == "1"
    os.environ[FULL_ERROR_ENV] = "1"
    # A log line that cannot be written (stdout piped into `head`, a full disk under the log
    # file) is dropped, not reported with a traceback per line; the run goes on, and its run
    # folder keeps the record.
    logging.raiseExceptions = False
    SweepSummary.failure = SweepSummary.interrupted = SweepSummary.sweep_dir = None
    SweepSummary.summarised = SweepSummary.on_a_cluster = False
    jobs_started: list[bool] = []  # until a job's task function runs, no run folder says anything
    try:
        for signum in handled_signals():  # a fit turns them into a clean stop
            signal.signal(signum, raise_interrupted)
        sys.argv = [sys.argv[0], *distributed.hydra_overrides(
            run_folder_overrides(exclude_fixed_overrides(help_without_sweeps(null_group_overrides(sys.argv[1:])))))]
        cache = schema_cache.current()  # its key is taken before the plugins are imported
        manager = create_plugin_manager()
        registry = build_registry(manager)
        if cache is not None:
            cache.save(registry, manager)  # only if stale: the next --help needs no plugin
        store_configs(registry)
        share_components(manager, registry)  # for the vectorized launcher (hydra/launcher=vectorized)
        skip_dynamo_import()  # torch.optim would import torch._dynamo (2.5 s) for nothing
        failed_run: list[Exception] = []  # a single run's error, raised once Hydra is done

        def train(cfg: DictConfig) -> float | None:
            jobs_started.append(True)
            hydra_config = HydraConfig.get()
            multirun = hydra_config.mode == RunMode.MULTIRUN
            # Read in a sweep only: reading it claims the folder (framework_new_folder).
            sweep_dir = Path(hydra_config.sweep.dir) if multirun else None
            if multirun and interrupted_by(sweep_dir):
                skip_job(hydra_config)
                return math.inf
            # A task of a submitit job (hydra/launcher=submitit_*): torchrun's variables for its
            # ranks, its threads, rank 0 alone on the log file; nothing outside such a job.
            start_task(cfg.trainer, hydra_config.launcher)
            resume_if_requeued(cfg)  # a job requeued after the scheduler's warning goes on where it stopped
            skip_dynamo_import()  # again in a parallel launcher's worker process
            threads = threads_per_job(hydra_config.launcher.get("n_jobs"))
            if threads:  # parallel jobs share the cores instead of each taking all of them
                torch.set_num_threads(threads)
            with ctrl_c_only_while_working():
                return run_job(cfg, hydra_config, multirun, sweep_dir)

        def run_job(cfg: DictConfig, hydra_config, multirun: bool, sweep_dir: Path | None) -> float | None:
            try:
                with interrupts_as_raised():  # not reported as a failed job: the Ctrl-C it was
                    result = run_hydra_job(cfg, manager=manager, registry=registry)
            except KeyboardInterrupt as interrupt:  # Interrupted: a fit that stopped and saved
                if not multirun:
                    raise
                if warned():  # the scheduler's warning to this job alone: requeued (this process
                    # exits), or, where submitit does not requeue it, the job ends interrupted
                    requeue_job(Path(hydra_config.runtime.output_dir))
                    return math.inf
                # The job saved what it had, or, stopped before its fit, wrote that it was
                # interrupted; the sweep ends once the other running jobs have (a parallel
                # launcher would break its pool if the interrupt reached it). Not a submitit
                # job's signal: it was for that job alone (scancel, the scheduler), or the sweep's
                # own process got it too and marked the sweep; the jobs that start later run.
                if hydra_config.launcher.get("_target_") not in SUBMITIT_LAUNCHERS:
                    mark_interrupted(sweep_dir, signal_of(interrupt))
                return math.inf
            except Exception as error:
                report_job_failure(error, on_console=multirun)
                if multirun:
                    # One failed job does not stop the sweep: the summary lists it, and a
                    # sweeper (Optuna) scores it as the worst possible loss and goes on. Not
                    # NaN: Optuna 2 refuses a NaN value and aborts the whole search.
                    return math.inf
                # Raised by main() after Hydra returns, so Hydra adds no report of its own.
                failed_run.append(error)
                return None
            return result["final_loss"]  # what sweepers (Optuna) minimise

        app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(train)
        try:
            # A sweep composes each job's config once, cheaply; every job Hydra runs in this
            # process skips Hydra's throwaway copies of its config.
            with sweep_configs.installed(), job_runs.installed():
                app()
        except BaseException as error:
            cut_short(error)
        if failed_run:
            raise failed_run[0]
        if SweepSummary.interrupted is not None:
            print("interrupted: the jobs that were running saved a checkpoint (each one's log says how to "
                  "resume it); the jobs that had not started are listed as interrupted", file=sys.stderr)
            raise Interrupted(SweepSummary.interrupted, "sweep interrupted")
        if SweepSummary.failure is not None:
            raise SweepSummary.failure
    except KeyboardInterrupt as interrupt:
        exit_interrupted(interrupt, jobs_started)
    except BrokenPipeError:  # output piped into a reader that stopped early (| head)
        stop_writing_to(sys.stdout)
        sys.exit(1)
    except Exception as error:
        signum = interrupt_behind(error)
        if signum is not None:  # a Ctrl-C that a library's code turned into an error of its own
            exit_interrupted(Interrupted(signum), jobs_started)
        if user_wants_traceback:
            raise
        message, code = describe_error(error)
        if message:
            print(message, file=sys.stderr)
        sys.exit(code)
    finally:
        if not user_wants_traceback:
            os.environ.pop(FULL_ERROR_ENV, None)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            stop_writing_to(sys.stdout)


def exit_interrupted(interrupt: KeyboardInterrupt, jobs_started: list[bool]) -> NoReturn:
    """One line on stderr (a fit that was stopped has logged where it stopped and how to resume),
    and exit 128 + the signal."""
    if not getattr(interrupt, "message", ""):
        print("interrupted: the run folder keeps what was logged, and result.json says where it stopped"
              if jobs_started else STARTUP_INTERRUPTED, file=sys.stderr)
    sys.exit(exit_code(interrupt))


@contextlib.contextmanager
def ctrl_c_only_while_working():
    """In a parallel launcher's worker process: Ctrl-C stops the job it runs, and is ignored
    between jobs, when the worker waits or shuts down (the launcher's process stops the sweep;
    the worker would only print a traceback)."""
    if multiprocessing.parent_process() is None:  # the main process: its own handlers apply
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def cut_short(error: BaseException) -> None:
    """A sweep that Hydra or its launcher ended by an exception: its summary is still written.
    Where the sweep was interrupted (a Ctrl-C that reached a parallel launcher's workers while
    they started, which breaks its pool), that is what is reported; on a SLURM cluster, that this
    process stopped watching jobs that run on (:func:`stop_watching`); otherwise ``error`` (a
    submitit job that was killed, once the other local jobs have ended)."""
    sweep_dir = SweepSummary.sweep_dir
    if sweep_dir is None:
        if SweepSummary.summarised and isinstance(error, KeyboardInterrupt):
            return  # a Ctrl-C after the sweep ended and its summary was written: nothing to stop
        raise error
    if SweepSummary.on_a_cluster and isinstance(error, KeyboardInterrupt):
        stop_watching(sweep_dir, signal_of(error))
    lost = job_lost(error, sweep_dir)
    if lost is not None:  # a killed job: the others run on, and the summary waits for them
        if SweepSummary.on_a_cluster:
            try:
                wait_for_cluster_jobs(SweepSummary.cluster_jobs)
            except KeyboardInterrupt as interrupt:
                stop_watching(sweep_dir, signal_of(interrupt))
        else:
            wait_for_local_jobs()
        error = lost
    signum = interrupted_by(sweep_dir)
    if signum is None and isinstance(error, KeyboardInterrupt):
        signum = signal_of(error)
        mark_interrupted(sweep_dir, signum)
    SweepSummary.summarise()
    if signum is None:
        raise error
    # main() reports the interruption as for any interrupted sweep.


def stop_watching(sweep_dir: Path, signum: int) -> None:
    """A Ctrl-C or SIGTERM to the process of a sweep whose jobs run on a SLURM cluster: they are
    the cluster's and run on; this process writes the summary as the jobs are now, says how to
    stop them, and ends (exit 128 + the signal)."""
    SweepSummary.summarise(unwatched=True)
    jobs = " ".join(slurm_job_ids(SweepSummary.cluster_jobs)) or "<job id>"
    print(f"stopped watching the sweep; its jobs go on on the cluster (their folders are in {sweep_dir}). "
          f"`scancel --signal=INT {jobs}` stops those running, each saving a checkpoint, and `scancel "
          f"--state=PENDING {jobs}` those queued; `scancel {jobs}` ends them all at once", file=sys.stderr)
    raise Interrupted(signum, "stopped watching the sweep")


def skip_job(hydra_config) -> None:
    """A job of an interrupted sweep does not start; its result says so."""
    write_result(Path(hydra_config.runtime.output_dir), unstarted_result(
        task=hydra_config.runtime.choices.get("task"), status="interrupted", stop_reason="sweep interrupted",
        device="none", wall_s=0.0,
    ))
    log.warning("not started: the sweep was interrupted")


def report_job_failure(error: Exception, *, on_console: bool) -> None:
    """Log why a job failed into the run folder's log file (and so a sweep's summary).

    A sweep also shows it on the console as its jobs go; a single run leaves the console to
    main(), which prints it once, on stderr.
    """
    message = user_message(error)
    if on_console:
        log.error("%s", message)
        error.reported = True
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
