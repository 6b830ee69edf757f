"""What a run leaves behind besides Hydra's snapshot: result.json and the parameter values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from framework.errors import OutputError

if TYPE_CHECKING:  # annotations only: the schema cache writes through atomic_write without torch
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


# Fields of result.json that built-in plugins fill through ``framework_result`` when they apply.
PLUGIN_RESULT_FIELDS = ("final_val_loss", "optimal_loss", "optimality_gap")


def result_record(
    *, task, status, steps, final_loss, params, wall_s, device, stop_reason, error=None
) -> dict[str, Any]:
    """The fields of result.json, in the order design.md lists them: ``error`` is the
    one-paragraph reason a run failed (null otherwise), which sweep summaries show; the
    :data:`PLUGIN_RESULT_FIELDS` are null unless a plugin gives them (``framework_result``)."""
    return {
        "task": task,
        "status": status,
        "steps": steps,
        "final_loss": finite_or_none(final_loss),
        "params": params,
        "wall_s": round(wall_s, 6),
        "device": str(device),
        "stop_reason": stop_reason,
        "error": error,
        **dict.fromkeys(PLUGIN_RESULT_FIELDS),
    }


def unstarted_result(*, task, status, stop_reason, device, wall_s, error=None) -> dict[str, Any]:
    """result.json of a run that never took a step (refused, interrupted at start-up, or a job of
    an interrupted sweep), so that sweep summaries list it."""
    return result_record(task=task, status=status, steps=0, final_loss=None, params=None, wall_s=wall_s,
                         device=device, stop_reason=stop_reason, error=error)


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: hidden, never a final name."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def make_folder(folder: Path) -> None:
    """``mkdir -p``, failing with a message that names the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(folder, error, "the folder") from None


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` so that a reader, or a kill at any instant, finds the old file or the new
    one, never part of one: a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        # The rename itself reaches the disk only once the folder is synced.
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as error:  # a full disk, an unwritable folder: said in one paragraph
        temporary.unlink(missing_ok=True)
        raise OutputError(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of ``text``, in UTF-8."""
    data = text.encode()
    atomic_write(path, lambda handle: handle.write(data))


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    """Write result.json atomically, so a reader never sees half a file."""
    path = Path(run_dir) / RESULT_FILE
    make_folder(path.parent)  # a run refused before any logger made it
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path
