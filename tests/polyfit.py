"""polyfit's model as its preset computes it (model.form=matmul): the tutorial's X @ w, for plain
loops that the framework's polyfit must match bit for bit."""

import torch


def tutorial_quadratic(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The columns [x², x, 1] times the column (A, B, C): x of shape (rows,) or (rows, 1); the
    predictions (rows, 1)."""
    x = x.reshape(-1, 1)
    return torch.cat([x**2, x, torch.ones_like(x)], dim=1) @ torch.stack([A, B, C]).view(3, 1)
