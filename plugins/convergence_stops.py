"""Convergence stops, in scipy's vocabulary: ``trainer.tol.loss``, ``.rel_loss``, ``.grad_norm``,
``.step`` and ``trainer.max_time``.

Each stop that is set is one small per-fit plugin object (``framework_fit_plugins``) whose
``framework_step_end`` reads what the step has just computed and, when its criterion is met,
requests the stop with a reason of the form ``<name> <value seen> <op> <threshold>``, e.g.
``grad_norm 8.7e-09 < 1e-08``. A stop that is not set adds no object, so a run with none pays for
no hook call. The loop ends the run after the step that met the criterion and logs that step.
If several are met at the same step, the reason names one of them.

What each reads at step t (one step = one optimizer update):

- ``loss``: the step's loss (its forward pass, before its update), as ``trainer.tolerance`` did.
- ``rel_loss``: ``|f_old - f| / max(|f_old|, |f|, 1)`` with f the step's loss and f_old the loss
  ``window`` steps earlier: the test scipy's L-BFGS-B applies with ``ftol`` (there over one
  iteration). The last ``window`` losses are saved in checkpoints.
- ``grad_norm``: the norm of the gradient the step computed, as logged under ``train/grad_norm``
  (before clipping when ``trainer.grad_clip`` is set).
- ``step``: the largest absolute change of any trainable parameter element made by the step's
  update; it keeps one copy of the trainable parameters to compare with. A step whose update
  ``trainer.precision=16-mixed``'s gradient scaler skipped (an inf in the scaled gradients)
  moved nothing and is not counted as converged: the scaler lowered its scale then.
- ``max_time``: seconds of training (from the fit's start), counted over resumes like the steps
  are: the time before a checkpoint is saved in it.

Reading a number off the device (``.item()``) synchronises with it: on a GPU each stop that is
set costs one synchronisation per step, the price of checking every step.
"""

from __future__ import annotations

import collections
import math
import time

import torch

from framework import hookimpl
from framework.loop import gradient_norm
from framework.precision import loss_scale


class LossStop:
    """``trainer.tol.loss`` (or ``trainer.tolerance``): the step's loss is at or below it."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    @hookimpl
    def framework_step_end(self, state, loss):
        # A NaN loss compares False and is left to the loop's non-finite check.
        value = loss.item()
        if value <= self.threshold:
            state.progress.stop.request(f"loss {value:.3g} <= {self.threshold:g}")


def relative_change(old: float, new: float) -> float:
    """scipy L-BFGS-B's ftol measure: the change relative to the larger loss, or absolute below 1."""
    return abs(old - new) / max(abs(old), abs(new), 1.0)


class RelLossStop:
    """``trainer.tol.rel_loss``: the loss changed by less than this, relatively, over ``window`` steps."""

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold, self.window = threshold, window
        # The losses of the last `window` steps, oldest first: when full, [0] is f_old.
        self.losses: collections.deque[float] = collections.deque(maxlen=window)

    @hookimpl
    def framework_step_end(self, state, loss):
        value = loss.item()
        if len(self.losses) == self.window:
            change = relative_change(self.losses[0], value)
            # NaN (a non-finite loss) compares False and is left to the loop's check.
            if change < self.threshold:
                state.progress.stop.request(
                    f"rel_loss {change:.3g} < {self.threshold:g} over {self.window} steps")
        self.losses.append(value)

    @hookimpl
    def framework_state_dict(self, state):
        return {"losses": list(self.losses)}

    @hookimpl
    def framework_load_state_dict(self, state, state_dict):
        # A window changed on resume keeps the newest losses that still fit in it.
        self.losses.extend(float(value) for value in state_dict["losses"])


class GradNormStop:
    """``trainer.tol.grad_norm``: the norm of the step's gradient is below this."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    @hookimpl
    def framework_step_end(self, state, loss):
        value = gradient_norm(state.run, state.progress)
        if value < self.threshold:
            state.progress.stop.request(f"grad_norm {value:.3g} < {self.threshold:g}")


class StepStop:
    """``trainer.tol.step``: no trainable parameter element moved by this much in the step."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.parameters: list[torch.Tensor] = []
        self.before: list[torch.Tensor] = []  # the parameters before the step's update
        self.scale: float | None = None  # 16-mixed's loss scale after the last step; else None

    @hookimpl
    def framework_fit_start(self, state):
        # The parameters the first step starts from (a resumed fit's are loaded by now). No
        # step's copy needs saving in a checkpoint: a resumed fit starts from the saved ones.
        # Detached views: they see the optimizer's in-place updates, and reading them records
        # no autograd history.
        self.parameters = [p.detach() for p in state.run.trainable.values()]
        self.before = [p.clone() for p in self.parameters]
        self.scale = loss_scale(state.run.precision)

    @hookimpl
    def framework_step_end(self, state, loss):
        # In place, in the copy (before - after), then the copy becomes the next step's
        # "before": nothing is allocated but the per-tensor maxima.
        torch._foreach_sub_(self.before, self.parameters)
        value = torch.stack(torch._foreach_norm(self.before, math.inf)).max().item()
        torch._foreach_copy_(self.before, self.parameters)
        if self.scale is not None:
            # The scaler lowers its scale exactly when it skips a step's update (it only raises
            # it otherwise): a step that did not update is no sign of convergence.
            scale = loss_scale(state.run.precision)
            skipped, self.scale = scale < self.scale, scale
            if skipped:
                return
        if value < self.threshold:
            state.progress.stop.request(f"step {value:.3g} < {self.threshold:g}")


# The wall clock max_time reads (a module attribute, so that a test can replace it).
clock = time.perf_counter


class TimeStop:
    """``trainer.max_time``: this many seconds of training have passed, over resumes."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.before = 0.0  # training seconds of the run before this fit resumed it
        self.started = clock()

    def elapsed(self) -> float:
        return self.before + clock() - self.started

    @hookimpl
    def framework_fit_start(self, state):
        self.started = clock()
        if self.before >= self.limit:
            # A run resumed with its time spent takes no step, as one resumed at max_steps.
            self.request(state, self.before)

    @hookimpl
    def framework_step_end(self, state, loss):
        elapsed = self.elapsed()
        if elapsed >= self.limit:
            self.request(state, elapsed)

    def request(self, state, elapsed: float) -> None:
        state.progress.stop.request(f"max_time {elapsed:.6g} s >= {self.limit:g} s")

    @hookimpl
    def framework_state_dict(self, state):
        return {"elapsed_s": self.elapsed()}

    @hookimpl
    def framework_load_state_dict(self, state, state_dict):
        self.before = float(state_dict["elapsed_s"])


@hookimpl
def framework_fit_plugins(state):
    trainer = state.run.trainer
    tol = trainer.tol
    # trainer.tolerance is the older name of tol.loss (the run refused the two set differently).
    loss = tol.loss if tol.loss is not None else trainer.tolerance
    stops = []
    if loss is not None:
        stops.append(LossStop(loss))
    if tol.rel_loss is not None:
        stops.append(RelLossStop(tol.rel_loss, tol.window))
    if tol.grad_norm is not None:
        stops.append(GradNormStop(tol.grad_norm))
    if tol.step is not None:
        stops.append(StepStop(tol.step))
    if trainer.max_time is not None:
        stops.append(TimeStop(trainer.max_time))
    return stops
