"""The vectorised launcher's work (issue 12): group a sweep's jobs, train each group as one
batched computation, and give every job the folder its own run would have written.

``python -m framework -m hydra/launcher=vectorized +task=polyfit 'optimizer.lr=0.001,0.01,0.1'``

1. **Group.** Jobs join one group when their composed configs are equal but for the numeric
   optimizer options (``PER_JOB_OPTIONS`` of ``framework_plugins._batched_optimizers``, which
   takes them per job) and ``trainer.seed``, and nothing in
   them needs a job's own loop (:func:`why_not_batched`). Each job of a group is then built as its
   own run builds it (its seed gives its initial values); jobs whose data or parameter shapes
   differ (a seed that draws the data) split the group. A group is cut into batches that fit the
   launcher's memory cap.
2. **Train.** Each batch of two jobs or more trains as one computation
   (:func:`framework.batched_fit.batched_fit`), recording every job's loss, parameters and
   gradients at every step.
3. **Write.** Every job then runs through ``run_job`` (Hydra's, its throwaway copies made cheap:
   :mod:`framework.job_runs`) and the framework's own fit, as with the basic launcher, except that
   its training step *replays* its record (:class:`Replay`): the step sets the parameters and
   gradients its own step would have computed and returns the same loss. Everything the fit writes
   (``.hydra/``, result.json, TensorBoard scalars, HParams and figures, checkpoints, the sweep
   summary, the value a sweeper reads) comes from the same code as for a job run alone, from the
   same numbers.

Jobs that fit no group, and groups that cannot be batched, run one by one exactly as the basic
launcher runs them, with a log line saying why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from framework.batched_fit import Trajectory, batched_fit, flat_trainable, is_flattened
from framework.errors import TrainingError
from framework.garbage_collection import freeze_survivors
from framework.markers import hookimpl
from framework.state import LoopState

log = logging.getLogger("framework.vectorized")

# Activations per job, in copies of the targets, for the memory cap: the predictions, the
# residuals and their gradients, with room to spare.
ACTIVATION_COPIES = 8
DEFAULT_STEP_PLUGIN = "default_step"


@dataclass
class SharedComponents:
    """The CLI's plugin manager and registry, which the launcher's runs use too."""

    manager: Any = None
    registry: Any = None


SHARED = SharedComponents()


def share_components(manager, registry) -> None:
    """Called by the CLI before Hydra starts: jobs are built and replayed with its plugins; and
    the launcher is made known to Hydra."""
    from hydra_plugins.framework_vectorized_launcher.vectorized_launcher import register

    SHARED.manager, SHARED.registry = manager, registry
    register()


@dataclass
class Job:
    index: int
    overrides: list[str]
    config: DictConfig  # the job's composed config, Hydra's node included
    state: LoopState | None = None
    trajectory: Trajectory | None = None
    alone_because: str | None = None


# ---------------------------------------------------------------------------------- grouping


# Callbacks that only read what the fit computes (their stops act in each job's replayed fit).
REPLAYABLE_CALLBACKS = ("early_stopping",)


def why_not_batched(task_config: dict[str, Any]) -> str | None:
    """Why a job must run alone (a setting that needs its own loop), or None.

    Stops that read the fit's numbers (``trainer.tol.*``, early stopping) are no reason: they act
    in the job's replayed fit, which then ends where its own run would end."""
    trainer = task_config.get("trainer", {})
    precision = str(trainer.get("precision", "32"))
    if precision != "32":
        # The batched fit mirrors the default step in trainer.dtype, without autocast or a scaler.
        return f"trainer.precision={precision} (the batched fit computes in trainer.dtype, without autocast)"
    if trainer.get("strategy") == "ddp":
        return "trainer.strategy=ddp (each job trains over its own processes)"
    if trainer.get("max_time") is not None:
        return "trainer.max_time is set (a stop on the clock cannot be replayed)"
    for name in ("resume", "init_from"):
        if trainer.get(name) is not None:
            return f"trainer.{name} is set"
    scheduler = (task_config.get("scheduler") or {}).get("name")
    if scheduler not in (None, "none"):
        return f"scheduler={scheduler} (schedules are not batched yet)"
    callbacks = [node.get("name", key) if isinstance(node, dict) else key
                 for key, node in (task_config.get("callback") or {}).items()]
    others = [name for name in callbacks if name not in REPLAYABLE_CALLBACKS]
    if others:
        return f"callbacks ({', '.join(others)}) may change a job as it trains"
    return None


