"""The training loop: one function that reads top to bottom and fires named hooks."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from framework.batches import next_batch
from framework.errors import NonFiniteLossError, PluginError
from framework.outputs import finite_or_none, result_record, small_model_params, write_result
from framework.state import LoopState


class LossWatch:
    """Reads step losses back from the device in batches, and stops at the first non-finite one.

    Reading a loss (``.item()``) synchronises with the device. On the CPU that is free, so every
    step is read; on a GPU losses wait on the device until a logging step and are read together.
    Either way the first non-finite loss is reported with its own step number.
    """

    def __init__(self, state: LoopState, read_every: int) -> None:
        self.state = state
        self.read_every = read_every
        self.pending: list[torch.Tensor] = []
        self.first_pending_step = 1

    def add(self, loss: torch.Tensor) -> None:
        if not self.pending:
            self.first_pending_step = self.state.step
        self.pending.append(loss.detach())

    def due(self) -> bool:
        return len(self.pending) >= self.read_every

    def read(self) -> float:
        """Read pending losses; raise at the first non-finite one; return the latest."""
        if len(self.pending) == 1:
            values = [self.pending[0].item()]
        else:
            values = torch.stack(self.pending).tolist()
        self.pending.clear()
        state = self.state
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    self.first_pending_step + offset, value, state.last_loss, state.last_loss_step
                )
            state.last_loss = value
            state.last_loss_step = self.first_pending_step + offset
        return state.last_loss


def gradient_norm(state: LoopState) -> float:
    """The step's gradient norm: the clip's pre-clipping norm, or computed from the gradients."""
    if state.grad_norm is not None:
        return float(state.grad_norm)
    grads = [p.grad for p in state.trainable.values() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def full_data_loss(state: LoopState) -> float | None:
    """The loss on all the training data with the current parameters (``final_loss``)."""
    with torch.no_grad():
        value = state.loss_fn(state.model(state.data.features), state.data.targets).item()
    return finite_or_none(value)


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
        # Hooks nobody implements are not called at all: the hot path stays lean.
        call_step_end = bool(hook.framework_step_end.get_hookimpls())
        trainer, scheduler, max_steps = state.trainer, state.scheduler, state.max_steps
        log_every, tolerance = trainer.log_every, trainer.tolerance
        read_every = 1 if state.device.type == "cpu" or tolerance is not None else log_every
        watch = LossWatch(state, read_every)
        hook.framework_fit_start(state=state)

        while state.step < max_steps:
            features, targets = next_batch(state)
            loss = step(features, targets)
            state.step += 1
            if scheduler is not None:
                scheduler.step()
            watch.add(loss)
            if call_step_end:
                hook.framework_step_end(state=state, loss=loss)
            is_log_step = state.step % log_every == 0 or state.step == 1 or state.step == max_steps
            if is_log_step or watch.due():
                loss_value = watch.read()
                if is_log_step:
                    metrics = {
                        "train/loss": loss_value,
                        "train/lr": float(state.optimizer.param_groups[0]["lr"]),
                        "train/grad_norm": gradient_norm(state),
                    }
                    hook.framework_log(state=state, step=state.step, metrics=metrics)
                if tolerance is not None and loss_value <= tolerance:
                    state.stop_reason = "tolerance"
                    break
        else:
            at_epoch_limit = (
                trainer.max_epochs is not None
                and state.max_steps == trainer.max_epochs * state.steps_per_epoch
            )
            state.stop_reason = "max_epochs" if at_epoch_limit else "max_steps"
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
