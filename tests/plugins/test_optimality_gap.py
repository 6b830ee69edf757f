"""The optimality gap (plugin ``optimality_gap``): ``train/optimality_gap`` at each logging step and
result.json's ``optimal_loss`` / ``optimality_gap``, against plain PyTorch loops written here and
numpy's lstsq; runs that are no least-squares problem get none, and a model whose declared design
matrix is wrong fails the run naming the model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy
import pytest
import torch

from framework import Component, hookimpl
from framework.errors import PluginError
from framework.plugin_manager import build_registry
from framework.run import run_training
from framework.schema import store_configs
from framework_plugins.linear_model import Linear
from tests.framework.compare import events
from tests.polyfit import tutorial_quadratic

SEED = 0  # trainer.seed's default
GAP = "train/optimality_gap"
NOISE = 2.0  # polyfit's samples get noise, so that the optimum is no exact fit (loss > 0)


def plain_polyfit(steps: int, frozen: tuple[str, ...] = (), batch_size: int | None = None):
    """The polyfit tutorial loop (seed, x, y with noise, then A, B, C), recording every step's
    loss and the loss on all the data after the step. Returns (design, target, frozen values, losses)."""
    torch.manual_seed(SEED)
    x = torch.randn(20) * 5
    y = (x**2 + 2 * x + 3 + torch.randn(20) * NOISE)[:, None]
    coefficients = {name: torch.randn((), requires_grad=name not in frozen) for name in "ABC"}
    A, B, C = coefficients.values()
    optimizer = torch.optim.NAdam([p for name, p in coefficients.items() if name not in frozen], lr=0.01)
    losses = []
    for step in range(steps):
        rows = slice(None) if batch_size is None else slice(step % 3 * batch_size, (step % 3 + 1) * batch_size)
        loss = torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            after = torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x), y)
        losses.append((loss.item(), after.item()))
    # The model's columns as it computes them: x**2 in float32.
    columns = {"A": (x**2).double(), "B": x.double(), "C": torch.ones(20, dtype=torch.float64)}
    return columns, y[:, 0].double(), {name: coefficients[name].detach().double() for name in frozen}, losses


def plain_linear(steps: int):
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [10.0]])  # not on a line: the optimum is > 0
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((loss.item(), None))
    columns = {"weight": x[:, 0].double(), "bias": torch.ones(4, dtype=torch.float64)}
    return columns, y[:, 0].double(), {}, losses


def numpy_optimum(columns, target, frozen) -> float:
    """The least mean squared error over the trainable columns, frozen ones fitted around (numpy)."""
    rest = target.numpy() - sum((columns[name] * value).numpy() for name, value in frozen.items())
    design = numpy.stack([column.numpy() for name, column in columns.items() if name not in frozen], axis=1)
    theta = numpy.linalg.lstsq(design, rest, rcond=None)[0]
    residual = design @ theta - rest
    return float(residual @ residual) / len(rest)


# Each case: overrides, the plain loop's results, and whether the gap is of the step's own loss
# (full batch) or of the loss on all the data after the step (minibatches).
CASES = {
    "polyfit": (["+task=polyfit", f"data.noise={NOISE}", "trainer.max_steps=300"],
                lambda: plain_polyfit(300), "step"),
    "polyfit, B frozen": (["+task=polyfit", f"data.noise={NOISE}", "trainer.max_steps=300", "trainer.freeze=[B]"],
                          lambda: plain_polyfit(300, frozen=("B",)), "step"),
    "polyfit, minibatches of 8": (["+task=polyfit", f"data.noise={NOISE}", "trainer.max_steps=300",
                                   "data.batch_size=8"],
                                  lambda: plain_polyfit(300, batch_size=8), "after"),
    "linear": (["+task=linear", "data.y=[3,5,7,10]", "trainer.max_steps=200"], lambda: plain_linear(200), "step"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_logged_gap_is_the_plain_loops_loss_less_numpys_optimum(case, train, recorder, tmp_path):
    overrides, plain, which = CASES[case]
    result = train([*overrides, "trainer.log_every=25", "logger=[]"], run_dir=tmp_path)
    columns, target, frozen, losses = plain()
    optimum = numpy_optimum(columns, target, frozen)
    assert optimum > 0.05  # no exact fit: a gap of 0 would mean the fit is exact, not that it is optimal

    logged = recorder.logged(GAP)
    assert sorted(logged) == [1, *range(25, len(losses) + 1, 25)]
    for step, gap in logged.items():
        step_loss, loss_after = losses[step - 1]
        expected = (step_loss if which == "step" else loss_after) - optimum
        assert gap == pytest.approx(expected, rel=1e-9, abs=1e-9), step
    if which == "step":  # the loop's own loss, less a constant
        assert all(recorder.logged("train/loss")[step] - gap == pytest.approx(optimum, rel=1e-9)
                   for step, gap in logged.items())

    assert result["optimal_loss"] == pytest.approx(optimum, rel=1e-9)
    assert result["optimality_gap"] == result["final_loss"] - result["optimal_loss"]
    assert result["optimality_gap"] > 0
    written = json.loads((tmp_path / "result.json").read_text())
    assert (written["optimal_loss"], written["optimality_gap"]) == (result["optimal_loss"], result["optimality_gap"])


def test_a_fit_to_convergence_closes_the_gap(train, tmp_path):
    result = train(["+task=polyfit", f"data.noise={NOISE}", "optimizer=lbfgs", "trainer.max_steps=20",
                    "trainer.dtype=float64", "logger=[]"], run_dir=tmp_path)
    assert result["optimal_loss"] > 0.1
    assert abs(result["optimality_gap"]) <= 1e-9 * result["optimal_loss"]


def test_tensorboard_shows_the_gap_as_a_scalar(train, recorder, tmp_path):
    train(["+task=polyfit", "trainer.max_steps=20", "trainer.log_every=5", "logger=[tensorboard]",
           "logger.tensorboard.figures=false"], run_dir=tmp_path)
    points = [(event.step, event.value) for event in events(tmp_path).Scalars(GAP)]
    logged = recorder.logged(GAP)
    assert [step for step, _ in points] == sorted(logged) == [1, 5, 10, 15, 20]
    assert all(value == pytest.approx(logged[step], rel=1e-6) for step, value in points)


def test_the_console_prints_the_optimum_and_the_gap(train, tmp_path, caplog):
    caplog.set_level("INFO", logger="framework")
    result = train(["+task=linear", "trainer.max_steps=10", "logger=[console]"], run_dir=tmp_path)
    assert f"least-squares optimum {result['optimal_loss']:.6g}; optimality gap {result['optimality_gap']:.6g}" \
        in caplog.text


class PluginNames:
    """Records which plugins take part in the fit, at its start."""

    def __init__(self, manager) -> None:
        self.manager, self.names = manager, []

    @hookimpl
    def framework_fit_start(self, state):
        self.names = [name for name, _ in self.manager.list_name_plugin()]


@pytest.mark.parametrize("overrides", [
    ["+task=legendre"],  # sine_cubic declares no design matrix
    ["+task=polyfit", "loss=l1"],  # not a squared loss
    ["+task=linear", "data.y=[[3,1],[5,1],[7,1],[9,1]]"],  # two targets: two problems
], ids=["no design matrix", "l1 loss", "two targets"])
def test_a_run_that_is_no_least_squares_problem_has_no_gap_and_no_plugin_object(overrides, manager, recorder,
                                                                                 train, tmp_path):
    names = PluginNames(manager)
    manager.register_plugin(names, "names", "test")
    result = train([*overrides, "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert result["status"] == "completed"
    assert not any(name.startswith("optimality_gap.") for name in names.names), names.names
    assert all(GAP not in call[2] for call in recorder.calls if call[0] == "log")
    assert (result["optimal_loss"], result["optimality_gap"]) == (None, None)


def test_a_least_squares_run_gets_the_plugin_object_for_its_fit_only(manager, train, tmp_path):
    names = PluginNames(manager)
    manager.register_plugin(names, "names", "test")
    train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert "optimality_gap.OptimalityGap" in names.names
    assert manager.get_plugin("optimality_gap.OptimalityGap") is None


def test_frozen_parameters_are_fitted_around_at_the_values_the_fit_starts_from(train, tmp_path):
    # trainer.init_from loads B after the build: the optimum is over A and C around that B.
    first = train(["+task=polyfit", f"data.noise={NOISE}", "trainer.max_steps=50", "logger=[]"],
                  run_dir=tmp_path / "first")
    result = train(["+task=polyfit", f"data.noise={NOISE}", "trainer.max_steps=5", "trainer.freeze=[B]",
                    f"trainer.init_from={tmp_path / 'first'}", "logger=[]"], run_dir=tmp_path / "second")
    columns, target, _, _ = plain_polyfit(1)
    optimum = numpy_optimum(columns, target, {"B": torch.tensor(first["params"]["B"], dtype=torch.float64)})
    assert result["params"]["B"] == first["params"]["B"]
    assert result["optimal_loss"] == pytest.approx(optimum, rel=1e-9)


class WrongLine(Linear):
    """A model whose declared design matrix does not match its forward (twice the weight's columns)."""

    def design_matrix(self, features):
        return {"weight": 2 * features, "bias": torch.ones_like(features[:, :1])}


@dataclass
class WrongLineConfig:
    pass


class WrongLinePlugin:
    @hookimpl
    def framework_components(self):
        return [Component("model", "wrong_line", lambda config, *, data: WrongLine(1, 1, True, "zeros"),
                          WrongLineConfig)]


def test_a_model_whose_declared_design_matrix_is_wrong_fails_the_run_naming_it(manager, compose_config, tmp_path):
    manager.register_plugin(WrongLinePlugin(), "acme_lines", "test")
    registry = build_registry(manager)
    store_configs(registry)
    cfg = compose_config(["+task=linear", "model=wrong_line", "trainer.device=cpu", "logger=[]"])
    with pytest.raises(PluginError, match=r"the design_matrix of model 'wrong_line' \(WrongLine\) does not "
                                          r"reproduce its forward"):
        run_training(cfg, manager=manager, registry=registry, run_dir=tmp_path)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "failed" and "'wrong_line'" in written["error"]
