"""Held-out evaluation: ``val/loss`` at validation steps and ``final_val_loss`` in result.json.

Added to a fit only when the run has a validation set (``data.val_fraction``, or a data
component's own; ``state.run.data.validation``), so a run without one pays for nothing.

Validation steps are step 1, every ``trainer.val_every`` steps, the last step and the step where
a stop rule ends the run, as logging steps are for ``trainer.log_every`` (the loop makes each of
them a logging step); with ``trainer.val_every`` null, every logging step. The loss there is the
run's loss function on all the validation rows, without gradients and with the model in eval
mode (put back as it was), read back from the device only at those steps.
"""

from __future__ import annotations

import logging

from framework import hookimpl
from framework.loop import data_loss
from framework.state import is_periodic_step

log = logging.getLogger(__name__)

VAL_LOSS = "val/loss"  # the TensorBoard tag


def validation_loss(run) -> float:
    """The loss function on the validation rows with the current parameters."""
    model, validation = run.model, run.data.validation
    was_training = model.training
    model.eval()  # dropout off, batch norm on its running statistics
    try:
        return data_loss(run, validation)
    finally:
        model.train(was_training)


class Validation:
    def __init__(self, val_every: int | None) -> None:
        self.val_every = val_every

    def is_validation_step(self, state, step: int) -> bool:
        # The loop's rule for logging steps, so that a resumed run validates at the steps an
        # uninterrupted one does.
        return self.val_every is None or is_periodic_step(step, self.val_every, state.run.max_steps,
                                                          state.progress.stop)

    @hookimpl
    def framework_metrics(self, state, step, metrics):
        if not self.is_validation_step(state, step):
            return None
        return {VAL_LOSS: validation_loss(state.run)}

    @hookimpl
    def framework_result(self, state, result):
        if result["status"] == "failed":  # as final_loss: a failed run's parameters are no result
            return None
        try:
            return {"final_val_loss": validation_loss(state.run)}
        except Exception as error:  # e.g. out of memory: result.json still gets written
            log.warning("could not compute the final loss on the validation data: %s: %s",
                        type(error).__name__, error)
            return None


@hookimpl
def framework_fit_plugins(state):
    if state.run.data.validation is None:
        return []
    return [Validation(state.run.trainer.val_every)]
