"""The training loop: one function that reads top to bottom and fires named hooks."""

from __future__ import annotations

import logging
import math
import signal
import time
from typing import Any

import torch

from framework.batches import next_batch
from framework.checkpoints import Checkpointer
from framework.errors import FrameworkError, NonFiniteLossError, OutputError, PluginError, TrainingError, user_message
from framework.hook_calls import PLUGIN_FAILURES, call_every, call_hook
from framework.outputs import PLUGIN_RESULT_FIELDS, finite_or_none, result_record, small_model_params, write_result
from framework.standardize import in_original_units
from framework.state import BuiltRun, LoopState, Progress, is_periodic_step

log = logging.getLogger(__name__)


class LossWatch:
    """Reads step losses back from the device, and stops at the first non-finite one.

    Reading a loss (``.item()``) synchronises with the device. On the CPU that is free, so every
    step's loss is read as it comes (:meth:`add`); on a GPU losses wait on the device for up to
    ``read_every`` steps (a logging step reads them at once). Either way the first non-finite
    loss is reported with its own step number; on a GPU the loop may have run up to
    ``read_every - 1`` steps past it by then.
    """

    def __init__(self, progress: Progress, read_every: int) -> None:
        self.progress = progress
        self.read_every = read_every
        self.pending: list[torch.Tensor] = []
        if read_every > 1:
            self.add = self.pending_add

    def add(self, loss: torch.Tensor) -> None:
        """Read the step's loss now (read_every 1: the CPU)."""
        value = loss.item()
        progress = self.progress
        if not math.isfinite(value):
            raise NonFiniteLossError(progress.step, value, progress.last_loss, progress.last_loss_step)
        progress.last_loss, progress.last_loss_step = value, progress.step

    def pending_add(self, loss: torch.Tensor) -> None:
        """Keep the step's loss on the device until :meth:`read` (read_every > 1: a GPU)."""
        self.pending.append(loss.detach())

    def due(self) -> bool:
        return len(self.pending) >= self.read_every

    def read(self) -> float:
        """Read pending losses; raise at the first non-finite one; return the latest."""
        progress = self.progress
        if not self.pending:
            return progress.last_loss
        first_step = progress.step - len(self.pending) + 1
        values = [self.pending[0].item()] if len(self.pending) == 1 else torch.stack(self.pending).tolist()
        self.pending.clear()
        for step, value in enumerate(values, first_step):
            if not math.isfinite(value):
                raise NonFiniteLossError(step, value, progress.last_loss, progress.last_loss_step)
            progress.last_loss, progress.last_loss_step = value, step
        return progress.last_loss


def training_what(run: BuiltRun) -> str:
    """``model polynomial, loss mse, optimizer nadam``: the components, for failure messages."""
    return ", ".join(f"{kind} {name}" for kind, name in run.components.items() if kind != "data")


class StepError(TrainingError):
    """An exception inside the training step, named with the step and the components."""

    def __init__(self, state: LoopState, error: Exception) -> None:
        super().__init__(
            f"training failed at step {state.progress.step + 1}: {type(error).__name__}: {error} "
            f"({training_what(state.run)})"
        )


