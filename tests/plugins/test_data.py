"""Data sources: what they generate or read, and the messages for bad files."""

from __future__ import annotations

import math

import pytest
import torch

from framework import DataError, Dataset
from framework.data import prepare_dataset
from framework_plugins.csv_data import CsvConfig, csv_table
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


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_with_header_takes_the_last_column_as_target(tmp_path):
    data = csv_table(CsvConfig(path=write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n\n")), dtype=F32)
    assert data.features.tolist() == [[1, 2], [4, 5]] and data.targets.tolist() == [3, 6]


def test_csv_target_by_name_or_index_and_without_header(tmp_path):
    path = write(tmp_path, "y,a\n3,1\n6,4\n")
    assert csv_table(CsvConfig(path=path, target="y"), dtype=F32).targets.tolist() == [3, 6]
    headless = write(tmp_path, "3;1\n6;4\n", "headless.csv")
    data = csv_table(CsvConfig(path=headless, target="0", delimiter=";"), dtype=F32)
    assert data.targets.tolist() == [3, 6] and data.features.tolist() == [[1], [4]]
    with pytest.raises(DataError, match="columns: y, a"):
        csv_table(CsvConfig(path=path, target="z"), dtype=F32)


def test_csv_errors_name_the_file_and_line(tmp_path):
    bad_cell = write(tmp_path, "a,y\n1,2\n3,x\n", "bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv, line 3, column 'y': 'x' is not a number"):
        csv_table(CsvConfig(path=bad_cell), dtype=F32)
    ragged = write(tmp_path, "a,b,y\n1,2,3\n4,5\n", "ragged.csv")
    with pytest.raises(DataError, match=r"ragged\.csv, line 3: 2 cells where the first row has 3"):
        csv_table(CsvConfig(path=ragged), dtype=F32)
    with pytest.raises(DataError, match=r"cannot read data.path=.*missing\.csv"):
        csv_table(CsvConfig(path=str(tmp_path / "missing.csv")), dtype=F32)
    with pytest.raises(DataError, match="no rows"):
        csv_table(CsvConfig(path=write(tmp_path, "\n", "empty.csv")), dtype=F32)


def test_inline_decimals_reach_a_float64_run_without_a_float32_detour():
    data = inline_tensors(TensorDataConfig(x=[0.1, 0.2, 0.3], y=[1, 2, 3]), dtype=torch.float64)
    assert data.features.dtype == torch.float64
    assert data.features.tolist() == [0.1, 0.2, 0.3]
    system = equations(EquationsConfig(coefficients=[[0.1, 1], [1, -1]], rhs=[0.3, 1]), dtype=torch.float64)
    assert system.features[0, 0].item() == 0.1


def test_a_data_component_returning_something_else_is_named_clearly():
    with pytest.raises(DataError, match="returned tuple, not framework.Dataset"):
        prepare_dataset((torch.zeros(2), torch.zeros(2)), dtype=F32, device=torch.device("cpu"))
