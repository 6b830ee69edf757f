"""The ``early_stopping`` callback: stop once the monitored metric has not improved for a while.

``callback=[early_stopping]``; at every logging step that logs ``monitor`` (a *check*) it
compares it (default ``train/loss``) with the best value so far: an improvement by more than
``min_delta`` resets the count, anything else adds one, and ``patience`` checks without one stop
the run. ``val/loss`` is logged at validation steps only (``trainer.val_every``), so those are
its checks. It reads only the metrics the step logged, and its count is saved in checkpoints, so
a resumed run stops at the step an uninterrupted one does.

A monitor that can never be logged is refused: ``val/loss`` in a run without a validation set
before the first step, any other name at step 1 (the first logging step, where every metric is
logged), listing the metrics that are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from framework import Component, ConfigError, hookimpl, setting

VAL_LOSS = "val/loss"  # logged by the built-in validation plugin when the run has a validation set


@dataclass
class EarlyStoppingConfig:
    monitor: str = "train/loss"  # a logged metric: train/loss, val/loss (needs a validation set), ...
    min_delta: float = setting(0.0, ge=0)  # an improvement must exceed this
    patience: int = setting(5, ge=1)  # checks (logging steps with the monitor) without improvement


class EarlyStopping:
    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self.best = math.inf
        self.best_step = 0
        self.checks_without_improvement = 0

    @hookimpl
    def framework_fit_start(self, state):
        if self.config.monitor == VAL_LOSS and state.run.data.validation is None:
            raise ConfigError(f"callback.early_stopping.monitor={VAL_LOSS} is not logged: this run has no "
                              "validation set; hold out rows with data.val_fraction=FRACTION (e.g. 0.2), or "
                              "use a data component that gives its own validation set")

    @hookimpl
    def framework_log(self, state, step, metrics):
        monitor = self.config.monitor
        if monitor not in metrics:
            if step != 1:  # e.g. val/loss between validation steps: not a check
                return
            raise ConfigError(f"callback.early_stopping.monitor={monitor} is not logged; "
                              f"logged metrics: {', '.join(sorted(metrics))}")
        value = metrics[monitor]
        if value < self.best - self.config.min_delta:
            self.best, self.best_step, self.checks_without_improvement = value, step, 0
            return
        self.checks_without_improvement += 1
        if self.checks_without_improvement >= self.config.patience:
            state.progress.stop.request(
                f"early_stopping: {monitor} {value:.6g} has not improved on {self.best:.6g} (step "
                f"{self.best_step}) by more than {self.config.min_delta:g} for {self.config.patience} checks"
            )

    @hookimpl
    def framework_state_dict(self, state):
        return {"best": self.best, "best_step": self.best_step,
                "checks_without_improvement": self.checks_without_improvement}

    @hookimpl
    def framework_load_state_dict(self, state, state_dict):
        self.best = float(state_dict["best"])
        self.best_step = int(state_dict["best_step"])
        self.checks_without_improvement = int(state_dict["checks_without_improvement"])


@hookimpl
def framework_components():
    return [Component("callback", "early_stopping", lambda config, **context: EarlyStopping(config),
                      EarlyStoppingConfig,
                      help="stop when callback.early_stopping.monitor has not improved for `patience` checks")]
