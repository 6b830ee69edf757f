"""All loop state in one place, so hooks can read it and checkpoints can save it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from framework.data import Dataset
from framework.schema import TrainerConfig


@dataclass
class LoopState:
    """What the loop works on and where it is.

    Built once per fit by :func:`framework.build.build_state`; the loop advances ``step``,
    ``epoch``, ``batch_index`` and ``order``. Plugins read it; only the step function writes
    ``grad_norm``.
    """

    # What is trained
    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: Dataset
    trainable: dict[str, torch.nn.Parameter]
    # How
    trainer: TrainerConfig
    device: torch.device
    dtype: torch.dtype
    batch_size: int | None = None  # None: full batch
    steps_per_epoch: int = 1  # batches per pass over the data
    shuffle: bool = False
    components: dict[str, str] = field(default_factory=dict)  # kind -> chosen component name
    task: str | None = None
    run_dir: Path | None = None
    max_steps: int = 0  # the step limit after resolving max_steps and max_epochs
    limit_reason: str = "max_steps"  # which of the two sets max_steps: the stop reason at the end
    # Where the loop is
    step: int = 0  # optimizer updates done
    epoch: int = 0  # full passes over the data done
    batch_index: int = 0  # position within the current epoch, in batches
    order: torch.Tensor | None = None  # this epoch's shuffled row order, on the device
    shuffle_generator: torch.Generator | None = None
    grad_norm: torch.Tensor | None = None  # set by the step when it clips gradients
    last_loss: float | None = None  # last finite loss read back from the device
    last_loss_step: int | None = None
    stop_reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # room for plugins' own state
