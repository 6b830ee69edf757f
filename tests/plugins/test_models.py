"""The built-in models: parameter names, initial draws, forward formulas, gradcheck."""

from __future__ import annotations

import pytest
import torch

from framework import ConfigError, Dataset
from framework.gradcheck import check_all, check_function
from framework_plugins.linear_model import Linear, LinearConfig, build_linear
from framework_plugins.polynomial_model import Polynomial, PolynomialConfig, build_polynomial
from framework_plugins.sine_cubic_model import LegendreP3, SineCubicConfig, build_sine_cubic, legendre_p3

ONE_COLUMN = Dataset(torch.zeros(5, 1), torch.zeros(5, 1))


def test_polynomial_descending_names_and_draws_coefficients_in_term_order():
    torch.manual_seed(3)
    model = build_polynomial(PolynomialConfig(degree=2), data=ONE_COLUMN)
    torch.manual_seed(3)
    A, B, C = (torch.randn(()) for _ in range(3))
    assert [name for name, _ in model.named_parameters()] == ["A", "B", "C"]
    x = torch.linspace(-2, 2, 7)[:, None]
    assert torch.equal(model(x), A * x**2 + B * x + C)


def test_polynomial_in_matmul_form_is_the_polyfit_tutorials_product():
    torch.manual_seed(3)
    model = build_polynomial(PolynomialConfig(degree=2, form="matmul"), data=ONE_COLUMN)
    torch.manual_seed(3)
    A, B, C = (torch.randn(()) for _ in range(3))
    x = torch.linspace(-2, 2, 7)[:, None]
    assert torch.equal(model(x), torch.cat([x**2, x, torch.ones_like(x)], dim=1) @ torch.stack([A, B, C]).view(3, 1))
    assert model(x[:, 0]).shape == (7,)  # a column of x in, a column of predictions out, as terms gives
    with pytest.raises(ConfigError, match=r"model.form='sum'; use one of terms, matmul"):
        build_polynomial(PolynomialConfig(form="sum"), data=ONE_COLUMN)


@pytest.mark.parametrize("x", [torch.tensor(2.0), torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None],
                               torch.arange(-2, 3)[:, None]], ids=["0-dim", "float64", "int64"])
def test_polynomial_forms_take_the_same_inputs_and_give_the_same_shape_and_dtype(x):
    # What A·x² + B·x + C in plain torch gives (type promotion included), whichever form computes it.
    torch.manual_seed(3)
    A, B, C = (torch.randn(()) for _ in range(3))
    expected = A * x**2 + B * x + C
    for form in ("terms", "matmul"):
        torch.manual_seed(3)
        predictions = build_polynomial(PolynomialConfig(degree=2, form=form), data=ONE_COLUMN)(x)
        assert (predictions.shape, predictions.dtype) == (expected.shape, expected.dtype), form
        torch.testing.assert_close(predictions, expected, msg=form)


@pytest.mark.parametrize("form", ["terms", "matmul"])
def test_a_parametrized_coefficient_is_used_through_its_parametrization(form):
    from torch.nn.utils import parametrize

    class Exp(torch.nn.Module):
        def forward(self, value):
            return value.exp()

    model = build_polynomial(PolynomialConfig(degree=2, form=form, init="zeros"), data=ONE_COLUMN)
    parametrize.register_parametrization(model, "C", Exp())  # C = exp(0) = 1
    x = torch.linspace(-2, 2, 5)[:, None]
    assert torch.equal(model(x), torch.ones_like(x))
    model(x).sum().backward()
    assert model.parametrizations.C.original.grad == 5.0


def test_polynomial_ascending_matches_the_tutorial_expression():
    model = build_polynomial(PolynomialConfig(degree=3, order="ascending", init="zeros"), data=ONE_COLUMN)
    assert [name for name, _ in model.named_parameters()] == ["a", "b", "c", "d"]
    with torch.no_grad():
        for value, p in zip((0.5, -1.0, 0.25, 2.0), model.parameters()):
            p.fill_(value)
    x = torch.linspace(-3, 3, 11)[:, None]
    assert torch.equal(model(x), 0.5 + -1.0 * x + 0.25 * x**2 + 2.0 * x**3)


def test_polynomial_refuses_bad_names_and_several_columns():
    with pytest.raises(ConfigError, match="3 different names"):
        build_polynomial(PolynomialConfig(names=["A", "A", "B"]), data=ONE_COLUMN)
    with pytest.raises(ConfigError, match="use model=linear"):
        build_polynomial(PolynomialConfig(), data=Dataset(torch.zeros(4, 2), torch.zeros(4, 1)))
    with pytest.raises(ConfigError, match="not an initialisation"):
        build_polynomial(PolynomialConfig(init="ones"), data=ONE_COLUMN)


def test_linear_infers_sizes_and_default_init_is_torch_nn_linear_s():
    data = Dataset(torch.zeros(3, 2), torch.zeros(3, 1))
    torch.manual_seed(1)
    ours = build_linear(LinearConfig(), data=data)
    torch.manual_seed(1)
    theirs = torch.nn.Linear(2, 1)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)


def test_linear_randn_draws_weight_then_bias_and_nothing_else():
    data = Dataset(torch.zeros(3, 2), torch.zeros(3, 1))
    torch.manual_seed(1)
    model = build_linear(LinearConfig(init="randn"), data=data)
    after = torch.randn(())
    torch.manual_seed(1)
    weight, bias = torch.randn(1, 2), torch.randn(1)
    assert torch.equal(model.weight, weight) and torch.equal(model.bias, bias)
    assert torch.equal(after, torch.randn(()))  # the RNG stream is where the plain loop has it


