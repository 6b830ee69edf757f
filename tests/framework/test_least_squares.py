"""The least-squares problem of a model linear in its parameters: its optimum against numpy's
lstsq, its Hessian's largest eigenvalue against autograd's Hessian, frozen parameters, and
declarations that do not match the model's forward."""

from __future__ import annotations

import numpy
import pytest
import torch

from framework.errors import PluginError
from framework.least_squares import least_squares_problem
from framework_plugins.linear_model import Linear
from framework_plugins.polynomial_model import Polynomial

LOSSES = {"mse": torch.nn.functional.mse_loss, "sse": lambda p, t: (p - t).pow(2).sum()}


def random_linear(rows: int, columns: int, seed: int, bias: bool = True):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, columns, generator=generator, dtype=torch.float64) * torch.logspace(0, 2, columns, dtype=torch.float64)
    targets = torch.randn(rows, 1, generator=generator, dtype=torch.float64)
    model = Linear(columns, 1, bias, "randn").to(torch.float64)
    return model, features, targets


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("loss_name", ["mse", "sse"])
def test_the_optimum_is_numpys_lstsq_on_random_problems(seed, loss_name):
    rows, columns = 30 + seed * 7, 1 + seed
    model, features, targets = random_linear(rows, columns, seed)
    problem = least_squares_problem(model, loss_name, features, targets, dict(model.named_parameters()))
    theta, optimal_loss = problem.optimum()

    design = numpy.hstack([features.numpy(), numpy.ones((rows, 1))])
    expected, residuals, _, _ = numpy.linalg.lstsq(design, targets.numpy()[:, 0], rcond=None)
    numpy.testing.assert_allclose(theta.numpy(), expected, rtol=1e-9, atol=1e-12)
    scale = 1 / rows if loss_name == "mse" else 1
    assert optimal_loss == pytest.approx(scale * float(residuals[0]), rel=1e-9)
    # The optimum is the model's loss at those parameters, computed the model's way.
    with torch.no_grad():
        for name, value in problem.optimal_parameters().items():
            getattr(model, name).copy_(value)
        assert float(LOSSES[loss_name](model(features), targets)) == pytest.approx(optimal_loss, rel=1e-9)


def test_a_rank_deficient_system_gets_an_exact_solution():
    # The puzzle: A+B=9, C-D=1, A+C=8, B-D=2 has rank 3 and infinitely many exact solutions.
    coefficients = torch.tensor([[1., 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
    rhs = torch.tensor([[9.], [1], [8], [2]], dtype=torch.float64)
    model = Linear(4, 1, False, "uniform").to(torch.float64)
    problem = least_squares_problem(model, "sse", coefficients, rhs, dict(model.named_parameters()))
    theta, optimal_loss = problem.optimum()
    assert optimal_loss < 1e-20
    assert torch.allclose(coefficients @ theta, rhs[:, 0])
    assert problem.condition_number() == float("inf")


def test_frozen_parameters_are_fitted_around():
    x = torch.linspace(-2, 3, 25, dtype=torch.float64).unsqueeze(1)
    y = 0.5 * x**2 - x + 4 + 0.1 * torch.sin(7 * x)
    model = Polynomial(["A", "B", "C"], [2, 1, 0], "randn").to(torch.float64)
    trainable = {"A": model.A, "C": model.C}  # B frozen at its drawn value
    problem = least_squares_problem(model, "mse", x, y, trainable)
    theta, optimal_loss = problem.optimum()
    design = numpy.hstack([(x**2).numpy(), numpy.ones_like(x.numpy())])
    expected = numpy.linalg.lstsq(design, (y - model.B.detach() * x).numpy()[:, 0], rcond=None)[0]
    numpy.testing.assert_allclose(theta.numpy(), expected, rtol=1e-9)
    assert [name for name, _ in problem.blocks] == ["A", "C"]
    assert optimal_loss >= least_squares_problem(model, "mse", x, y, dict(model.named_parameters())).optimum()[1]


def test_the_hessians_largest_eigenvalue_is_autograds():
    x = torch.linspace(-torch.pi, torch.pi, 200, dtype=torch.float64).unsqueeze(1)
    model = Polynomial(["a", "b", "c", "d"], [0, 1, 2, 3], "randn").to(torch.float64)
    problem = least_squares_problem(model, "sse", x, torch.sin(x), dict(model.named_parameters()))

    def loss_of(a, b, c, d):
        return (a + b * x + c * x**2 + d * x**3 - torch.sin(x)).pow(2).sum()

    start = tuple(p.detach() for p in model.parameters())
    hessian = torch.tensor([[float(h) for h in row] for row in torch.autograd.functional.hessian(loss_of, start)],
                           dtype=torch.float64)
    assert problem.largest_hessian_eigenvalue() == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-10)
    assert problem.condition_number() == pytest.approx(numpy.linalg.cond(problem.design.numpy()), rel=1e-8)


def test_not_a_least_squares_problem():
    model, features, targets = random_linear(10, 2, 0)
    parameters = dict(model.named_parameters())
    assert least_squares_problem(model, "l1", features, targets, parameters) is None
    assert least_squares_problem(model, "mse", features, torch.randn(10, 2, dtype=torch.float64), parameters) is None
    two_outputs = Linear(2, 2, True, "randn").to(torch.float64)
    assert least_squares_problem(two_outputs, "mse", features, targets, dict(two_outputs.named_parameters())) is None


class WrongLinear(Linear):
    """Declares twice its weight's columns: a design matrix that does not match its forward."""

    def design_matrix(self, features):
        return {"weight": 2 * features, "bias": torch.ones_like(features[:, :1])}


# At zeros (where the linear task starts) a wrong declaration agrees with the forward: it is
# checked at other parameter values, and the model's own are left as they were.
@pytest.mark.parametrize("init", ["randn", "zeros"])
def test_a_declaration_that_does_not_match_the_forward_is_refused_whatever_the_parameters(init):
    model = WrongLinear(3, 1, True, init).to(torch.float64)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    features, targets = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    with pytest.raises(PluginError, match=r"the design_matrix of model 'wrong' \(WrongLinear\) does not reproduce"):
        least_squares_problem(model, "mse", features, targets, dict(model.named_parameters()), "wrong")
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_a_failing_or_misshapen_declaration_is_the_models_plugin_error():
    class Failing(Linear):
        def design_matrix(self, features):
            raise RuntimeError("no columns today")

    class Misshapen(Linear):
        def design_matrix(self, features):
            return {"weight": features[:, :2], "bias": torch.ones_like(features[:, :1])}

    features, targets = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    failing = Failing(3, 1, True, "randn").to(torch.float64)
    with pytest.raises(PluginError, match=r"the design_matrix of model 'acme' \(Failing\) failed: RuntimeError: no columns"):
        least_squares_problem(failing, "sse", features, targets, dict(failing.named_parameters()), "acme")
    misshapen = Misshapen(3, 1, True, "randn").to(torch.float64)
    with pytest.raises(PluginError, match=r"blocks of the wrong shape for 8 rows: weight \(8, 2\)"):
        least_squares_problem(misshapen, "sse", features, targets, dict(misshapen.named_parameters()))
