"""Data made from the config: ``polynomial`` samples, ``sine``, inline ``tensor`` and ``equations``."""

import math
from dataclasses import dataclass
from typing import Any, List

import torch
from omegaconf import MISSING

from framework import Component, DataConfig, DataError, Dataset, hookimpl, setting


@dataclass
class PolynomialDataConfig(DataConfig):
    coefficients: List[float] = setting(default_factory=lambda: [1.0, 2.0, 3.0])  # highest power first
    n: int = setting(20, ge=1)  # number of samples
    x_scale: float = setting(5.0, gt=0)  # x = N(0, 1) * x_scale: the standard deviation of x
    noise: float = setting(0.0, ge=0)  # standard deviation of N(0, noise) added to y


@dataclass
class SineDataConfig(DataConfig):
    n: int = setting(2000, ge=1)
    start: float = setting(-math.pi)
    end: float = setting(math.pi)


@dataclass
class TensorDataConfig(DataConfig):
    x: List[Any] = MISSING  # a list of numbers (one feature) or of rows
    y: List[Any] = MISSING  # a list of numbers (one target) or of rows


@dataclass
class EquationsConfig(DataConfig):
    coefficients: List[Any] = MISSING  # one row of numbers per equation
    rhs: List[Any] = MISSING  # one right-hand side per equation


def polynomial_samples(config: PolynomialDataConfig, *, dtype) -> Dataset:
    x = torch.randn(config.n, dtype=dtype) * config.x_scale
    degree = len(config.coefficients) - 1
    y = torch.zeros_like(x)
    for index, coefficient in enumerate(config.coefficients):
        y = y + coefficient * x ** (degree - index)
    if config.noise:  # drawn only when asked for, so noise-free data leave the RNG stream alone
        y = y + torch.randn(config.n, dtype=dtype) * config.noise
    return Dataset(x, y, source=f"polynomial {list(config.coefficients)}")


def sine_samples(config: SineDataConfig, *, dtype) -> Dataset:
    x = torch.linspace(config.start, config.end, config.n, dtype=dtype)
    return Dataset(x, torch.sin(x), source="sin x")


def as_tensor(values, setting: str, dtype) -> torch.Tensor:
    try:
        return torch.tensor(values, dtype=dtype)  # straight to the run's dtype: no float32 detour
    except (TypeError, ValueError) as error:
        raise DataError(f"{setting} is not a list of numbers or of equal-length rows: {error}") from None


def inline_tensors(config: TensorDataConfig, *, dtype) -> Dataset:
    return Dataset(as_tensor(list(config.x), "data.x", dtype), as_tensor(list(config.y), "data.y", dtype),
                   source="data.x/data.y")


def equations(config: EquationsConfig, *, dtype) -> Dataset:
    matrix = as_tensor([list(row) for row in config.coefficients], "data.coefficients", dtype)
    rhs = as_tensor(list(config.rhs), "data.rhs", dtype)
    if matrix.dim() != 2 or matrix.shape[0] != rhs.shape[0]:
        raise DataError(
            f"data.coefficients must be one row per equation ({rhs.shape[0]} right-hand sides), "
            f"got shape {tuple(matrix.shape)}"
        )
    return Dataset(matrix, rhs, source=f"{matrix.shape[0]} equations")


@hookimpl
def framework_components():
    return [
        Component("data", "polynomial", polynomial_samples, PolynomialDataConfig,
                  help="x ~ N(0,1)*x_scale, y = polynomial(x) (+ noise)"),
        Component("data", "sine", sine_samples, SineDataConfig, help="x evenly spaced, y = sin x"),
        Component("data", "tensor", inline_tensors, TensorDataConfig, help="X and y written in the config"),
        Component("data", "equations", equations, EquationsConfig,
                  help="a linear system: coefficient rows and right-hand sides"),
    ]