def test_linear_without_bias_has_only_a_weight():
    model = Linear(4, 1, bias=False, init="uniform")
    assert [name for name, _ in model.named_parameters()] == ["weight"]
    assert ((model.weight >= 0) & (model.weight < 1)).all()


def test_sine_cubic_computes_a_plus_b_p3_of_c_plus_dx():
    model = build_sine_cubic(SineCubicConfig(init=[0.1, -1.0, 0.2, 0.3]), data=ONE_COLUMN)
    x = torch.linspace(-3, 3, 9)[:, None]
    z = 0.2 + 0.3 * x
    expected = 0.1 + -1.0 * (0.5 * (5 * z**3 - 3 * z))
    assert torch.allclose(model(x), expected)


def values_and_gradients(apply, z):
    z = z.detach().requires_grad_()
    out = apply(z)
    (grad,) = torch.autograd.grad(out, z, torch.linspace(0.5, 2.0, z.numel()))
    return out.detach(), grad


def test_the_models_eager_legendre_p3_skips_torchs_python_apply_and_equals_it_bitwise(monkeypatch):
    """The model calls the C++ apply directly outside torch.func (a legendre step's Python
    preamble, ≈ 25 µs): the same values and gradients, bit for bit, as the public apply."""
    z = torch.linspace(-2.0, 2.0, 101)
    expected = values_and_gradients(LegendreP3.apply, z)
    public_calls = []
    public_apply = LegendreP3.apply
    monkeypatch.setattr(LegendreP3, "apply", lambda *args: public_calls.append(args) or public_apply(*args))

    got = values_and_gradients(legendre_p3, z)

    assert public_calls == []
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_a_tensor_that_escaped_a_finished_transform_is_unwrapped_as_the_public_apply_does():
    escaped = []
    torch.func.grad(lambda z: (escaped.append(z * 1.0), (z**2).sum())[1])(torch.tensor([0.3, 0.7]))
    (z,) = escaped  # a dead wrapper: plain ops on it build no graph
    public, eager = LegendreP3.apply(z), legendre_p3(z)
    assert torch.equal(eager, public)
    assert (eager.grad_fn, eager.requires_grad) == (public.grad_fn, public.requires_grad) == (None, False)


def test_the_models_legendre_p3_takes_the_public_apply_under_vmap_and_grad(monkeypatch):
    zs = torch.linspace(-2.0, 2.0, 12).reshape(3, 4)
    public_calls = []
    public_apply = LegendreP3.apply
    monkeypatch.setattr(LegendreP3, "apply", lambda *args: public_calls.append(args) or public_apply(*args))

    values = torch.func.vmap(legendre_p3)(zs)
    slopes = torch.func.vmap(torch.func.grad(lambda z: legendre_p3(z).sum()))(zs)

    assert len(public_calls) == 2
    assert torch.equal(values, public_apply(zs))
    assert torch.equal(slopes, 1.5 * (5 * zs**2 - 1))


def test_the_sine_cubic_model_compiles_whole_and_computes_what_it_does_eagerly():
    model = build_sine_cubic(SineCubicConfig(init=[0.1, -1.0, 0.2, 0.3]), data=ONE_COLUMN)
    x = torch.linspace(-3, 3, 9)[:, None]
    eager = model(x)
    eager.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    compiled = torch.compile(model, backend="eager", fullgraph=True)(x)  # fails on a graph break
    compiled.sum().backward()

    assert torch.equal(compiled, eager)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), eager_grads))


def test_every_contributed_autograd_function_passes_gradcheck(manager):
    assert "legendre_p3" in check_all(manager)


class TutorialBugP3(torch.autograd.Function):
    """The tutorial's mistake: backward's constants do not match forward."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return 0.5 * (5 * z**3 - 3 * z)

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * z**2 - 3)


def test_gradcheck_helper_catches_a_backward_that_does_not_match_forward():
    z = torch.linspace(-1, 1, 7, dtype=torch.float64, requires_grad=True)
    check_function(LegendreP3, z)
    with pytest.raises(AssertionError, match="TutorialBugP3.backward does not match"):
        check_function(TutorialBugP3, z)


def test_gradcheck_command_passes(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "framework.gradcheck"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "legendre_p3" in done.stdout


def test_polynomial_powers_are_kept_only_while_the_features_are_unchanged():
    model = Polynomial(["A", "B", "C"], [2, 1, 0], "randn")
    x = torch.randn(20, 1)

    def fresh(features):  # computed afresh, the way the model's terms are written
        return model.A * features**2 + model.B * features + model.C

    assert torch.equal(model(x), fresh(x))
    assert model.powers_of(x) is model.powers_of(x)  # the same x: kept
    x.mul_(2)  # changed in place: computed again
    assert torch.equal(model(x), fresh(x))
    other = torch.randn(5, 1)
    assert torch.equal(model(other), fresh(other))
    x_with_graph = torch.randn(4, 1, requires_grad=True)  # a derivative in x goes through the powers
    (grad,) = torch.autograd.grad(model(x_with_graph).sum(), x_with_graph)
    assert torch.allclose(grad, 2 * model.A.detach() * x_with_graph.detach() + model.B.detach())
