"""What a run leaves behind besides Hydra's snapshot: result.json and the parameter values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

RESULT_FILE = "result.json"


def is_small_model(model: torch.nn.Module, limit: int) -> bool:
    """Whether every parameter value is worth showing (``trainer.param_log_limit``)."""
    return sum(p.numel() for p in model.parameters()) <= limit


def small_model_params(model: torch.nn.Module, limit: int) -> dict[str, Any] | None:
    """{name: value as nested lists} for models with at most ``limit`` numbers, else None."""
    if not is_small_model(model, limit):
        return None
    return {name: p.detach().cpu().tolist() for name, p in model.named_parameters()}


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite number is written as null."""
    if value is None or not math.isfinite(value):
        return None
    return value


def result_record(
    *, task, status, steps, final_loss, params, wall_s, device, stop_reason
) -> dict[str, Any]:
    """The fields of result.json, in the order design.md lists them."""
    return {
        "task": task,
        "status": status,
        "steps": steps,
        "final_loss": finite_or_none(final_loss),
        "params": params,
        "wall_s": round(wall_s, 6),
        "device": str(device),
        "stop_reason": stop_reason,
    }


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    """Write result.json atomically, so a reader never sees half a file."""
    path = Path(run_dir) / RESULT_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(path)
    return path
