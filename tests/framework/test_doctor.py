"""The conditioning doctor: its numbers against numpy on the design matrix and against the exact
Hessian, its bound against real runs on both sides of it, and that it leaves the run alone."""

from __future__ import annotations

import dataclasses
import logging
import math
import random

import numpy
import pytest
import torch

from framework.build import build_state
from framework.devices import resolve_device, resolve_dtype, seed_everything
from framework.doctor import diagnose, local_largest_eigenvalue, step_rule
from framework.errors import TrainingError
from framework.run import checked_trainer
from framework_plugins.sine_cubic_model import LegendreP3


@pytest.fixture
def built(compose_config, registry):
    """built(overrides) -> the BuiltRun a fit of these overrides starts from (on the CPU)."""

    def build(overrides: list[str]):
        cfg = compose_config(["trainer.device=cpu", "logger=[]", *overrides])
        trainer = checked_trainer(cfg)
        seed_everything(trainer.seed)
        return build_state(cfg, registry, trainer=trainer, device=resolve_device(trainer.device),
                           dtype=resolve_dtype(trainer.dtype)).run

    return build


def doctor_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith("doctor:")]


# --------------------------------------------------------------------------------------------
# The numbers
# --------------------------------------------------------------------------------------------

# task -> (overrides, the design matrix's columns as functions of x, by parameter name, 1/N or 1)
LEAST_SQUARES_TASKS = {
    "polyfit": (["+task=polyfit", "optimizer=sgd"], {"A": lambda x: x**2, "B": lambda x: x, "C": numpy.ones_like},
                "mean"),
    "sine": (["+task=sine"], {"a": numpy.ones_like, "b": lambda x: x, "c": lambda x: x**2, "d": lambda x: x**3},
             "sum"),
    "linear": (["+task=linear"], {"weight": lambda x: x, "bias": numpy.ones_like}, "mean"),
}


@pytest.mark.parametrize("task", sorted(LEAST_SQUARES_TASKS))
def test_condition_number_scales_and_bound_are_numpys_on_the_design_matrix(task, built):
    overrides, columns, reduction = LEAST_SQUARES_TASKS[task]
    run = built(overrides)
    x = run.data.features.double().numpy()[:, 0]
    design = numpy.stack([column(x) for column in columns.values()], axis=1)
    scale = 1 / len(x) if reduction == "mean" else 1.0
    hessian = 2 * scale * design.T @ design
    largest = numpy.linalg.eigvalsh(hessian)[-1]

    diagnosis = diagnose(run)

    # The model builds its columns in the run's float32 (x² rounded there), numpy in float64.
    close = 1e-6
    assert diagnosis.least_squares and diagnosis.curvature == "exact"
    assert diagnosis.condition_number == pytest.approx(numpy.linalg.cond(design), rel=close)
    assert diagnosis.largest_eigenvalue == pytest.approx(largest, rel=close)
    assert diagnosis.lr_bound == pytest.approx(2 / largest, rel=close)
    rms = numpy.sqrt(numpy.mean(design**2, axis=0))
    assert list(diagnosis.feature_scales) == list(columns)
    numpy.testing.assert_allclose(list(diagnosis.feature_scales.values()), rms, rtol=close)
    report = "\n".join(diagnosis.lines + diagnosis.warnings)
    assert f"condition number {numpy.linalg.cond(design):.3g}" in report
    assert f"2/L = {2 / largest:.3g}" in report
    # polyfit's x² and sine's x³ are 42× and 11.7× their constant's scale; linear's x only 2.7×.
    assert ("feature scales differ" in report) == (rms.max() / rms.min() >= 10)


def test_rank_deficient_problems_have_an_infinite_condition_number(built):
    diagnosis = diagnose(built(["+task=puzzle"]))
    assert diagnosis.condition_number == math.inf
    assert "rank deficient" in diagnosis.lines[0]


