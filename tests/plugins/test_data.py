"""Data sources that generate data, and the checks every data source's output passes (CSV: test_csv_data.py)."""

from __future__ import annotations

import math

import pytest
import torch

from framework import DataError, Dataset
from framework.data import prepare_dataset
from framework_plugins.synthetic_data import (
    EquationsConfig,
    PolynomialDataConfig,
    SineDataConfig,
    TensorDataConfig,
    equations,
    inline_tensors,
    polynomial_samples,
    sine_samples,
)

F32 = torch.float32


def test_polynomial_samples_draw_x_from_the_global_generator():
    torch.manual_seed(7)
    data = polynomial_samples(PolynomialDataConfig(coefficients=[2.0, 0.0, -1.0], n=5, x_scale=3.0), dtype=F32)
    torch.manual_seed(7)
    x = torch.randn(5) * 3.0
    assert torch.equal(data.features, x)
    assert torch.allclose(data.targets, 2 * x**2 - 1)


def test_polynomial_noise_is_added_only_when_asked():
    torch.manual_seed(0)
    clean = polynomial_samples(PolynomialDataConfig(n=50), dtype=F32)
    torch.manual_seed(0)
    noisy = polynomial_samples(PolynomialDataConfig(n=50, noise=0.5), dtype=F32)
    assert torch.equal(clean.features, noisy.features)
    assert 0.3 < (noisy.targets - clean.targets).std() < 0.7


def test_sine_samples_span_the_interval():
    data = sine_samples(SineDataConfig(n=5), dtype=torch.float64)
    assert data.features.dtype == torch.float64
    assert data.features[0] == -math.pi and data.features[-1] == math.pi
    assert torch.allclose(data.targets, torch.sin(data.features))


def test_inline_tensors_and_equations_become_float_columns():
    data = prepare_dataset(inline_tensors(TensorDataConfig(x=[1, 2], y=[3, 5]), dtype=F32),
                           dtype=F32, device=torch.device("cpu"))
    assert data.features.dtype == F32 and data.features.shape == (2, 1) and data.targets.shape == (2, 1)
    system = equations(EquationsConfig(coefficients=[[1, 1], [1, -1]], rhs=[3, 1]), dtype=F32)
    assert system.features.shape == (2, 2)
    with pytest.raises(DataError, match="one row per equation"):
        equations(EquationsConfig(coefficients=[[1, 1]], rhs=[3, 1]), dtype=F32)


def test_prepare_refuses_ragged_complex_and_non_finite_data():
    cpu = torch.device("cpu")
    with pytest.raises(DataError, match="3 feature rows but 2 target rows"):
        prepare_dataset(Dataset(torch.zeros(3), torch.zeros(2)), dtype=F32, device=cpu)
    with pytest.raises(DataError, match="complex"):
        prepare_dataset(Dataset(torch.zeros(2, dtype=torch.complex64), torch.zeros(2)), dtype=F32, device=cpu)
    with pytest.raises(DataError, match="1 value"):
        prepare_dataset(Dataset(torch.tensor([1.0, math.nan]), torch.zeros(2)), dtype=F32, device=cpu)


def test_inline_decimals_reach_a_float64_run_without_a_float32_detour():
    data = inline_tensors(TensorDataConfig(x=[0.1, 0.2, 0.3], y=[1, 2, 3]), dtype=torch.float64)
    assert data.features.dtype == torch.float64
    assert data.features.tolist() == [0.1, 0.2, 0.3]
    system = equations(EquationsConfig(coefficients=[[0.1, 1], [1, -1]], rhs=[0.3, 1]), dtype=torch.float64)
    assert system.features[0, 0].item() == 0.1


def test_a_data_component_returning_something_else_is_named_clearly():
    with pytest.raises(DataError, match="returned tuple, not framework.Dataset"):
        prepare_dataset((torch.zeros(2), torch.zeros(2)), dtype=F32, device=torch.device("cpu"))
