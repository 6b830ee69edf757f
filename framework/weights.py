"""A model's weights in and out: ``model.safetensors`` in the run folder, and loading weights into a
built model with mismatched names or shapes refused by name.

safetensors holds tensors and a string-to-string header and nothing else, so reading one never
runs code, whatever the file says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from framework.errors import ConfigError
from framework.outputs import atomic_write
from framework.standardize import in_original_units
from framework.state import BuiltRun

WEIGHTS_FILE = "model.safetensors"
METADATA_KEY = "framework"  # the header entry holding what load_run needs to rebuild the model


def weights_metadata(run: BuiltRun, step: int) -> dict[str, Any]:
    return {
        "task": run.task,
        "components": dict(run.components),
        "dtype": str(run.dtype).removeprefix("torch."),
        "feature_columns": run.data.features.shape[1],
        "target_columns": run.data.targets.shape[1],
        "step": step,
    }


def save_weights(run: BuiltRun, step: int) -> Path:
    """Write ``<run_dir>/model.safetensors`` atomically: every weight and buffer, on the CPU, of
    the model in the data's units (``data.standardize``: framework/standardize.py), so that
    ``load_run`` rebuilds the model component as configured and it takes raw features."""
    from safetensors.torch import save  # imported here: only runs with a run folder need it

    model = in_original_units(run.model)
    # Cloned: safetensors refuses tensors that share memory (tied weights).
    tensors = {name: value.detach().cpu().clone().contiguous() for name, value in model.state_dict().items()}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(weights_metadata(run, step))})
    path = Path(run.run_dir) / WEIGHTS_FILE
    atomic_write(path, lambda handle: handle.write(data))
    return path


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, the framework's metadata or {}) from a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path} is not a readable safetensors file: {error}") from None
    return tensors, json.loads(header.get(METADATA_KEY, "{}"))


def load_model_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``weights`` into ``model``; names or shapes that differ are refused, each by name."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    given = {name: tuple(value.shape) for name, value in weights.items()}
    problems = []
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    problems += [f"{name} has shape {list(given[name])} there but {list(shape)} in this run's model"
                 for name, shape in expected.items() if name in given and given[name] != shape]
    if problems:
        raise ConfigError(
            f"the weights in {source} do not fit this run's model ({type(model).__name__}, "
            f"parameters {', '.join(f'{n} {list(s)}' for n, s in expected.items())}): {'; '.join(problems)}"
        )
    with torch.no_grad():
        model.load_state_dict(dict(weights))