def sine_cubic_hessian(a, b, c, d, x, y) -> torch.Tensor:
    """The exact Hessian of legendre's SSE at (a, b, c, d), in float64, with P3 written out."""

    def loss(a, b, c, d):
        z = c + d * x
        return (a + b * 0.5 * (5 * z**3 - 3 * z) - y).pow(2).sum()

    start = tuple(torch.tensor(value, dtype=torch.float64) for value in (a, b, c, d))
    rows = torch.autograd.functional.hessian(loss, start)
    return torch.tensor([[float(entry) for entry in row] for row in rows], dtype=torch.float64)


# (whole Hessian or power iteration, dtype) -> relative precision: float32 rounding, or power
# iteration's stopping rule (the Rayleigh quotient changing by less than 1e-6).
PRECISION = {(32, "float32"): 1e-4, (32, "float64"): 1e-10, (0, "float32"): 1e-4, (0, "float64"): 1e-6}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("whole_up_to", [32, 0], ids=["whole-hessian", "power-iteration"])
def test_sine_cubic_local_estimate_is_the_exact_hessians_largest_eigenvalue(dtype, whole_up_to, built):
    tolerance = PRECISION[whole_up_to, dtype]
    run = built(["+task=legendre", f"trainer.dtype={dtype}"])
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=torch.float64)
    hessian = sine_cubic_hessian(0.0, -1.0, 0.0, 0.3, x, torch.sin(x))  # the preset's initial values
    largest = float(torch.linalg.eigvalsh(hessian)[-1])

    diagnosis = diagnose(run, whole_hessian_up_to=whole_up_to)

    assert not diagnosis.least_squares and diagnosis.curvature == "local"
    assert diagnosis.largest_eigenvalue == pytest.approx(largest, rel=tolerance)
    assert diagnosis.lr_bound == pytest.approx(2 / largest, rel=tolerance)
    assert any("local estimate" in line for line in diagnosis.lines)


@pytest.mark.parametrize("whole_up_to", [32, 0], ids=["whole-hessian", "power-iteration"])
def test_hessian_vector_products_find_the_least_squares_L(whole_up_to, built):
    run = built(["+task=sine", "trainer.dtype=float64"])
    largest, converged = local_largest_eigenvalue(run, whole_up_to=whole_up_to)
    assert converged and largest == pytest.approx(diagnose(run).largest_eigenvalue, rel=1e-6)


def test_an_unconverged_power_iteration_says_that_L_may_be_larger(built, monkeypatch):
    import framework.doctor

    monkeypatch.setattr(framework.doctor, "POWER_ITERATIONS", 1)
    diagnosis = diagnose(built(["+task=legendre"]), whole_hessian_up_to=0)
    assert not diagnosis.converged
    assert any("power iteration unconverged after 1 steps, L may be larger" in line for line in diagnosis.lines)


@pytest.mark.parametrize("form", ["terms", "matmul"])
def test_the_local_estimate_differentiates_each_polynomial_form_through_its_coefficients(form, built):
    # Huber with a delta beyond every residual is half the squared error: its Hessian is
    # X^T X / rows on the design matrix [x², x, 1]. The matmul form computes with the optimizer's
    # flat tensor in a training step; the doctor's derivatives are taken before any step.
    run = built(["+task=polyfit", "optimizer=sgd", f"model.form={form}", "loss=huber", "loss.delta=1e6",
                 "trainer.dtype=float64"])
    x = run.data.features.numpy()[:, 0]
    design = numpy.stack([x**2, x, numpy.ones_like(x)], axis=1)
    largest = numpy.linalg.eigvalsh(design.T @ design / len(x))[-1]

    diagnosis = diagnose(run)

    assert not diagnosis.least_squares and diagnosis.curvature == "local"
    assert diagnosis.largest_eigenvalue == pytest.approx(largest, rel=1e-9)


# --------------------------------------------------------------------------------------------
# The bound against real runs
# --------------------------------------------------------------------------------------------


def sine_bound() -> float:
    """2/L for the sine task from numpy: SSE on 2000 points of [-π, π], columns 1, x, x², x³."""
    x = numpy.linspace(-math.pi, math.pi, 2000)
    design = numpy.stack([numpy.ones_like(x), x, x**2, x**3], axis=1)
    return 2 / (2 * numpy.linalg.svd(design, compute_uv=False)[0] ** 2)


