"""``trainer.tolerance``: stop once a step's loss is at or below it, through the stop request.

Added to a fit only when the setting is on (``framework_fit_plugins``), so a run without it
pays for no hook call.
"""

from framework import hookimpl


class ToleranceStop:
    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance

    @hookimpl
    def framework_step_end(self, state, loss):
        # Reading the loss synchronises with the device: the price of checking every step.
        # A NaN loss compares False and is left to the loop's non-finite check.
        if loss.item() <= self.tolerance:
            state.progress.stop.request("tolerance")


@hookimpl
def framework_fit_plugins(state):
    tolerance = state.run.trainer.tolerance
    return [] if tolerance is None else [ToleranceStop(tolerance)]
