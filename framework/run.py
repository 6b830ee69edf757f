"""One training run from a composed config: seed, build, resume or warm start, fit with the
loggers and per-fit plugins attached, and SIGINT/SIGTERM turned into a clean stop."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework import distributed
from framework.build import build_per_fit, build_state
from framework.checkpoints import Checkpointer
from framework.config_walks import missing_keys
from framework.devices import resolve_device, resolve_dtype, seed_everything, use_deterministic
from framework.errors import ConfigError, user_message
from framework.loop import fit
from framework.outputs import RESULT_FILE, unstarted_result, write_result
from framework.plugin_manager import PluginManager, call_each
from framework.precision import check_precision
from framework.ranges import check_ranges
from framework.registry import PER_FIT_KINDS, Registry
from framework.resume import resume_command, resume_from, warm_start
from framework.schema import TrainerConfig, loss_tolerance, unknown_keys
from framework.signals import Interrupted, interrupt_behind, stop_on_signals
from framework.trace import trace_fit

log = logging.getLogger("framework")


def check_trainer(trainer: TrainerConfig) -> None:
    """Run-wide settings that exclude each other (each value's range is checked by
    :func:`framework.ranges.check_ranges`)."""
    if trainer.resume is not None and trainer.init_from is not None:
        raise ConfigError("trainer.resume and trainer.init_from are both set; resume goes on from a "
                          "checkpoint, init_from starts a new run from weights: choose one")
    loss_tolerance(trainer)  # trainer.tolerance and trainer.tol.loss may not disagree
    check_precision(trainer.precision)


def checked_trainer(cfg: DictConfig) -> TrainerConfig:
    """Refuse a config with missing values, unknown keys, numbers out of range or settings that
    exclude each other, before any work; return its ``trainer.*`` settings."""
    missing = sorted(missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"no value for {', '.join(missing)}; set it on the command line "
            f"(e.g. {missing[0]}=VALUE) or pick a preset with +task=NAME"
        )
    unknown = unknown_keys(cfg)
    if unknown:
        key, settings = unknown[0]
        raise ConfigError(f"{key} is not a setting; the settings there are: {', '.join(settings)}")
    check_ranges(cfg)
    trainer = OmegaConf.to_object(cfg.trainer)
    check_trainer(trainer)
    return trainer


def run_hydra_job(cfg: DictConfig, *, manager: PluginManager, registry: Registry) -> dict[str, Any]:
    """:func:`run_training` for the Hydra job being run: its folder, task choice and overrides."""
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get()
    return run_training(cfg, manager=manager, registry=registry, run_dir=Path(job.runtime.output_dir),
                        task=job.runtime.choices.get("task"), overrides=list(job.overrides.task))


def run_training(
    cfg: DictConfig,
    *,
    manager: PluginManager,
    registry: Registry,
    run_dir: Path | None = None,
    task: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train once and return what result.json holds; raise FrameworkError on bad input, and
    :class:`framework.signals.Interrupted` after saving everything when a signal stopped it."""
    started = time.perf_counter()
    device = "unknown"
    registered = []
    trace = None
    restore_determinism = None
    parallel = None
    scope = contextlib.ExitStack()  # under DDP: this run's part in the process group
    try:
        try:
            trainer = checked_trainer(cfg)
            # Before anything touches CUDA: cuBLAS reads its workspace setting once.
            restore_determinism = use_deterministic(trainer.deterministic)
            # Under DDP, run_dir becomes rank 0's folder, and None on the other ranks (they write nothing).
            ddp, run_dir = scope.enter_context(distributed.run_scope(trainer.strategy, run_dir))
            device, dtype = resolve_device(trainer.device), resolve_dtype(trainer.dtype)
            if ddp:
                device = distributed.rank_device(device, trainer.device)
                distributed.quiet_rank()
            seed_everything(trainer.seed)
            state = build_state(cfg, registry, trainer=trainer, device=device, dtype=dtype, task=task, run_dir=run_dir)
            for kind in PER_FIT_KINDS:
                if kind == "logger" and ddp and run_dir is None:  # a rank > 0: rank 0 logs the run
                    continue
                for name, plugin in build_per_fit(kind, cfg, registry, run_dir=run_dir,
                                                  overrides=overrides or []).items():
                    provider = registry.plugin(kind, cfg[kind][name].name)
                    manager.register_plugin(plugin, f"{kind}.{name}", f"{kind} component",
                                            manager.distributions.get(provider))
                    registered.append(f"{kind}.{name}")
            for provider, objects in call_each(manager, "framework_fit_plugins", state=state):
                for plugin in objects or ():
                    name = f"{provider}.{type(plugin).__name__}"
                    manager.register_plugin(plugin, name, f"added for this fit by plugin {provider}",
                                            manager.distributions.get(provider))
                    registered.append(name)
            manager.check_hooks()
            trace = trace_fit(manager, run_dir)  # None, and nothing wrapped, unless FRAMEWORK_TRACE is set
            if trainer.resume is not None:
                resume_from(state, trainer.resume, manager)
            elif trainer.init_from is not None:
                warm_start(state, trainer.init_from)
            if ddp:  # after a resume: every rank has loaded its checkpoint before any trains
                parallel = distributed.DataParallel(state)
        except BaseException as error:
            # A run refused before its first step still leaves a result.json for sweep summaries,
            # but never in place of the record of a run that did start (a refused resume).
            if run_dir is not None and not (Path(run_dir) / RESULT_FILE).exists() and distributed.rank() == 0:
                interrupted = isinstance(error, KeyboardInterrupt) or interrupt_behind(error) is not None
                write_result(run_dir, unstarted_result(
                    task=task, status="interrupted" if interrupted else "failed",
                    stop_reason="interrupted" if interrupted else "error", device=device,
                    wall_s=time.perf_counter() - started, error=None if interrupted else user_message(error),
                ))
            raise
        checkpointer = None if run_dir is None else Checkpointer(manager, run_dir, trainer.keep_checkpoints)
        with stop_on_signals(state.progress.stop):
            result = fit(state, manager.hook, checkpointer, parallel=parallel)
        if result["status"] == "interrupted":
            stop = state.progress.stop
            message = f"interrupted at step {result['steps']}"
            if run_dir is not None:
                message += f"; resume with:\n  {distributed.launch_command(resume_command(overrides or [], run_dir), parallel)}"
            log.warning("%s", message)
            raise Interrupted(stop.signal, message)
        return result
    finally:
        if trace is not None:
            trace.finish()
        if restore_determinism is not None:
            restore_determinism()
        for name in registered:
            manager.unregister(name=name)
        scope.close()
