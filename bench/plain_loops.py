"""The plain PyTorch side of the in-process cases: the loops as the tutorials write them.

Each function sets up (seed, data, initial values, optimizer, and the SummaryWriter when it
logs) outside its timed window, times the loop alone, and returns (seconds, Outcome). The data
and initial values are drawn as the framework's task presets draw them (seed 0, then the data,
then the parameters), so both sides start from the same numbers.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.framework_side import synchronize
from bench.measure import Outcome
from tests.framework.test_reference_tasks import TutorialP3, legendre_start

SEED = 0  # trainer.seed's default


def flat(*tensors: torch.Tensor) -> list[float]:
    return [float(value) for tensor in tensors for value in tensor.detach().flatten().cpu().tolist()]


# ------------------------------------------------------------------------------------------------
# W1: polyfit, the tutorial's own loop: one (3, 1) weight on the features [x², x, 1]
# ------------------------------------------------------------------------------------------------


def polyfit(steps: int, *, writer=None, log_every: int = 50, device: str = "cpu") -> tuple[float, Outcome]:
    torch.manual_seed(SEED)
    x = torch.randn(20) * 5
    y = x**2 + 2 * x + 3
    features = torch.stack([x**2, x, torch.ones_like(x)], dim=1).to(device)
    targets = y.unsqueeze(1).to(device)
    weight = torch.randn(3, 1).to(device).requires_grad_()
    optimizer = torch.optim.NAdam([weight], lr=0.01)
    loss_fn = torch.nn.MSELoss()
    with torch.no_grad():
        initial = loss_fn(features @ weight, targets).item()

    synchronize(device)
    started = time.perf_counter()
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(features @ weight, targets)
        loss.backward()
        optimizer.step()
        if writer is not None and step % log_every == 0:
            writer.add_scalar("train/loss", loss.item(), step)
    synchronize(device)
    seconds = time.perf_counter() - started

    with torch.no_grad():
        final = loss_fn(features @ weight, targets).item()
    return seconds, Outcome(final, flat(weight), initial)


# ------------------------------------------------------------------------------------------------
# W2: legendre, the PyTorch tutorial "polynomial_custom_function" as written
# ------------------------------------------------------------------------------------------------


# The tutorial's P3(x) = ½(5x³ − 3x) with its own backward: the one the reference-task test uses.
LegendrePolynomial3 = TutorialP3


def legendre(steps: int, *, writer=None, log_every: int = 50) -> tuple[float, Outcome]:
    x, y, (a, b, c, d) = legendre_start()
    learning_rate = 5e-6
    with torch.no_grad():
        initial = (a + b * LegendrePolynomial3.apply(c + d * x) - y).pow(2).sum().item()

    started = time.perf_counter()
    for t in range(steps):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if writer is not None and t % log_every == 0:
            writer.add_scalar("train/loss", loss.item(), t)
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    seconds = time.perf_counter() - started

    with torch.no_grad():
        final = (a + b * P3(c + d * x) - y).pow(2).sum().item()
    return seconds, Outcome(final, flat(a, b, c, d), initial)


# ------------------------------------------------------------------------------------------------
# W3 and W4: a linear 1 -> 1 model, MSE, SGD on y = 2x + 1 (x ~ N(0, 1)), as data=polynomial
# data.coefficients=[2,1] data.x_scale=1 draws it
# ------------------------------------------------------------------------------------------------


def line_data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(SEED)
    x = torch.randn(rows) * 1.0
    y = 2 * x + 1
    return x.unsqueeze(1), y.unsqueeze(1)


class LinearFit:
    """nn.Linear(1, 1) from zeros, MSE, SGD: the step a plain loop writes."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, lr: float) -> None:
        self.features, self.targets = features, targets
        self.model = torch.nn.Linear(1, 1)
        torch.nn.init.zeros_(self.model.weight)
        torch.nn.init.zeros_(self.model.bias)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.loss_fn = torch.nn.MSELoss()
        self.initial = self.full_loss()

    def step(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(features), targets)
        loss.backward()
        self.optimizer.step()
        return loss

    def full_loss(self) -> float:
        with torch.no_grad():
            return self.loss_fn(self.model(self.features), self.targets).item()

    def outcome(self) -> Outcome:
        return Outcome(self.full_loss(), flat(self.model.weight, self.model.bias), self.initial)


def full_batch_line(steps: int, *, rows: int, lr: float) -> tuple[float, Outcome]:
    features, targets = line_data(rows)
    fit = LinearFit(features, targets, lr)
    started = time.perf_counter()
    for _ in range(steps):
        fit.step(features, targets)
    seconds = time.perf_counter() - started
    return seconds, fit.outcome()


def sliced_epochs(epochs: int, *, rows: int, batch_size: int, lr: float) -> tuple[float, Outcome]:
    """Shuffled minibatches by index slicing: one randperm per epoch, the rows taken by index."""
    features, targets = line_data(rows)
    fit = LinearFit(features, targets, lr)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(rows)
        for start in range(0, rows, batch_size):
            batch = order[start:start + batch_size]
            fit.step(features[batch], targets[batch])
    seconds = time.perf_counter() - started
    return seconds, fit.outcome()


def bare_epochs(epochs: int, *, rows: int, batch_size: int, lr: float) -> tuple[float, Outcome]:
    """The least an autograd step can cost: two leaf tensors, F.linear and F.mse_loss, the epoch's
    rows gathered once and sliced, ``p -= lr * p.grad`` by hand. No module, no optimizer object."""
    import torch.nn.functional as F

    features, targets = line_data(rows)
    weight, bias = torch.zeros(1, 1, requires_grad=True), torch.zeros(1, requires_grad=True)

    def full_loss() -> float:
        with torch.no_grad():
            return F.mse_loss(F.linear(features, weight, bias), targets).item()

    initial = full_loss()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(rows)
        shuffled_features, shuffled_targets = features[order], targets[order]
        for start in range(0, rows, batch_size):
            stop = start + batch_size
            loss = F.mse_loss(F.linear(shuffled_features[start:stop], weight, bias), shuffled_targets[start:stop])
            weight.grad = bias.grad = None
            loss.backward()
            with torch.no_grad():
                weight.sub_(weight.grad, alpha=lr)
                bias.sub_(bias.grad, alpha=lr)
    seconds = time.perf_counter() - started
    return seconds, Outcome(full_loss(), flat(weight, bias), initial)


def dataloader_epochs(epochs: int, *, rows: int, batch_size: int, lr: float) -> tuple[float, Outcome]:
    """The textbook way: DataLoader(TensorDataset(X, y), batch_size, shuffle=True)."""
    features, targets = line_data(rows)
    fit = LinearFit(features, targets, lr)
    started = time.perf_counter()
    loader = DataLoader(TensorDataset(features, targets), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        for batch_features, batch_targets in loader:
            fit.step(batch_features, batch_targets)
    seconds = time.perf_counter() - started
    return seconds, fit.outcome()