def group_key(task_config: dict[str, Any]) -> str:
    """What must be equal for two jobs to share a batch: the config less the per-job numbers."""
    from framework_plugins._batched_optimizers import PER_JOB_OPTIONS

    config = json.loads(json.dumps(task_config, default=str))
    optimizer = config.get("optimizer") or {}
    for name in PER_JOB_OPTIONS:
        optimizer.pop(name, None)
    data = config.get("data") or {}
    if not data.get("shuffle"):  # the seed then draws initial values (and data, compared when built)
        config.get("trainer", {}).pop("seed", None)
    return json.dumps(config, sort_keys=True)


def task_part(config: DictConfig) -> dict[str, Any]:
    """The job's own config (Hydra's node left out), resolved: each of its top-level values in
    place (a tenth of the time of a resolved copy of the whole config: Hydra's node is most of it)."""
    return {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in config.items() if key != "hydra"}


def same_run_shape(a: LoopState, b: LoopState) -> bool:
    """Whether two built jobs can share a batch: the same data, the same parameters' names, shapes
    and dtypes, and the same step count."""
    run_a, run_b = a.run, b.run
    shapes_a = [(name, p.shape, p.dtype, p.device) for name, p in run_a.model.named_parameters()]
    shapes_b = [(name, p.shape, p.dtype, p.device) for name, p in run_b.model.named_parameters()]
    if shapes_a != shapes_b or list(run_a.trainable) != list(run_b.trainable) or run_a.max_steps != run_b.max_steps:
        return False
    if type(run_a.optimizer) is not type(run_b.optimizer) or is_flattened(a) != is_flattened(b):
        return False
    return same_data(run_a.data, run_b.data)


