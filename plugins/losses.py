"""Losses: ``mse``, ``sse``, ``l1``, ``huber``. Each takes (predictions, targets) of one shape."""

from dataclasses import dataclass

import torch.nn.functional as F

from framework import Component, hookimpl, setting


@dataclass
class MeanSquaredErrorConfig:
    pass


@dataclass
class SumSquaredErrorConfig:
    pass


@dataclass
class L1Config:
    pass


@dataclass
class HuberConfig:
    delta: float = setting(1.0, gt=0)  # where the loss turns from quadratic to linear


def sum_squared_error(predictions, targets):
    # Written as the tutorials write it, so results match theirs bit for bit.
    return (predictions - targets).pow(2).sum()


@hookimpl
def framework_components():
    return [
        Component("loss", "mse", lambda config: F.mse_loss, MeanSquaredErrorConfig,
                  help="mean squared error"),
        Component("loss", "sse", lambda config: sum_squared_error, SumSquaredErrorConfig,
                  help="sum of squared errors (residuals)"),
        Component("loss", "l1", lambda config: F.l1_loss, L1Config, help="mean absolute error"),
        Component("loss", "huber",
                  lambda config: lambda predictions, targets: F.huber_loss(predictions, targets, delta=config.delta),
                  HuberConfig, help="Huber loss: squared below delta, absolute above"),
    ]
