"""One training run from a composed config: seed, build, fit with the loggers attached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework.build import build_loggers, build_state
from framework.devices import resolve_device, resolve_dtype, seed_everything
from framework.errors import ConfigError
from framework.loop import fit
from framework.outputs import result_record, write_result
from framework.plugin_manager import PluginManager, call_each
from framework.registry import Registry
from framework.schema import unknown_keys


def run_training(
    cfg: DictConfig,
    *,
    manager: PluginManager,
    registry: Registry,
    run_dir: Path | None = None,
    task: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train once and return what result.json holds; raise FrameworkError on bad input."""
    started = time.perf_counter()
    device = "unknown"
    registered = []
    try:
        try:
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise ConfigError(
                    f"no value for {', '.join(missing)}; set it on the command line "
                    f"(e.g. {missing[0]}=VALUE) or pick a preset with +task=NAME"
                )
            unknown = unknown_keys(cfg)
            if unknown:
                key, settings = unknown[0]
                raise ConfigError(f"{key} is not a setting; the settings there are: {', '.join(settings)}")
            trainer = OmegaConf.to_object(cfg.trainer)
            device, dtype = resolve_device(trainer.device), resolve_dtype(trainer.dtype)
            seed_everything(trainer.seed)
            state = build_state(cfg, registry, trainer=trainer, device=device, dtype=dtype, task=task, run_dir=run_dir)
            for name, logger in build_loggers(cfg, registry, run_dir=run_dir, overrides=overrides or []).items():
                manager.register_plugin(logger, f"logger.{name}", "logger component")
                registered.append(f"logger.{name}")
            for provider, objects in call_each(manager, "framework_fit_plugins", state=state):
                for plugin in objects or ():
                    name = f"{provider}.{type(plugin).__name__}"
                    manager.register_plugin(plugin, name, f"added for this fit by plugin {provider}")
                    registered.append(name)
            manager.check_hooks()
        except BaseException as error:
            # A run refused before its first step still leaves a result.json for sweep summaries.
            if run_dir is not None:
                interrupted = isinstance(error, KeyboardInterrupt)
                write_result(run_dir, result_record(
                    task=task, status="interrupted" if interrupted else "failed", steps=0,
                    final_loss=None, params=None, wall_s=time.perf_counter() - started,
                    device=device, stop_reason="interrupted" if interrupted else "error",
                ))
            raise
        return fit(state, manager.hook)
    finally:
        for name in registered:
            manager.unregister(name=name)
