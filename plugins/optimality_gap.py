"""The optimality gap of a least-squares fit: how far its loss is above the best one possible.

For a model that declares it is linear in its parameters (``framework.least_squares``: the
built-in ``linear`` and ``polynomial``) fitted with ``mse`` or ``sse`` to one target column, the
exact optimum is computed once, at the start of the fit, in float64 with ``torch.linalg.lstsq``,
over the trainable parameters (frozen ones are fitted around, at the values the fit starts
from: after ``trainer.init_from`` or a resume, those). Then:

- ``train/optimality_gap`` at every logging step. With full batches it is ``train/loss`` minus
  the optimum: the step's own loss (before its update), so it costs nothing. With minibatches
  ``train/loss`` is one batch's loss, which is no measure of the whole fit: the gap is then the
  loss on all the training data with the parameters after the step (one forward pass over the
  data per logging step), minus the optimum.
- ``optimal_loss`` and ``optimality_gap`` (``final_loss`` minus ``optimal_loss``) in result.json.

The loss is computed in the run's dtype and the optimum in float64, so in float32 the gap of a
converged fit can come out slightly negative (rounding, a few parts in 10⁷ of the loss's size):
it is reported as computed, not clamped at 0.

The plugin object is added to a fit only when the run can be such a problem
(``framework_fit_plugins``), so other runs pay for nothing.
"""

from __future__ import annotations


from framework import hookimpl, may_be_least_squares, run_problem
from framework.loop import data_loss

GAP_TAG = "train/optimality_gap"


class OptimalityGap:
    def __init__(self) -> None:
        self.optimal_loss: float | None = None  # None until fit start, and when the model declares no problem

    @hookimpl
    def framework_fit_start(self, state):
        # At fit start, not when built: frozen parameters have their final starting values only
        # once a resume or trainer.init_from has loaded them.
        problem = run_problem(state.run)
        if problem is not None:
            self.optimal_loss = problem.optimum()[1]

    @hookimpl
    def framework_metrics(self, state, step, metrics):
        if self.optimal_loss is None:
            return None
        run = state.run
        if run.steps_per_epoch == 1:  # every step sees all the data
            loss = metrics["train/loss"]
        else:
            loss = data_loss(run, run.data)
        return {GAP_TAG: loss - self.optimal_loss}

    @hookimpl
    def framework_result(self, state, result):
        if self.optimal_loss is None:
            return None
        final = result["final_loss"]
        return {"optimal_loss": self.optimal_loss,
                "optimality_gap": None if final is None else final - self.optimal_loss}


@hookimpl
def framework_fit_plugins(state):
    return [OptimalityGap()] if may_be_least_squares(state.run) else []