def same_data(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return (a.features.shape == b.features.shape and a.targets.shape == b.targets.shape
            and torch.equal(a.features, b.features) and torch.equal(a.targets, b.targets)
            and same_data(a.validation, b.validation))


def batch_bytes_per_job(state: LoopState) -> int:
    """Memory one job adds to a batch: its record of every step (loss, parameters, gradients,
    gradient norm, optimizer state: at most three tensors like the parameters and two counters)
    and its activations."""
    run = state.run
    width = sum(p.numel() for p in run.trainable.values())
    item = torch.empty((), dtype=run.dtype).element_size()
    rows = run.batch_size or len(run.data)
    activations = ACTIVATION_COPIES * rows * run.data.targets.shape[1]
    return (run.max_steps * (5 * width + 4) + activations) * item


def batches_of(jobs: list[Job], max_batch_mib: float, max_batch_jobs: int | None) -> list[list[Job]]:
    """``jobs`` (one group) cut into batches within the memory cap."""
    per_job = max(1, batch_bytes_per_job(jobs[0].state))
    size = max(1, int(max_batch_mib * 2**20 // per_job))
    if max_batch_jobs:
        size = min(size, max_batch_jobs)
    return [jobs[start:start + size] for start in range(0, len(jobs), size)]


def build_job(config: DictConfig) -> LoopState:
    """The job's run, built as its own fit builds it (checked config, seed, components)."""
    from framework.build import build_state
    from framework.devices import resolve_device, resolve_dtype, seed_everything
    from framework.job_runs import config_without_hydra
    from framework.run import checked_trainer

    task = config_without_hydra(config)
    trainer = checked_trainer(task)
    device, dtype = resolve_device(trainer.device), resolve_dtype(trainer.dtype)
    seed_everything(trainer.seed)
    return build_state(task, SHARED.registry, trainer=trainer, device=device, dtype=dtype)


def custom_steps() -> list[str]:
    """Plugins other than the default step that give the training step: their steps are not the
    default one the batched fit mirrors."""
    names = []
    for impl in SHARED.manager.hook.framework_configure_step.get_hookimpls():
        name = SHARED.manager.get_name(impl.plugin) or ""
        if not name.endswith(DEFAULT_STEP_PLUGIN) and not isinstance(impl.plugin, Replay):
            names.append(name)
    return names


def plan(jobs: list[Job], max_batch_mib: float, max_batch_jobs: int | None) -> list[list[Job]]:
    """Group and build the jobs; the batches to train (each of two jobs or more). Jobs in no
    batch have ``alone_because`` set."""
    steps = custom_steps()
    if steps:
        for job in jobs:
            job.alone_because = f"plugin {steps[0]} gives its own training step"
        return []
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        try:
            task_config = task_part(job.config)
        except Exception as error:  # the job's own run reports it
            job.alone_because = f"its config does not resolve ({type(error).__name__})"
            continue
        job.alone_because = why_not_batched(task_config)
        if job.alone_because is None:
            groups.setdefault(group_key(task_config), []).append(job)
    batches = []
    for group in groups.values():
        if len(group) == 1:
            group[0].alone_because = "no other job differs from it only in optimizer numbers and the seed"
            continue
        for subgroup in built_subgroups(group):
            if len(subgroup) == 1:
                subgroup[0].alone_because = subgroup[0].alone_because or "no other job has the same data and parameters"
                subgroup[0].state = None
                continue
            batches.extend(batches_of(subgroup, max_batch_mib, max_batch_jobs))
    for batch in batches:
        if len(batch) == 1:
            batch[0].alone_because = "the memory cap leaves it alone in its batch"
    return [batch for batch in batches if len(batch) > 1]


def built_subgroups(group: list[Job]) -> list[list[Job]]:
    """Build each job; split the group by data and parameter shapes."""
    from framework_plugins._batched_optimizers import BATCHED_OPTIMIZERS

    subgroups: list[list[Job]] = []
    for job in group:
        try:
            job.state = build_job(job.config)
        except Exception as error:  # the job's own run reports it, with its folder
            job.alone_because = f"it fails to build ({type(error).__name__})"
            continue
        optimizer = type(job.state.run.optimizer)
        if optimizer not in BATCHED_OPTIMIZERS:
            job.alone_because = f"{optimizer.__name__} has no batched version"
            job.state = None
            continue
        for subgroup in subgroups:
            if same_run_shape(subgroup[0].state, job.state):
                subgroup.append(job)
                break
        else:
            subgroups.append([job])
    return subgroups


def train_batches(batches: list[list[Job]]) -> None:
    """Train every batch; a batch that fails to train runs its jobs alone."""
    for batch in batches:
        started = time.perf_counter()
        try:
            trajectories = batched_fit([job.state for job in batch], per_job_loss(batch[0].state))
        except Exception as error:
            for job in batch:
                job.alone_because = f"the batched fit failed: {type(error).__name__}: {error}"
            log.warning("jobs %s run one by one: the batched fit failed: %s: %s",
                        ", ".join(f"#{job.index}" for job in batch), type(error).__name__, error)
        else:
            for job, trajectory in zip(batch, trajectories):
                job.trajectory = trajectory
            log.info("trained jobs %s as one batch (%d jobs, %d steps) in %.3f s",
                     ", ".join(f"#{job.index}" for job in batch), len(batch), batch[0].state.run.max_steps,
                     time.perf_counter() - started)
        for job in batch:
            job.state = None  # the record is all the replay needs


def start_figure_writer(jobs: list[Job]) -> None:
    """Start the TensorBoard logger's figure writer before the batches train, where the jobs draw
    figures: it imports matplotlib (≈ 0.6 s) while they train. Started by the first fit, as for
    a run alone, it would keep the first replayed fit (milliseconds) waiting for it."""
    if any(OmegaConf.select(job.config, "logger.tensorboard.figures", default=False) for job in jobs):
        from framework_plugins._figure_writer import figure_writer

        figure_writer().start()


def per_job_loss(state: LoopState):
    """The built-in loss's per-job version (framework_plugins.losses.PER_JOB_LOSSES), or None
    (the loss then runs under vmap)."""
    from framework_plugins.losses import PER_JOB_LOSSES

    name = state.run.components.get("loss")
    component = SHARED.registry.get("loss", name) if name in PER_JOB_LOSSES else None
    if component is None or component.factory.__module__ != PER_JOB_LOSSES_MODULE:
        return None
    return PER_JOB_LOSSES[name](state.run.config.get("loss") or {})


PER_JOB_LOSSES_MODULE = "framework_plugins.losses"


# ---------------------------------------------------------------------------------- replay


class Replay:
    """A plugin for the length of the launch: the training step of a job that was trained in a
    batch sets what its own step would have computed, from its :class:`Trajectory`; and a
    checkpoint of it holds the optimizer state of its step."""

    def __init__(self) -> None:
        self.pending: Trajectory | None = None  # the next fit's, set by the launcher
        self.active: Trajectory | None = None  # the running fit's

    @hookimpl(tryfirst=True)
    def framework_configure_step(self, state):
        self.active, self.pending = self.pending, None
        if self.active is None:
            return None
        return replay_step(state, self.active)

    @hookimpl
    def framework_state_dict(self, state):
        # Checkpoints ask the plugins for their state before they read the optimizer's: the job's
        # optimizer takes the state its own steps would have given it, here, at whatever step
        # the fit is saved (its end, a tolerance stop, checkpoint_every, an interruption).
        trajectory, steps = self.active, state.progress.step
        if trajectory is not None and 1 <= steps <= trajectory.steps:
            state.run.optimizer.load_state_dict(trajectory.optimizer_state(state, steps))
        return None  # nothing of its own in the checkpoint: it is the basic launcher's

    @hookimpl
    def framework_fit_end(self, state, result):
        self.active = None


def replay_step(state: LoopState, trajectory: Trajectory):
    """The job's step, replayed: step ``i`` sets the parameters after its update and the gradients
    it used (and the pre-clipping norm) from the record, and returns its loss."""
    run, progress = state.run, state.progress
    initial = flat_trainable(state)
    if initial.dtype != trajectory.initial_params.dtype or not torch.equal(initial, trajectory.initial_params):
        raise TrainingError("the vectorized launcher built this job with other initial values than its batch did; "
                            "run it with the basic launcher (hydra/launcher=basic)")
    optimized = [p for group in run.optimizer.param_groups for p in group["params"]]
    if is_flattened(state):
        spans = [(optimized[0], 0, optimized[0].numel())]
    else:
        spans, offset = [], 0
        for param in run.trainable.values():
            spans.append((param, offset, offset + param.numel()))
            offset += param.numel()
    record, job, last = trajectory.record, trajectory.job, trajectory.steps - 1
    losses = trajectory.losses
    params, grads = record.params[:, job], record.grads[:, job]
    grad_norms = None if record.grad_norms is None else record.grad_norms[:, job]
    # Per parameter, views made once: its values (``.data``: copied into without autograd, so
    # without a no_grad block a step) and every step's row of the record in its shape; a step
    # is then two copies a parameter (≈ 1000 steps a job).
    steps_recorded = params.shape[0]
    targets = [(param, param.data, params[:, start:stop].view(steps_recorded, *param.shape),
                grads[:, start:stop].view(steps_recorded, *param.shape)) for param, start, stop in spans]

    def step(features, targets_):
        index = progress.step
        if index > last:
            raise TrainingError(f"the vectorized launcher recorded {trajectory.steps} steps of this job, "
                                f"and its fit asked for step {index + 1}")
        for param, values, value_rows, grad_rows in targets:
            values.copy_(value_rows[index])
            grad = param.grad
            if grad is None:
                param.grad = grad_rows[index].clone()
            else:
                grad.copy_(grad_rows[index])
        if grad_norms is not None:
            progress.grad_norm = grad_norms[index]
        return losses[index]

    return step


# ---------------------------------------------------------------------------------- launch


def planned(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list[Job], list[list[Job]]]:
    """Every job, its config composed; and the batches, trained."""
    config, context = launcher.config, launcher.hydra_context
    jobs = []
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        job_config = context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = index
            job_config.hydra.job.num = index
        jobs.append(Job(index, list(overrides), job_config))
    if SHARED.manager is None:
        for job in jobs:
            job.alone_because = "the launcher runs outside the framework's command line"
        batches = []
    else:
        batches = plan(jobs, launcher.max_batch_mib, launcher.max_batch_jobs)
    batched = sum(len(batch) for batch in batches)
    log.info("Launching %d jobs: %d in %d batch(es), %d one by one", len(jobs), batched, len(batches),
             len(jobs) - batched)
    if batches:
        start_figure_writer(jobs)
        train_batches(batches)
    return jobs, batches


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    """The launcher's ``launch``: plan, train the batches, then run every job in order."""
    from hydra.core.utils import configure_log, filter_overrides, setup_globals

    from framework.job_runs import run_job

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    jobs, batches = planned(launcher, job_overrides, initial_job_idx)
    if SHARED.manager is not None:  # the command line's process, whose heap is the framework's
        freeze_survivors()  # every job's config lives until its job has run (framework/garbage_collection.py)
    replay = Replay()
    if batches:
        SHARED.manager.register(replay, name="framework.vectorized.replay")
    runs = []
    try:
        for job in jobs:
            log.info("\t#%d : %s", job.index, " ".join(filter_overrides(job.overrides)))
            if job.trajectory is None:
                log.info("\t#%d runs alone: %s", job.index, job.alone_because or "it was not batched")
            replay.pending, job.trajectory = job.trajectory, None
            try:
                runs.append(run_job(hydra_context=context, task_function=launcher.task_function, config=job.config,
                                    job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            finally:
                replay.pending = None
            configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    finally:
        if batches:
            SHARED.manager.unregister(replay)
    return runs