def test_the_issues_example_bound():
    assert sine_bound() == pytest.approx(3.56e-6, rel=1e-3)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_the_sine_bound_separates_converging_from_diverging_runs(factor, train, caplog):
    lr = factor * sine_bound()
    caplog.set_level(logging.INFO, logger="framework")
    overrides = ["+task=sine", f"optimizer.lr={float(lr)!r}", "logger=[]"]
    warnings = lambda: [r for r in doctor_records(caplog) if r.levelno == logging.WARNING]  # noqa: E731
    if factor < 1:
        result = train(overrides)
        assert result["status"] == "completed" and result["steps"] == 2000
        # sin x's best cubic on [-π, π] has an SSE of about 9; the zero function's is 1000.
        assert result["final_loss"] < 20
        assert warnings() == []
    else:
        with pytest.raises(TrainingError, match="diverged"):
            train(overrides)
        (warning,) = warnings()
        assert f"exceeds the stable bound for plain SGD, 2/L = {sine_bound():.3g}" in warning.getMessage()
        for remedy in ("data.standardize=true", "optimizer=lbfgs"):
            assert remedy in warning.getMessage()


def quadratic_sgd_ends_at(lr: float, curvature: float, steps: int, **options) -> float:
    """|θ| after torch's SGD on ½·curvature·θ² from θ = 1."""
    theta = torch.ones(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=lr, **options)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * theta.pow(2).sum()).backward()
        optimizer.step()
    return abs(float(theta.detach()))


@pytest.mark.parametrize("options", [
    {},
    {"momentum": 0.9},
    {"momentum": 0.5, "dampening": 0.5},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.5},
    {"momentum": 0.6, "nesterov": True, "weight_decay": 0.3},
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "plain")
def test_sgd_bounds_separate_torch_sgd_runs_on_a_quadratic(options):
    curvature = 4.0
    rule = step_rule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, **options))
    bound = rule.bound(curvature)
    assert quadratic_sgd_ends_at(0.95 * bound, curvature, 3000, **options) < 1e-3
    assert not quadratic_sgd_ends_at(1.05 * bound, curvature, 3000, **options) < 1e3


@pytest.mark.parametrize("optimizer", ["adam", "nadam", "rmsprop", "adagrad", "lbfgs"])
def test_optimizers_that_pick_their_steps_get_no_bound_but_the_conditioning(optimizer, built):
    diagnosis = diagnose(built(["+task=polyfit", f"optimizer={optimizer}", "optimizer.lr=10"]))
    assert diagnosis.step_rule is None and diagnosis.lr_bound is None and diagnosis.warnings == []
    assert diagnosis.condition_number == pytest.approx(61.2, rel=1e-2)  # as the sgd case above checks
    assert any("feature scales differ by 42×" in line for line in diagnosis.lines)


def test_minibatches_of_a_sum_report_the_full_batch_bound_without_a_warning(built):
    summed = diagnose(built(["+task=sine", "optimizer.lr=1e-4", "data.batch_size=100"]))
    assert summed.warnings == [] and any("full batch" in line for line in summed.lines)
    # A mean's minibatch Hessians average to the full one: the bound applies, and it warns.
    averaged = diagnose(built(["+task=polyfit", "optimizer=sgd", "optimizer.lr=1", "data.batch_size=5"]))
    assert len(averaged.warnings) == 1


def test_a_scheduler_does_not_change_the_rate_checked(built):
    run = built(["+task=sine", "optimizer.lr=1e-4", "scheduler=linear", "scheduler.start_factor=0.01"])
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)  # the scheduler's first rate
    assert diagnose(run).step_rule.lr == pytest.approx(1e-4)  # optimizer.lr, where it ramps to


# --------------------------------------------------------------------------------------------
# In a run
# --------------------------------------------------------------------------------------------


