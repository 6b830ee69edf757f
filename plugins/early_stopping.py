"""The ``early_stopping`` callback: stop once the monitored metric has not improved for a while.

``callback=[early_stopping]``; at every logging step (a *check*) it compares ``monitor``
(default ``train/loss``) with the best value so far: an improvement by more than ``min_delta``
resets the count, anything else adds one, and ``patience`` checks without one stop the run. It
reads only the metrics the step logged, and its count is saved in checkpoints, so a resumed run
stops at the step an uninterrupted one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from framework import Component, ConfigError, hookimpl, setting


@dataclass
class EarlyStoppingConfig:
    monitor: str = "train/loss"  # a metric the loop logs
    min_delta: float = setting(0.0, ge=0)  # an improvement must exceed this
    patience: int = setting(5, ge=1)  # checks (logging steps) without improvement before the stop


class EarlyStopping:
    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self.best = math.inf
        self.best_step = 0
        self.checks_without_improvement = 0

    @hookimpl
    def framework_log(self, state, step, metrics):
        monitor = self.config.monitor
        if monitor not in metrics:
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
