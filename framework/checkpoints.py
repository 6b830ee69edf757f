"""Checkpoints: what one holds, how it is saved (atomically, pruned) and how it is loaded (safely).

A checkpoint is one ``torch.save`` file of tensors and plain containers, under the run folder's
``checkpoints/``, named by its step so that names sort in step order
(``step_0000001000.pt``). It holds the model, optimizer and scheduler state dicts, 16-mixed's
gradient scaler's, the progress (with every random generator's state), each stateful plugin's
state, the composed config, and the framework and torch versions. It is loaded with ``torch.load(weights_only=True)`` and never
with full unpickling, so a crafted file cannot run code.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from framework.errors import ConfigError
from framework.outputs import atomic_write, make_folder
from framework.plugin_manager import PluginManager, call_each
from framework.state import LoopState
from framework.weights import save_weights

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FORMAT = 1  # bumped when the contents change incompatibly
_NAME = re.compile(r"^step_(\d{10})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:010d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (a save's temporary file is never listed)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if _NAME.match(path.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def find_checkpoint(path: str | Path, setting: str) -> Path:
    """A checkpoint file as given, or a run folder's latest checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ConfigError(f"{setting}={path}: the folder has no checkpoint (no {CHECKPOINT_DIR}/step_*.pt)")
        return latest
    if not path.is_file():
        raise ConfigError(f"{setting}={path}: no such checkpoint file or run folder")
    refuse_weights_file(setting, path)
    return path


def refuse_weights_file(setting: str, path: str | Path | None) -> None:
    """A model's weights (``model.safetensors``) given where a checkpoint goes: refused by name
    (trainer.init_from reads weights itself)."""
    if path is not None and Path(path).suffix == ".safetensors":
        raise ConfigError(f"{setting}={path}: this file holds a model's weights alone, not a checkpoint; {setting} "
                          f"takes a run folder or a checkpoint ({CHECKPOINT_DIR}/step_*.pt), and "
                          f"trainer.init_from starts a new run from weights")


@functools.cache  # the metadata lookup costs more than the rest of a small checkpoint
def versions() -> dict[str, str]:
    try:
        framework_version = importlib.metadata.version("framework")
    except importlib.metadata.PackageNotFoundError:  # an uninstalled checkout
        framework_version = "unknown"
    return {"framework": framework_version, "torch": str(torch.__version__)}  # a str subclass otherwise


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (one device sync per parameter)."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters in the order ``optimizer.state_dict()`` numbers them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def host_state_entries(optimizer: torch.optim.Optimizer) -> list[list]:
    """[[parameter index, state key]] of state kept on the CPU for a parameter that is not.

    Optimizers keep some scalars on the host (NAdam's ``mu_product``); ``load_state_dict`` moves
    every state tensor but ``step`` to its parameter's device, so a resumed run would compute
    there, and read it back every step, where the run it continues did not.
    """
    entries = []
    for index, parameter in enumerate(optimizer_parameters(optimizer)):
        for key, value in optimizer.state.get(parameter, {}).items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu" and parameter.device.type != "cpu":
                entries.append([index, key])
    return entries


def restore_host_state(optimizer: torch.optim.Optimizer, entries: list[list]) -> None:
    """Put the state that the saved run kept on the CPU back there (see host_state_entries)."""
    parameters = optimizer_parameters(optimizer)
    for index, key in entries:
        parameter_state = optimizer.state.get(parameters[index], {})
        if isinstance(parameter_state.get(key), torch.Tensor):
            parameter_state[key] = parameter_state[key].cpu()


def scaler_state(run) -> dict[str, Any] | None:
    """16-mixed's loss scale and its count of steps since the last skipped one (plain numbers);
    None for precision 32 and bf16, which have no scaler."""
    scaler = None if run.precision is None else run.precision.scaler
    return None if scaler is None else scaler.state_dict()


def checkpoint_contents(state: LoopState, manager: PluginManager) -> dict[str, Any]:
    run = state.run
    # The plugins first: a replayed job of the vectorized launcher (framework/vectorized.py)
    # loads its step's optimizer state here, before it is read below.
    plugins = {name: saved for name, saved in call_each(manager, "framework_state_dict", state=state)
               if saved is not None}
    return {
        "format": FORMAT,
        "versions": dict(versions()),
        "task": run.task,
        "components": dict(run.components),
        "config": run.config,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "optimizer_host_state": host_state_entries(run.optimizer),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "scaler": scaler_state(run),
        "progress": state.progress.state_dict(),
        "plugins": plugins,
    }


class Checkpointer:
    """Saves a fit's checkpoints into ``<run_dir>/checkpoints``, keeping the newest ``keep``, and
    at the end of the fit the model's weights into ``model.safetensors``."""

    def __init__(self, manager: PluginManager, run_dir: Path, keep: int | None) -> None:
        self.manager = manager
        self.folder = Path(run_dir) / CHECKPOINT_DIR
        self.keep = keep
        self.last_saved_step: int | None = None
        # A save killed before its rename leaves only its temporary file behind: never loaded.
        for stale in self.folder.glob(".*.tmp"):  # see outputs.temporary_name
            stale.unlink(missing_ok=True)

    def save(self, state: LoopState) -> Path | None:
        """Write a checkpoint of the current step; None (and a warning) if the weights are not finite."""
        step = state.progress.step
        bad = non_finite_parameters(state.run.model)
        if bad:
            log.warning("no checkpoint at step %d: parameters %s are not finite", step, ", ".join(bad))
            return None
        contents = checkpoint_contents(state, self.manager)
        make_folder(self.folder)
        path = self.folder / checkpoint_name(step)
        atomic_write(path, lambda handle: torch.save(contents, handle))
        self.last_saved_step = step
        self.prune()
        return path

    def save_final(self, state: LoopState) -> None:
        """At the end of a fit that completed or was interrupted: the last checkpoint (unless this
        step's is saved already) and the weights, whatever the model's size."""
        if self.last_saved_step != state.progress.step:
            self.save(state)
        save_weights(state.run, state.progress.step)

    def prune(self) -> None:
        if self.keep is None:
            return
        for old in list_checkpoints(self.folder.parent)[:-self.keep]:
            old.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else is refused, never unpickled."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses every object that is not a tensor or a plain container.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{path} is refused: it holds objects other than tensors and plain containers, which "
            f"could run code when loaded, and checkpoints are only loaded safely (weights_only). "
            f"({first_line})"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(f"{path} is not a readable checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a checkpoint of this framework (a {CHECKPOINT_DIR}/step_*.pt file of "
                          f"a run folder, format {FORMAT})")
    return checkpoint
