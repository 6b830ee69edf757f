"""``data.standardize=true``: the fit is made on standardized features and reported in the data's
units. A float64 fit to convergence equals numpy's least-squares optimum of the raw problem; the
saved model takes raw features; a resumed run is bit-identical; models whose fit could not be
given in the data's units are refused."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy
import pytest
import torch

import framework
from framework import Component, hookimpl
from framework.errors import ConfigError
from framework.plugin_manager import build_registry
from framework.run import run_training
from framework.schema import store_configs
from framework.standardize import StandardizedInput, column_statistics, standardize_inputs
from framework_plugins.linear_model import Linear
from framework_plugins.polynomial_model import Polynomial
from tests.conftest import run_cli
from tests.framework.compare import assert_same_run, final_checkpoint
from tests.framework import test_resume
from tests.framework.test_resume import interrupted_then_resumed

ctrl_c_raises = test_resume.ctrl_c_raises  # the fixture, for this module's resume test

# LBFGS in float64 to the bottom: its default tolerances stop where the loss is flat to 1e-11,
# which leaves parameters off by 1e-6.
CONVERGED = ["trainer.dtype=float64", "optimizer=lbfgs", "optimizer.tolerance_grad=1e-14",
             "optimizer.tolerance_change=1e-16", "trainer.max_steps=50", "logger=[]"]


def numpy_optimum(design: numpy.ndarray, target: numpy.ndarray) -> numpy.ndarray:
    return numpy.linalg.lstsq(design, target, rcond=None)[0]


def badly_scaled_csv(tmp_path):
    """Three features of scales 1, 100 and 10⁴ far from 0, and a noisy linear target."""
    generator = numpy.random.default_rng(7)
    features = generator.normal([5.0, -300.0, 2e4], [1.0, 100.0, 1e4], size=(40, 3))
    target = features @ [1.5, -0.02, 3e-4] + 4.0 + generator.normal(0, 0.3, size=40)
    path = tmp_path / "scaled.csv"
    rows = ["a,b,c,y"] + [",".join(repr(float(v)) for v in (*row, y)) for row, y in zip(features, target)]
    path.write_text("\n".join(rows) + "\n")
    return path, features, target


def test_a_standardized_linear_fit_is_the_raw_optimum_in_the_datas_units(train, tmp_path):
    path, features, target = badly_scaled_csv(tmp_path)
    run = train(["+task=linear2d", "data=csv", f"data.path={path}", "data.standardize=true", *CONVERGED],
                run_dir=tmp_path / "run")
    expected = numpy_optimum(numpy.hstack([features, numpy.ones((40, 1))]), target)
    fitted = numpy.array([*run["params"]["weight"][0], run["params"]["bias"][0]])
    numpy.testing.assert_allclose(fitted, expected, rtol=1e-6)
    assert abs(run["optimality_gap"]) <= 1e-9 * run["optimal_loss"]


def polyfit_samples_float64(noise: float):
    """polyfit's data as the run draws them in float64 (seed 0, x, then the noise)."""
    torch.manual_seed(0)
    x = torch.randn(20, dtype=torch.float64) * 5
    y = x**2 + 2 * x + 3 + torch.randn(20, dtype=torch.float64) * noise
    return x, y


def test_a_standardized_polynomial_fit_is_the_raw_optimum_and_the_saved_model_takes_raw_x(tmp_path):
    run = framework.train(["+task=polyfit", "data.noise=2.0", "data.standardize=true", *CONVERGED],
                          run_dir=tmp_path / "run")
    x, y = polyfit_samples_float64(2.0)
    expected = numpy_optimum(numpy.stack([x.numpy()**2, x.numpy(), numpy.ones(20)], axis=1), y.numpy())
    numpy.testing.assert_allclose([run.result["params"][name] for name in "ABC"], expected, rtol=1e-6)

    # framework.train and load_run give the polynomial itself, in the data's units ...
    loaded = framework.load_run(run.dir)
    assert type(run.model) is type(loaded.model) is Polynomial
    assert {name: p.item() for name, p in loaded.model.named_parameters()} == run.result["params"]
    # ... and it is the function that was trained: the checkpoint's standardized model, on raw
    # x inside and outside the data.
    saved = final_checkpoint(run.dir)["model"]
    assert set(saved) == {"standardized.A", "standardized.B", "standardized.C", "mean", "scale"}
    probe = torch.linspace(-30, 30, 61, dtype=torch.float64).unsqueeze(1)
    z = (probe - saved["mean"]) / saved["scale"]
    trained = saved["standardized.A"] * z**2 + saved["standardized.B"] * z + saved["standardized.C"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(probe), trained, rtol=1e-10, atol=1e-10)


