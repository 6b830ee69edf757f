"""Each of the six reference tasks (tasks.md) gives, on the CPU, exactly the parameters of the
plain PyTorch loop written the tutorial way, from the same seed: compared with torch.equal.

The plain loops below are independent of the framework: they draw data and initial values with
torch directly, in the order the task's documentation gives (seed 0, then data, then parameters).
"""

from __future__ import annotations

import math

import pytest
import torch

SEED = 0  # trainer.seed's default


def plain_polyfit(steps: int = 1000):
    # The tutorial's form: features [x², x, 1] and one (3, 1) weight, whose rows are A, B, C.
    torch.manual_seed(SEED)
    x = torch.randn(20) * 5
    y = (x**2 + 2 * x + 3).unsqueeze(1)
    features = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
    weight = torch.randn(3, 1, requires_grad=True)
    optimizer = torch.optim.NAdam([weight], lr=0.01)
    loss_fn = torch.nn.MSELoss()
    for _ in range(steps):
        loss = loss_fn(features @ weight, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    A, B, C = weight.detach()[:, 0]
    return {"A": A, "B": B, "C": C}


def plain_polyfit_terms():
    # The same model as a sum of terms (model=polynomial's default form): A·x² + B·x + C.
    torch.manual_seed(SEED)
    x = torch.randn(20) * 5
    y = x**2 + 2 * x + 3
    A, B, C = (torch.randn((), requires_grad=True) for _ in range(3))
    optimizer = torch.optim.NAdam([A, B, C], lr=0.01)
    loss_fn = torch.nn.MSELoss()
    for _ in range(1000):
        loss = loss_fn(A * x**2 + B * x + C, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"A": A, "B": B, "C": C}


def plain_linear(steps: int = 200):
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]])
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"weight": model.weight, "bias": model.bias}


def plain_linear2d(steps: int = 100):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([[2.0], [4.0], [6.0]])
    model = torch.nn.Linear(2, 1)
    torch.manual_seed(SEED)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 2))
        model.bias.copy_(torch.randn(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = torch.nn.MSELoss()(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"weight": model.weight, "bias": model.bias}


def plain_puzzle(steps: int = 2000):
    # A+B=9, C-D=1, A+C=8, B-D=2
    M = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]])
    rhs = torch.tensor([9.0, 1, 8, 2])
    torch.manual_seed(SEED)
    params = torch.rand(4, requires_grad=True)
    optimizer = torch.optim.NAdam([params], lr=0.01)
    for _ in range(steps):
        loss = ((M @ params - rhs) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"weight": params.view(1, 4)}


def plain_sine(steps: int = 2000):
    torch.manual_seed(SEED)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    a, b, c, d = (torch.randn((), requires_grad=True) for _ in range(4))
    optimizer = torch.optim.SGD([a, b, c, d], lr=1e-6)
    for _ in range(steps):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"a": a, "b": b, "c": c, "d": d}


class TutorialP3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input**3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input**2 - 1)


def legendre_start():
    """The tutorial's data and initial values: x, y and the coefficients (a, b, c, d)."""
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    a = torch.full((), 0.0, requires_grad=True)
    b = torch.full((), -1.0, requires_grad=True)
    c = torch.full((), 0.0, requires_grad=True)
    d = torch.full((), 0.3, requires_grad=True)
    return x, y, (a, b, c, d)


def plain_legendre(manual_update: bool = False, *, steps: int = 2000):
    x, y, (a, b, c, d) = legendre_start()
    lr = 5e-6
    optimizer = torch.optim.SGD([a, b, c, d], lr=lr)
    for _ in range(steps):
        y_pred = a + b * TutorialP3.apply(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        if manual_update:  # the tutorial's hand-written update
            with torch.no_grad():
                for p in (a, b, c, d):
                    p -= lr * p.grad
        else:
            optimizer.step()
    return {"a": a, "b": b, "c": c, "d": d}


PLAIN_LOOPS = {
    "polyfit": plain_polyfit,
    "linear": plain_linear,
    "linear2d": plain_linear2d,
    "puzzle": plain_puzzle,
    "sine": plain_sine,
    "legendre": plain_legendre,
}


@pytest.mark.parametrize("task", sorted(PLAIN_LOOPS))
def test_task_matches_plain_loop_exactly(task, train, recorder, tmp_path):
    result = train([f"+task={task}", "trainer.device=cpu"], run_dir=tmp_path, task=task)
    expected = PLAIN_LOOPS[task]()

    assert result["status"] == "completed"
    assert set(recorder.final) == set(expected)
    for name, value in expected.items():
        ours = recorder.final[name]
        assert ours.shape == value.shape, name
        assert torch.equal(ours, value.detach()), f"{task}: {name} {ours} != {value}"
    # The parameters moved: the comparison is not between two untouched initialisations.
    assert any(not torch.equal(recorder.initial[n], recorder.final[n]) for n in expected)


@pytest.mark.parametrize("form, plain", [("matmul", plain_polyfit), ("terms", plain_polyfit_terms)])
def test_each_polynomial_form_is_bit_for_bit_its_plain_loop(form, plain, train, recorder, tmp_path):
    # polyfit's preset picks matmul; model=polynomial's default is terms. Both are A·x² + B·x + C
    # and round differently, so each must be its own tutorial's, not merely close to the other.
    result = train(["+task=polyfit", "model=polynomial", f"model.form={form}"], run_dir=tmp_path)
    expected = plain()
    assert result["status"] == "completed"
    for name, value in expected.items():
        assert torch.equal(recorder.final[name], value.detach()), f"{form}: {name}"
    other = plain_polyfit_terms() if form == "matmul" else plain_polyfit()
    assert any(not torch.equal(recorder.final[n], other[n].detach()) for n in expected)


def test_puzzle_solves_the_equations(train):
    result = train(["+task=puzzle"])
    A, B, C, D = result["params"]["weight"][0]
    for residual in (A + B - 9, C - D - 1, A + C - 8, B - D - 2):
        assert abs(residual) < 1e-3


def test_polyfit_with_lbfgs_recovers_the_polynomial(train):
    result = train(["+task=polyfit", "optimizer=lbfgs", "optimizer.lr=1", "trainer.max_steps=20"])
    params = result["params"]
    assert params["A"] == pytest.approx(1.0, abs=1e-3)
    assert params["B"] == pytest.approx(2.0, abs=1e-3)
    assert params["C"] == pytest.approx(3.0, abs=1e-2)


def test_manual_no_grad_update_equals_sgd_up_to_rounding():
    """The tutorials say `p -= lr * p.grad` under no_grad equals torch.optim.SGD. It does up to
    the last bit: SGD's fused ``add_(grad, alpha=-lr)`` rounds once where the manual update
    rounds twice, so after 2000 legendre steps a few parameters differ by an ulp or so. The
    framework uses torch.optim.SGD, and its presets match the SGD loop exactly (above)."""
    manual, sgd = plain_legendre(manual_update=True), plain_legendre()
    for name in manual:
        assert torch.allclose(manual[name], sgd[name], rtol=1e-6, atol=1e-15), name