def with_plugin_metrics(hook, training: str, state: LoopState, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """The step's metrics and those the plugins add (``framework_metrics``); a tag given twice
    is a plugin's mistake, refused rather than silently overwritten."""
    combined = dict(metrics)
    for added in call_hook(hook, "framework_metrics", training, state=state, step=step, metrics=metrics):
        for tag, value in (added or {}).items():
            if tag in combined:
                raise PluginError(f"the metric {tag!r} is given twice at step {step}: by the loop or another "
                                  f"plugin, and by a plugin's framework_metrics ({training})")
            combined[tag] = float(value)
    return combined


def gradient_norm(run: BuiltRun, progress: Progress) -> float:
    """The step's gradient norm (``train/grad_norm``, ``trainer.tol.grad_norm``): the clip's
    pre-clipping norm when the step clipped, else computed from the gradients."""
    if progress.grad_norm is not None:
        return float(progress.grad_norm)
    grads = [p.grad for p in run.trainable.values() if p.grad is not None]
    if not grads:
        return 0.0
    # get_total_norm's own computation (the norm of the per-tensor norms) without its grouping
    # by device and dtype, which costs twice the rest on a small model: a run's parameters share
    # one device, and stack promotes dtypes.
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def data_loss(run: BuiltRun, data) -> float:
    """The loss function on all the rows of ``data`` (a :class:`framework.Dataset`) with the
    current parameters, without gradients: final_loss, val/loss, the optimality gap."""
    with torch.no_grad():
        return run.loss_fn(run.model(data.features), data.targets).item()


def full_data_loss(run: BuiltRun) -> float | None:
    """The loss on all the training data with the current parameters (``final_loss``)."""
    try:
        value = data_loss(run, run.data)
    except Exception as error:  # e.g. out of memory on the full data: the outputs still get written
        log.warning("could not compute the final loss on the full data: %s: %s", type(error).__name__, error)
        return None
    return finite_or_none(value)


# Losses waiting on a GPU are read at least this often, so the list stays short.
MAX_PENDING_LOSSES = 100


def fit(state: LoopState, hook, checkpointer: Checkpointer | None = None, parallel=None) -> dict[str, Any]:
    """Train until a stop is requested; always fire ``framework_fit_end`` and write result.json.

    With a ``checkpointer``, save every ``trainer.checkpoint_every`` steps, and at the end of a
    fit that completed or was stopped by a request (a signal) save the last checkpoint and the
    model's weights. With ``parallel`` (a :class:`framework.distributed.DataParallel`), the step
    trains this rank's shard through DDP and every rank agrees on each stop.
    """
    run, progress = state.run, state.progress
    stop = progress.stop
    started = time.perf_counter()
    error = None
    training = f"training {training_what(run)}"
    try:
        # Under DDP the step gets the DistributedDataParallel wrapper as state.run.model.
        step = call_hook(hook, "framework_configure_step", training,
                         state=state if parallel is None else parallel.step_state)
        if step is None:
            raise PluginError(
                "no plugin provides the training step (framework_configure_step); "
                "is the built-in 'default_step' plugin disabled?"
            )
        # Hooks nobody implements are not called, and their arguments not computed.
        call_step_end = bool(hook.framework_step_end.get_hookimpls())
        call_log = bool(hook.framework_log.get_hookimpls())
        call_metrics = call_log and bool(hook.framework_metrics.get_hookimpls())
        scheduler, max_steps, log_every = run.scheduler, run.max_steps, run.trainer.log_every
        checkpoint_every = (run.trainer.checkpoint_every or 0) if checkpointer is not None else 0
        # Validation steps (plugins/validation.py) are logging steps too, whatever log_every is.
        val_every = run.trainer.val_every or 0
        watch = LossWatch(progress, 1 if run.device.type == "cpu" else min(log_every, MAX_PENDING_LOSSES))
        call_hook(hook, "framework_fit_start", training, state=state)
        # The hot path: a step that neither logs nor saves costs the step, a counter and a few
        # comparisons (bench/run.py measures it against the plain loop).
        full_batch = run.steps_per_epoch == 1
        if full_batch:  # the same tensors every step (framework.batches)
            features, targets = run.data.features, run.data.targets
        pending, read_every = watch.pending, watch.read_every
        add_loss = watch.add
        go_on = None  # one process: the stop request alone says when to end
        if parallel is not None:  # DDP: a rank's shard, the global loss, and stops all ranks agree on
            step, go_on = parallel.wrap_step(step), parallel.agree_to_go_on

        with torch.enable_grad():  # the step's backward needs it, whatever the caller set
            while stop.reason is None if go_on is None else go_on():
                if progress.step >= max_steps:
                    stop.request(run.limit_reason)
                    break
                if full_batch:
                    progress.epoch += 1
                else:
                    features, targets = next_batch(run, progress)
                try:
                    loss = step(features, targets)
                except FrameworkError:
                    raise
                except PLUGIN_FAILURES as caught:  # the step is a plugin's: a SystemExit too
                    raise StepError(state, caught) from caught
                progress.step = step_number = progress.step + 1
                if scheduler is not None:
                    scheduler.step()
                add_loss(loss)
                if call_step_end:
                    call_hook(hook, "framework_step_end", training, state=state, loss=loss)
                is_log_step = (is_periodic_step(step_number, log_every, max_steps, stop)
                               or (val_every and step_number % val_every == 0))
                is_checkpoint_step = checkpoint_every and step_number % checkpoint_every == 0
                if not (is_log_step or is_checkpoint_step or len(pending) >= read_every):
                    continue
                loss_value = watch.read()  # before a checkpoint too: it holds no unchecked loss
                if call_log and is_log_step:
                    metrics = {
                        "train/loss": loss_value,
                        "train/lr": float(run.optimizer.param_groups[0]["lr"]),
                        "train/grad_norm": gradient_norm(run, progress),
                    }
                    if call_metrics:
                        metrics = with_plugin_metrics(hook, training, state, step_number, metrics)
                    call_hook(hook, "framework_log", training, state=state, step=step_number, metrics=metrics)
                if is_checkpoint_step:
                    checkpointer.save(state)
            if watch.pending:  # an interruption between reads (GPU): check what the last steps gave
                watch.read()
    except KeyboardInterrupt as caught:  # no handler turned the signal into a stop request
        status, error = "interrupted", caught
        stop.replace("interrupted", signal=signal.SIGINT)
    except NonFiniteLossError as caught:
        status, error = "failed", caught
        stop.replace("non_finite_loss")
    except BaseException as caught:
        status, error = "failed", caught
        stop.replace("error")
    else:
        status = "interrupted" if stop.interrupted else "completed"
    return close_fit(state, hook, checkpointer, status=status, error=error, started=started, training=training)


def close_fit(state: LoopState, hook, checkpointer: Checkpointer | None, *, status: str,
              error: BaseException | None, started: float, training: str) -> dict[str, Any]:
    """Save, tell every plugin how the fit ended, write result.json; raise the fit's error."""
    run, stop = state.run, state.progress.stop
    # Saved only when the loop ended at a step boundary: an exception (even a bare Ctrl-C with
    # no handler) may have left a step half done.
    if checkpointer is not None and error is None:
        try:
            checkpointer.save_final(state)
        except Exception as caught:  # e.g. a full disk: result.json still says what happened
            status, error = "failed", caught
            stop.replace("error")
    if error is not None:
        report_late_failures(call_every(hook, "framework_exception", training, state=state, error=error))
    result = result_record(
        task=run.task,
        status=status,
        steps=state.progress.step,
        # A failed run's parameters are no result worth scoring (NaN after divergence).
        final_loss=full_data_loss(run) if status != "failed" else None,
        params=small_model_params(in_original_units(run.model), run.trainer.param_log_limit),
        wall_s=time.perf_counter() - started,
        device=run.device,
        stop_reason=stop.reason,
        error=None if error is None or status == "interrupted" else user_message(error),
    )

    def fail_late(failure: Exception) -> None:
        # A failure after the loop (a plugin's result fields, a full disk): the run failed, unless
        # it had already failed, in which case the first error stands and this one is logged.
        nonlocal error
        if error is None:
            error = failure
            stop.replace("error")
            result.update(status="failed", stop_reason=stop.reason, error=user_message(failure))
        else:
            log.error("%s", user_message(failure))

    try:
        result.update(plugin_result_fields(hook, training, state, result))
    except FrameworkError as caught:
        fail_late(caught)
    try:
        save_result(run, result)
    except OutputError as caught:  # a full disk: the plugins still close what they have
        fail_late(caught)
    # Every plugin's fit_end runs, whatever another's did: each logger writes what it has.
    late_error = []

    def fail_at_the_end(failure: Exception) -> None:
        # The run did not end well after all: the plugins still to be called, result.json and
        # the exit status say so.
        if error is None and not late_error:
            late_error.append(failure)
            stop.replace("error")
            result.update(status="failed", stop_reason=stop.reason, error=user_message(failure))

    failures = call_every(hook, "framework_fit_end", training, on_failure=fail_at_the_end, state=state, result=result)
    if late_error:
        error = late_error[0]
        failures.remove(error)
        try:
            save_result(run, result)
        except OutputError as caught:
            log.error("%s", caught)
    report_late_failures(failures)
    if error is not None:
        raise error
    return result


def plugin_result_fields(hook, training: str, state: LoopState, result: dict[str, Any]) -> dict[str, Any]:
    """The fields plugins add to result.json (``framework_result``); the loop's own are theirs to read only."""
    if not hook.framework_result.get_hookimpls():
        return {}
    fields: dict[str, Any] = {}
    for added in call_hook(hook, "framework_result", training, state=state, result=dict(result)):
        for name, value in (added or {}).items():
            if name in result and name not in PLUGIN_RESULT_FIELDS or name in fields:
                raise PluginError(f"a plugin gives the result field {name!r}, which the loop or another "
                                  f"plugin already gives (framework_result; {training})")
            fields[name] = finite_or_none(value) if isinstance(value, float) else value
    return fields


def save_result(run: BuiltRun, result: dict[str, Any]) -> None:
    if run.run_dir is not None:
        write_result(run.run_dir, result)


def report_late_failures(failures: list[Exception]) -> None:
    """Failures of closing hooks after the run had already failed: logged, the first error stands."""
    for failure in failures:
        log.error("%s", user_message(failure))
