"""The Python API, for notebooks and scripts: train a run as the command line would, and load a
trained run back from its folder.

    import framework
    run = framework.train(["+task=polyfit", "trainer.max_steps=2000"])
    run.result["final_loss"], run.model(x)
    same = framework.load_run(run.dir)       # from model.safetensors, no pickled classes
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework import distributed
from framework.build import build_model
from framework.data import Dataset
from framework.error_messages import describe_error
from framework.errors import ConfigError
from framework.locations import config_dir
from framework.markers import hookimpl
from framework.outputs import RESULT_FILE
from framework.plugin_manager import BUILTIN, build_registry, create_plugin_manager
from framework.registry import Registry
from framework.overrides import hydra_value
from framework.resume import RESUME_KEY, holds_a_trained_run, override_value, run_folder_overrides
from framework.schema import named_schema, null_group_overrides, store_configs
from framework.standardize import in_original_units
from framework.run_folders import register_resolvers
from framework.sweeps import MULTIRUN_FLAGS
from framework.weights import METADATA_KEY, WEIGHTS_FILE, load_model_weights, read_weights

SNAPSHOT = Path(".hydra") / "config.yaml"  # Hydra's snapshot of the run's composed config


@dataclass
class Run:
    """A trained run: its model (on the CPU, as :func:`load_run` gives it, whatever device
    trained it), what result.json holds, its composed config, and its folder."""

    model: torch.nn.Module
    result: dict[str, Any]
    config: DictConfig
    dir: Path


class _KeepModel:
    """Takes the trained model from the fit, for :func:`train` to return."""

    model: torch.nn.Module | None = None

    @hookimpl
    def framework_fit_end(self, state, result):
        # In the data's units (data.standardize); moved to the CPU once every plugin is done with it.
        self.model = in_original_units(state.run.model)


def train(overrides: list[str], run_dir: str | Path | None = None) -> Run:
    """Run one fit exactly as ``python -m framework OVERRIDES`` would: the same config
    composition, plugins (entry points included), validation and run folder (Hydra's
    ``outputs/<date>/<time>/``, or ``run_dir``).

    Raises what the command line reports: :class:`framework.FrameworkError` (bad config or data,
    a failing plugin, divergence), or ``KeyboardInterrupt`` after a Ctrl-C stopped and saved
    the run. For sweeps use the command line (``-m``).
    """
    overrides = null_group_overrides([str(item) for item in overrides])
    if any(item in MULTIRUN_FLAGS for item in overrides):
        raise ConfigError("framework.train runs one fit; run sweeps with python -m framework -m ...")
    if run_dir is not None:
        if override_value(overrides, RESUME_KEY) is None and holds_a_trained_run(Path(run_dir)):
            raise ConfigError(f"run_dir={run_dir} already holds a run; resume it with {RESUME_KEY}={run_dir} "
                              "among the overrides, or choose another run_dir")
        overrides.append(f"hydra.run.dir={hydra_value(str(Path(run_dir).resolve()))}")
    overrides = run_folder_overrides(overrides)
    # Under torchrun, every rank joins the process group here and all take rank 0's run folder.
    with distributed.launch_scope(overrides):
        return train_in_hydra(distributed.hydra_overrides(overrides))


def train_in_hydra(overrides: list[str]) -> Run:
    """:func:`train` once the overrides are final."""
    manager = create_plugin_manager()
    registry = build_registry(manager)
    store_configs(registry)
    register_resolvers()
    keep = _KeepModel()
    manager.register_plugin(keep, "framework.api", "framework.train", BUILTIN)
    outcome: dict[str, Any] = {}

    def job(cfg: DictConfig) -> None:
        from framework.cli import report_job_failure
        from framework.run import run_hydra_job
        from hydra.core.hydra_config import HydraConfig

        outcome["config"], outcome["dir"] = cfg, Path(HydraConfig.get().runtime.output_dir)
        try:
            outcome["result"] = run_hydra_job(cfg, manager=manager, registry=registry)
        except Exception as error:  # raised below, once Hydra is done, as the CLI does
            report_job_failure(error, on_console=False)
            outcome["error"] = error

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="framework"):
            GlobalHydra.instance().hydra.run(config_name="config", task_function=job, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:  # a config that does not compose
        raise ConfigError(describe_error(error)[0].removeprefix("error: ")) from error
    finally:
        GlobalHydra.instance().clear()
    if "error" in outcome:
        raise outcome["error"]
    # On the CPU: the caller's tensors are, and a model trained on a GPU would refuse them.
    return Run(model=keep.model.cpu(), result=outcome["result"], config=outcome["config"], dir=outcome["dir"])


def rebuild_model(config: DictConfig, weights: dict[str, torch.Tensor], metadata: dict[str, Any],
                  registry: Registry, source: str) -> torch.nn.Module:
    """Build the run's model component from its config, for data of the saved column counts,
    and load the weights into it."""
    name = config.model.get("name")
    component = registry.get("model", name)
    model_config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(named_schema(component.config, name)),
                                                       config.model))
    dtype = getattr(torch, metadata.get("dtype", config.trainer.dtype))
    # The factory gets the data's shapes only (no rows): the weights come from the file.
    shapes = Dataset(torch.empty(0, metadata["feature_columns"], dtype=dtype),
                     torch.empty(0, metadata["target_columns"], dtype=dtype), source="shapes only")
    model = build_model(component, model_config, shapes, dtype, torch.device("cpu"))
    load_model_weights(model, weights, source)
    return model


def load_run(run_dir: str | Path) -> Run:
    """Rebuild a trained run from its folder: the model through the registry and
    ``model.safetensors`` (no pickled classes), result.json and Hydra's config snapshot."""
    run_dir = Path(run_dir).expanduser()
    weights_path, snapshot = run_dir / WEIGHTS_FILE, run_dir / SNAPSHOT
    if not snapshot.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {SNAPSHOT})")
    if not weights_path.is_file():
        raise ConfigError(f"{run_dir} has no {WEIGHTS_FILE}: only runs that completed or were "
                          "interrupted write their weights (see result.json for what happened)")
    config = OmegaConf.load(snapshot)
    weights, metadata = read_weights(weights_path)
    if "feature_columns" not in metadata:
        raise ConfigError(f"{weights_path} was not written by the framework (no '{METADATA_KEY}' metadata)")
    registry = build_registry(create_plugin_manager())
    model = rebuild_model(config, weights, metadata, registry, str(weights_path))
    result_path = run_dir / RESULT_FILE
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return Run(model=model, result=result, config=config, dir=run_dir)