def test_the_trained_parameters_are_the_standardized_ones(train, recorder, tmp_path):
    train(["+task=polyfit", "data.standardize=true", "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    torch.manual_seed(0)
    x = (torch.randn(20) * 5).double()  # the run's float32 samples; their statistics in float64
    optimized = recorder.optimizer.param_groups[0]["params"]  # may be one flat tensor (flat_parameters)
    assert sum(p.numel() for p in optimized) == 3 and set(recorder.final) == {"standardized.A", "standardized.B", "standardized.C"}
    checkpoint = final_checkpoint(tmp_path)["model"]
    assert checkpoint["mean"].dtype == torch.float32
    assert checkpoint["mean"].item() == numpy.float32(x.mean().item())
    assert checkpoint["scale"].item() == numpy.float32(x.std(correction=0).item())


def test_frozen_parameters_are_named_by_their_standardized_names(train, tmp_path):
    with pytest.raises(ConfigError, match="matches no parameter; parameters: standardized.A, standardized.B"):
        train(["+task=polyfit", "data.standardize=true", "trainer.freeze=[B]"], run_dir=tmp_path / "refused")
    result = train(["+task=polyfit", "data.standardize=true", "trainer.freeze=[standardized.B]",
                    "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path / "frozen")
    assert result["status"] == "completed" and result["optimal_loss"] is not None


def test_a_model_without_intercept_is_only_scaled(train, tmp_path, caplog):
    caplog.set_level("INFO", logger="framework")
    result = train(["+task=puzzle", "data.standardize=true", *CONVERGED], run_dir=tmp_path)
    assert "only divided by their root mean square, not centered" in caplog.text
    saved = final_checkpoint(tmp_path)["model"]
    assert torch.equal(saved["mean"], torch.zeros(4, dtype=torch.float64))
    # The puzzle has many exact solutions (rank 3): any is right, in the unknowns' own units.
    equations = numpy.array([[1., 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]])
    numpy.testing.assert_allclose(equations @ numpy.array(result["params"]["weight"][0]), [9, 1, 8, 2], atol=1e-6)


def test_the_standardized_puzzle_still_trains_its_weights_transpose(train, recorder, tmp_path):
    # The wrapper passes on the one-output linear model's layout (framework.flat_parameters):
    # the optimizer's one tensor is the weight's transpose, the weight a view of it.
    train(["+task=puzzle", "data.standardize=true", "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    (optimized,) = recorder.optimizer.param_groups[0]["params"]
    assert optimized.shape == (4, 1) and optimized.stride() == (1, 4)
    assert set(recorder.final) == {"standardized.weight"}


def test_column_statistics_leave_constant_columns_as_they_are():
    features = torch.tensor([[1.0, 7.0, 0.0], [3.0, 7.0, 0.0], [5.0, 7.0, 0.0]])
    mean, scale, constant = column_statistics(features, centered=True)
    assert mean.tolist() == [3.0, 0.0, 0.0] and scale.tolist() == pytest.approx([math.sqrt(8 / 3), 1.0, 1.0])
    assert constant == [1, 2]
    mean, scale, constant = column_statistics(features, centered=False)
    assert mean.tolist() == [0.0, 0.0, 0.0] and scale.tolist() == pytest.approx([math.sqrt(35 / 3), 7.0, 1.0])
    assert constant == [2]


def test_a_constant_column_still_fits_the_same_function(tmp_path):
    features = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    model = Linear(2, 1, True, "randn").to(torch.float64)
    wrapped = standardize_inputs(model, features, "linear")
    assert wrapped.mean.tolist() == [1.75, 0.0] and wrapped.scale[1].item() == 1.0
    probe = torch.randn(9, 2, dtype=torch.float64) * 10
    with torch.no_grad():
        torch.testing.assert_close(wrapped.in_original_units()(probe), wrapped(probe), rtol=1e-10, atol=1e-10)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_resumed_with_standardize_equals_uninterrupted(train, manager, tmp_path):
    overrides = ["+task=polyfit", "data.standardize=true", "optimizer=adam", "optimizer.lr=0.05",
                 "data.batch_size=6", "data.shuffle=true", "trainer.max_steps=60", "trainer.log_every=5"]
    train(overrides, run_dir=tmp_path / "straight", task="polyfit")
    interrupted_then_resumed(train, manager, overrides, tmp_path / "stopped", 23, task="polyfit")
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")
    assert (tmp_path / "stopped" / "model.safetensors").read_bytes() == \
        (tmp_path / "straight" / "model.safetensors").read_bytes()


def test_a_resume_must_keep_standardize(train, tmp_path):
    train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.standardize=False there but True here"):
        train(["+task=linear", "trainer.max_steps=10", "data.standardize=true", f"trainer.resume={tmp_path}",
               "logger=[]"], run_dir=tmp_path)


@pytest.mark.parametrize("overrides, reason", [
    (["+task=legendre"], r"model 'sine_cubic' \(SineCubic\) declares no design matrix"),
    (["+task=linear", "data.y=[[3,1],[5,1],[7,1],[9,1]]"], r"model 'linear' \(Linear\) gives no design matrix"),
], ids=["no design matrix", "two outputs"])
def test_a_model_that_declares_no_design_matrix_is_refused_before_any_work(overrides, reason, tmp_path):
    ran = run_cli(*overrides, "data.standardize=true", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert re.search(rf"error: data.standardize=true needs a model that is linear in its parameters .*{reason}",
                     ran.stderr), ran.stderr
    assert "Traceback" not in ran.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 0


class Waves(torch.nn.Module):
    """y = a sin x + b cos x: linear in a and b, but sin(x / s) is no combination of sin x and cos x."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.ones(())), torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.a * torch.sin(x) + self.b * torch.cos(x)

    def design_matrix(self, x):
        return {"a": torch.sin(x), "b": torch.cos(x)}


@dataclass
class WavesConfig:
    pass


class WavesPlugin:
    @hookimpl
    def framework_components(self):
        return [Component("model", "waves", lambda config, *, data: Waves(), WavesConfig)]


def test_a_model_whose_functions_change_under_standardizing_is_refused(manager, compose_config, tmp_path):
    manager.register_plugin(WavesPlugin(), "acme_waves", "test")
    registry = build_registry(manager)
    store_configs(registry)
    cfg = compose_config(["+task=sine", "model=waves", "data.standardize=true", "trainer.device=cpu", "logger=[]"])
    with pytest.raises(ConfigError, match=r"data.standardize=true: the functions model 'waves' \(Waves\) can fit "
                                          r"are not the same for standardized features"):
        run_training(cfg, manager=manager, registry=registry, run_dir=tmp_path)


def test_the_wrapper_declares_the_standardized_design_matrix():
    x = torch.linspace(-3, 7, 11, dtype=torch.float64).unsqueeze(1)
    wrapped = standardize_inputs(Polynomial(["a", "b"], [0, 1], "randn").to(torch.float64), x)
    assert isinstance(wrapped, StandardizedInput)
    blocks = wrapped.design_matrix(x)
    z = (x - x.mean()) / x.std(correction=0)
    torch.testing.assert_close(blocks["standardized.b"], z)
    assert torch.equal(blocks["standardized.a"], torch.ones_like(x))
