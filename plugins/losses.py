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


def per_job_mean(losses):
    """Every dimension but the first (the job axis of a batched sweep) reduced by the mean."""
    return losses.mean(dim=tuple(range(1, losses.dim())))


# The built-in losses for N jobs at once (the vectorized launcher, framework/batched_fit.py):
# predictions (N, *targets.shape) -> (N,), job j's value and gradients bit for bit those of the
# loss of its predictions alone (tests/framework/test_batched_fit.py). Elementwise with no
# reduction, then the mean or sum over the job's elements, is the single loss's arithmetic.
PER_JOB_LOSSES = {
    "mse": lambda config: lambda predictions, targets: per_job_mean(
        F.mse_loss(predictions, targets.expand_as(predictions), reduction="none")),
    "sse": lambda config: lambda predictions, targets: (predictions - targets).pow(2).sum(
        dim=tuple(range(1, predictions.dim()))),
    "l1": lambda config: lambda predictions, targets: per_job_mean(
        F.l1_loss(predictions, targets.expand_as(predictions), reduction="none")),
    "huber": lambda config: lambda predictions, targets: per_job_mean(
        F.huber_loss(predictions, targets.expand_as(predictions), reduction="none", delta=config["delta"])),
}


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
