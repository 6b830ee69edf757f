"""The loop's state in three parts: the built run, the progress, and the stop request.

- :class:`BuiltRun`: the components and settings, built once per fit by
  :func:`framework.build.build_run` and never replaced. Plugins read it.
- :class:`Progress`: where the loop is, small and serialisable (``state_dict()`` /
  ``load_state_dict()``), including every random generator's state, so that a run resumed from a
  checkpoint goes on bit-identically.
- :class:`StopRequest`: set by any plugin, stop rule or signal handler; the loop reads it at
  every step boundary and ends the run cleanly.

Hooks receive a :class:`LoopState` holding the first two (``state.run``, ``state.progress``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from framework.data import Dataset
from framework.precision import MixedPrecision
from framework.schema import TrainerConfig


@dataclass(frozen=True)
class BuiltRun:
    """What is trained and how: built once, read by plugins, never replaced."""

    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an object with step() and state_dict(), or None for a constant rate
    data: Dataset
    trainable: dict[str, torch.nn.Parameter]
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
    config: dict[str, Any] = field(default_factory=dict)  # the composed config, plain containers
    # trainer.precision bf16 or 16-mixed: the autocast dtype and 16-mixed's gradient scaler,
    # which a step plugin honours; None for 32 (no autocast)
    precision: MixedPrecision | None = None


class StopRequest:
    """Why the run should end at the next step boundary; the first request wins.

    A request with a ``signal`` is an interruption: the run is resumable, and it ends with
    status ``interrupted`` and that signal's exit status. Setting it is one attribute write, so
    a signal handler may do it at any instant.
    """

    __slots__ = ("reason", "signal")

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signal: int | None = None

    def request(self, reason: str, *, signal: int | None = None) -> bool:
        """Ask the loop to stop; returns False if a stop was already requested."""
        if self.reason is not None:
            return False
        self.signal = signal
        self.reason = reason  # written last: the loop reads reason, then signal
        return True

    def replace(self, reason: str, *, signal: int | None = None) -> None:
        """The loop's own verdict (a failure, an interrupt it caught) replaces any request."""
        self.signal, self.reason = signal, reason

    @property
    def interrupted(self) -> bool:
        return self.signal is not None

    def __bool__(self) -> bool:
        return self.reason is not None


def is_periodic_step(step: int, every: int, max_steps: int, stop: StopRequest) -> bool:
    """Whether ``step`` is one of those logged "every N steps" (``trainer.log_every``,
    ``trainer.val_every``): step 1, every ``every`` steps, the last step, and the step where a
    stop rule ends the run, as the last step would. Not the step of an interruption: a resumed
    run then logs the steps an uninterrupted one does, and no step twice."""
    return (step % every == 0 or step == 1 or step == max_steps
            or (stop.reason is not None and not stop.interrupted))


def random_states() -> dict[str, Any]:
    """The global generators' states: python, numpy (when installed), torch, and CUDA when used."""
    version, internal, gauss = random.getstate()
    # One tensor rather than 625 ints: pickling them one by one made up half a small checkpoint.
    states: dict[str, Any] = {"python": (version, torch.tensor(internal, dtype=torch.int64), gauss),
                              "torch": torch.get_rng_state()}
    try:
        import numpy
    except ImportError:  # numpy is optional for the core
        pass
    else:
        # Checkpoints hold tensors and plain containers only (weights_only loading).
        numpy_state = numpy.random.get_state(legacy=False)
        numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype("int64"))
        states["numpy"] = numpy_state
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy

        numpy_state = dict(states["numpy"])
        numpy_state["state"] = dict(numpy_state["state"], key=numpy_state["state"]["key"].numpy().astype("uint32"))
        numpy.random.set_state(numpy_state)
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Progress:
    """Where the loop is. The loop advances it; ``state_dict()`` is what a checkpoint keeps."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # full passes over the data done
    batch_index: int = 0  # position within the current epoch, in batches
    order: torch.Tensor | None = None  # this epoch's shuffled row order, on the device
    shuffle_generator: torch.Generator | None = None
    # Not saved: this epoch's (features, targets) rows in ``order``, gathered once so that each
    # batch is a view (framework/batches.py); rebuilt from ``order`` after a resume.
    shuffled_rows: tuple[torch.Tensor, torch.Tensor] | None = None
    last_loss: float | None = None  # last finite loss read back from the device
    last_loss_step: int | None = None
    stop: StopRequest = field(default_factory=StopRequest)
    # Scratch of the current step, not saved: the step sets it when it clips gradients.
    grad_norm: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only; the global generators' states are taken now.

        The stop request is saved (it says why the checkpoint was written) but never loaded:
        a resumed run goes on.
        """
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "order": None if self.order is None else self.order.cpu(),
            "shuffle_generator": None if self.shuffle_generator is None else self.shuffle_generator.get_state(),
            "last_loss": self.last_loss,
            "last_loss_step": self.last_loss_step,
            "stop_reason": self.stop.reason,
            "random": random_states(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self.last_loss, self.last_loss_step = state["last_loss"], state["last_loss_step"]
        if self.shuffle_generator is not None and state["shuffle_generator"] is not None:
            self.shuffle_generator.set_state(state["shuffle_generator"])
        order = state["order"]
        device = self.shuffle_generator.device if self.shuffle_generator is not None else "cpu"
        self.order = None if order is None else order.to(device)
        self.shuffled_rows = None
        set_random_states(state["random"])


@dataclass
class LoopState:
    """What hooks receive: ``state.run`` (the built run) and ``state.progress`` (where it is)."""

    run: BuiltRun
    progress: Progress
