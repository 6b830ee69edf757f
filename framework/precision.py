"""``trainer.precision``: the dtype the forward pass and the loss compute in, and the gradient
scaler of ``16-mixed``.

- ``32`` (the default): no autocast and no scaler. The run holds no :class:`MixedPrecision`
  (``run.precision`` is None) and the default step is the one it always was, at no extra cost.
- ``bf16``: the forward pass and the loss run under ``torch.autocast(device, torch.bfloat16)``.
  The parameters, their gradients and the optimizer's state stay in ``trainer.dtype``: autocast
  casts copies for the operations it runs in bfloat16 (matmul, linear...), and keeps the others
  (losses, reductions, elementwise arithmetic) in float32. bfloat16 has float32's exponent range,
  so its gradients need no scaling.
- ``16-mixed``: the same with float16, whose narrow exponent range lets small gradients underflow
  to zero. So the loss is multiplied by a scale before the backward pass and the gradients are
  divided by it again before anything uses them (``torch.amp.GradScaler``: torch's own dynamic
  loss scaling, kept rather than written again). A step whose gradients hold an inf or a NaN (the
  scale was too large) is skipped and the scale halved; the scale doubles after 2000 steps
  without one. A skipped step is no divergence: the loss stays finite, and the run goes on.

Both work on the CPU as on CUDA (torch's CPU autocast has bfloat16 and float16, and
``GradScaler("cpu")`` exists), so runs with them are tested on the CPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from framework.errors import ConfigError

PRECISIONS = ("32", "bf16", "16-mixed")
PRECISIONS_HELP = " | ".join(PRECISIONS)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class MixedPrecision:
    """How a ``bf16`` or ``16-mixed`` run computes its forward pass and loss (``run.precision``).

    A step plugin runs the forward pass and the loss under :meth:`autocast`; when ``scaler`` is
    not None it scales the loss before backward, unscales the gradients before it reads or clips
    them, and steps and updates through the scaler (plugins/default_step.py does all of it).
    """

    name: str  # bf16 | 16-mixed
    device_type: str  # cpu | cuda: autocast's and the scaler's device
    dtype: torch.dtype  # the dtype autocast computes in
    scaler: torch.amp.GradScaler | None  # 16-mixed's; its state is saved in checkpoints

    def autocast(self) -> torch.autocast:
        """A fresh autocast context for one forward pass and loss."""
        return torch.autocast(self.device_type, dtype=self.dtype)


def check_precision(name: str) -> None:
    """Refuse a value of ``trainer.precision`` that is not one of :data:`PRECISIONS`."""
    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r} is not a precision; use {PRECISIONS_HELP} "
                          "(32: trainer.dtype throughout, no autocast; bf16: bfloat16 autocast; 16-mixed: float16 "
                          "autocast with a gradient scaler)")


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` cannot be called without a closure (LBFGS re-evaluates it)."""
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def mixed_precision(name: str, device: torch.device, dtype: torch.dtype,
                    optimizer: torch.optim.Optimizer) -> MixedPrecision | None:
    """The run's :class:`MixedPrecision` for ``trainer.precision=name``; None for ``32``."""
    check_precision(name)
    if name == "32":
        return None
    if dtype != torch.float32:
        # Autocast casts float32 operations only: a float64 run would stay float64, silently.
        raise ConfigError(f"trainer.precision={name} computes float32 operations in a 16-bit type, but "
                          f"trainer.dtype={str(dtype).removeprefix('torch.')} has none (autocast leaves "
                          "float64 as it is); use trainer.dtype=float32, or trainer.precision=32")
    scaler = None
    if name == "16-mixed":
        if needs_closure(optimizer):
            # GradScaler cannot skip a step inside an optimizer that evaluates the closure itself.
            raise ConfigError(
                f"trainer.precision=16-mixed cannot drive {type(optimizer).__name__}: its step needs a closure, "
                "which torch's gradient scaler does not support; use trainer.precision=bf16 (no scaler) or 32 "
                f"with it, or an optimizer that takes no closure (sgd, adam, nadam...)")
        scaler = torch.amp.GradScaler(device.type)
    return MixedPrecision(name=name, device_type=device.type, dtype=AUTOCAST_DTYPES[name], scaler=scaler)


def loss_scale(precision: MixedPrecision | None) -> float | None:
    """The gradient scaler's current scale (a host sync on a GPU); None without a scaler."""
    if precision is None or precision.scaler is None:
        return None
    return precision.scaler.get_scale()