def test_the_report_is_logged_before_the_first_step_and_trainer_doctor_false_turns_it_off(train, caplog):
    caplog.set_level(logging.INFO, logger="framework")
    train(["+task=linear", "trainer.max_steps=2", "logger=[console]"])
    messages = [record.getMessage() for record in caplog.records]
    report = [index for index, message in enumerate(messages) if message.startswith("doctor:")]
    first_step = next(index for index, message in enumerate(messages) if message.startswith("step 1/"))
    assert len(report) == 2 and max(report) < first_step

    caplog.clear()
    train(["+task=linear", "trainer.max_steps=2", "trainer.doctor=false", "logger=[console]"])
    assert doctor_records(caplog) == [] and any(r.getMessage().startswith("step 1/") for r in caplog.records)


def test_a_resumed_run_is_not_diagnosed_again(train, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="framework")
    train(["+task=linear", "trainer.max_steps=3", "trainer.doctor=false"], run_dir=tmp_path, task="linear")
    # trainer.doctor may differ from the checkpoint's: it changes nothing in the training.
    train(["+task=linear", "trainer.max_steps=5", f"trainer.resume={tmp_path}"], run_dir=tmp_path, task="linear")
    assert doctor_records(caplog) == []


class DropoutLine(torch.nn.Module):
    """y = w · dropout(x): a forward that draws from torch's global generator."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, features):
        return self.w * torch.nn.functional.dropout(features, 0.5, training=True)


@pytest.mark.parametrize("task", ["sine", "legendre", "dropout"])
def test_the_doctor_changes_no_parameter_gradient_or_random_stream(task, built):
    run = built([f"+task={'legendre' if task == 'dropout' else task}"])
    if task == "dropout":  # a model whose forward draws random numbers
        model = DropoutLine()
        run = dataclasses.replace(run, model=model, trainable=dict(model.named_parameters()))
        drawn = torch.get_rng_state()
        model(run.data.features)
        assert not torch.equal(torch.get_rng_state(), drawn)
    before = {name: parameter.detach().clone() for name, parameter in run.trainable.items()}
    # None, or zeros shared with a flat optimizer tensor (framework.flat_parameters)
    gradients = {name: None if parameter.grad is None else parameter.grad.clone()
                 for name, parameter in run.trainable.items()}
    streams = (torch.get_rng_state(), random.getstate(), numpy.random.get_state()[1].copy())

    diagnosis = diagnose(run)

    assert diagnosis.lines
    for name, parameter in run.trainable.items():
        assert torch.equal(parameter, before[name]), name
        assert (parameter.grad is None if gradients[name] is None
                else torch.equal(parameter.grad, gradients[name])), name
    assert torch.equal(torch.get_rng_state(), streams[0]) and random.getstate() == streams[1]
    assert numpy.array_equal(numpy.random.get_state()[1], streams[2])


class OnceDifferentiableP3(LegendreP3):
    """P3 whose backward refuses to be differentiated: double backward loses the path through it."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * z**2 - 1)


class DetachingP3(OnceDifferentiableP3):
    """P3 whose backward detaches its input: right first derivatives, silently wrong second ones."""

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * z.detach() ** 2 - 1)


@pytest.mark.parametrize("function", [OnceDifferentiableP3, DetachingP3], ids=lambda f: f.__name__)
def test_a_function_without_second_derivatives_is_reported_not_trusted(function, built, monkeypatch):
    from framework_plugins import sine_cubic_model

    monkeypatch.setattr(sine_cubic_model, "legendre_p3", function.apply)  # what the model calls
    run = built(["+task=legendre", "optimizer.lr=1"])
    before = {name: parameter.detach().clone() for name, parameter in run.trainable.items()}
    diagnosis = diagnose(run)
    assert diagnosis.lr_bound is None and diagnosis.warnings == []
    (line,) = [line for line in diagnosis.lines if line.startswith("doctor: cannot estimate L")]
    assert "finite differences" in line or "differentiate" in line
    # The finite differences moved the parameters and put them back, bit for bit.
    assert all(torch.equal(parameter, before[name]) for name, parameter in run.trainable.items())
