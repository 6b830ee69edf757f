"""The linear reference task as a plain PyTorch loop, for tests that check a run's parameters
through the command line (a sweep's jobs, a resumed run)."""

from __future__ import annotations

import torch


def plain_linear(lr: float, steps: int) -> tuple[dict, float]:
    """The linear task (y = 2x + 1 through 4 points, SGD from zeros) as a plain PyTorch loop:
    its parameters and the loss with them."""
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]])
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final_loss = torch.nn.functional.mse_loss(model(x), y).item()
    return {"weight": model.weight.tolist(), "bias": model.bias.tolist()}, final_loss
