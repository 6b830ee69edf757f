"""The training loop: one function that reads top to bottom and fires named hooks."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from framework.batches import next_batch
from framework.errors import FrameworkError, NonFiniteLossError, PluginError, TrainingError
from framework.outputs import finite_or_none, result_record, small_model_params, write_result
from framework.state import LoopState

log = logging.getLogger(__name__)


class LossWatch:
    """Reads step losses back from the device in batches, and stops at the first non-finite one.

    Reading a loss (``.item()``) synchronises with the device. On the CPU that is free, so every
    step is read; on a GPU losses wait on the device for up to ``read_every`` steps (a logging
    step reads them at once). Either way the first non-finite loss is reported with its own step
    number; on a GPU the loop may have run up to ``read_every - 1`` steps past it by then.
    """

    def __init__(self, state: LoopState, read_every: int) -> None:
        self.state = state
        self.read_every = read_every
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())

    def due(self) -> bool:
        return len(self.pending) >= self.read_every

    def read(self) -> float:
        """Read pending losses; raise at the first non-finite one; return the latest."""
        state = self.state
        first_step = state.step - len(self.pending) + 1
        values = [self.pending[0].item()] if len(self.pending) == 1 else torch.stack(self.pending).tolist()
        self.pending.clear()
        for step, value in enumerate(values, first_step):
            if not math.isfinite(value):
                raise NonFiniteLossError(step, value, state.last_loss, state.last_loss_step)
            state.last_loss, state.last_loss_step = value, step
        return state.last_loss


class StepError(TrainingError):
    """An exception inside the training step, named with the step and the components."""

    def __init__(self, state: LoopState, error: Exception) -> None:
        chosen = ", ".join(f"{kind} {name}" for kind, name in state.components.items() if kind != "data")
        super().__init__(
            f"training failed at step {state.step + 1}: {type(error).__name__}: {error} ({chosen})"
        )


def gradient_norm(state: LoopState) -> float:
    """The step's gradient norm: the clip's pre-clipping norm, or computed from the gradients."""
    if state.grad_norm is not None:
        return float(state.grad_norm)
    grads = [p.grad for p in state.trainable.values() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def full_data_loss(state: LoopState) -> float | None:
    """The loss on all the training data with the current parameters (``final_loss``)."""
    try:
        with torch.no_grad():
            value = state.loss_fn(state.model(state.data.features), state.data.targets).item()
    except Exception as error:  # e.g. out of memory on the full data: the outputs still get written
        log.warning("could not compute the final loss on the full data: %s: %s", type(error).__name__, error)
        return None
    return finite_or_none(value)


# Losses waiting on a GPU are read at least this often, so the list stays short.
MAX_PENDING_LOSSES = 100


def fit(state: LoopState, hook) -> dict[str, Any]:
    """Train until a stop condition; always fire ``framework_fit_end`` and write result.json."""
    started = time.perf_counter()
    status, error = "completed", None
    try:
        step = hook.framework_configure_step(state=state)
        if step is None:
            raise PluginError(
                "no plugin provides the training step (framework_configure_step); "
                "is the built-in 'default_step' plugin disabled?"
            )
        # Hooks nobody implements are not called, and their arguments not computed.
        call_step_end = bool(hook.framework_step_end.get_hookimpls())
        call_log = bool(hook.framework_log.get_hookimpls())
        scheduler, max_steps = state.scheduler, state.max_steps
        log_every, tolerance = state.trainer.log_every, state.trainer.tolerance
        on_cpu = state.device.type == "cpu"
        watch = LossWatch(state, 1 if on_cpu or tolerance is not None else min(log_every, MAX_PENDING_LOSSES))
        hook.framework_fit_start(state=state)

        while state.step < max_steps:
            features, targets = next_batch(state)
            try:
                loss = step(features, targets)
            except FrameworkError:
                raise
            except Exception as caught:
                raise StepError(state, caught) from caught
            state.step += 1
            if scheduler is not None:
                scheduler.step()
            watch.add(loss)
            if call_step_end:
                hook.framework_step_end(state=state, loss=loss)
            is_log_step = state.step % log_every == 0 or state.step == 1 or state.step == max_steps
            if not (is_log_step or watch.due()):
                continue
            loss_value = watch.read()
            reached_tolerance = tolerance is not None and loss_value <= tolerance
            if call_log and (is_log_step or reached_tolerance):  # the stopping step is logged too
                metrics = {
                    "train/loss": loss_value,
                    "train/lr": float(state.optimizer.param_groups[0]["lr"]),
                    "train/grad_norm": gradient_norm(state),
                }
                hook.framework_log(state=state, step=state.step, metrics=metrics)
            if reached_tolerance:
                state.stop_reason = "tolerance"
                break
        else:
            state.stop_reason = state.limit_reason
    except KeyboardInterrupt as caught:
        status, error, state.stop_reason = "interrupted", caught, "interrupted"
    except NonFiniteLossError as caught:
        status, error, state.stop_reason = "failed", caught, "non_finite_loss"
    except BaseException as caught:
        status, error, state.stop_reason = "failed", caught, "error"
    try:
        if error is not None:
            hook.framework_exception(state=state, error=error)
    finally:
        result = result_record(
            task=state.task,
            status=status,
            steps=state.step,
            # A failed run's parameters are no result worth scoring (NaN after divergence).
            final_loss=full_data_loss(state) if status != "failed" else None,
            params=small_model_params(state.model, state.trainer.param_log_limit),
            wall_s=time.perf_counter() - started,
            device=state.device,
            stop_reason=state.stop_reason,
        )
        if state.run_dir is not None:
            write_result(state.run_dir, result)
        hook.framework_fit_end(state=state, result=result)
    if error is not None:
        raise error
    return result
