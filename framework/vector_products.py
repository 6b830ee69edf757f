"""Vector-Jacobian products without torch's import of sympy (issue 10 point 3, issue 12 point 7).

``output.backward(vector)`` and ``torch.autograd.grad(output, inputs, grad_outputs=vector)``
check the vector's shape through ``torch.fx.experimental.symbolic_shapes``, which imports sympy:
≈ 0.35 s the first time in a process (torch 2.13, ``torch.autograd._make_grads``). A run met it
in the conditioning doctor's Hessian-vector products (every ``+task=legendre`` run) and in the
vectorized launcher's check of a batched matrix product: a tenth of such a process.

The products here differentiate the scalar ``(output * vector).sum()`` instead, whose gradient
with respect to ``output`` is ``1.0 * vector``, bit for bit ``vector``: what flows back from
there, and so every gradient, is the same as with ``vector`` given to torch directly
(tests/framework/test_vector_products.py compares them). The scalar needs no shape check.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _weighted(output: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    if vector.shape != output.shape:  # torch's own check, which broadcasting would skip
        raise RuntimeError(f"Mismatch in shape: the vector has a shape of {tuple(vector.shape)} and the output "
                           f"has a shape of {tuple(output.shape)}")
    return (output * vector).sum()


def _torchs_own(output: torch.Tensor, vector) -> bool:
    """Where the product would not be torch's: a complex output (its sum is no real scalar), and
    a vector that needs a gradient itself (the product would add into it); torch's call then."""
    return not isinstance(vector, torch.Tensor) or vector.requires_grad or output.is_complex() or vector.is_complex()


def backward_with(output: torch.Tensor, vector: torch.Tensor, **options) -> None:
    """``output.backward(vector, **options)``."""
    if _torchs_own(output, vector):
        output.backward(vector, **options)
    else:
        _weighted(output, vector).backward(**options)


def grad_with(output: torch.Tensor, inputs: Sequence[torch.Tensor], vector: torch.Tensor,
              **options) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad(output, inputs, grad_outputs=vector, **options)`` (not
    ``is_grads_batched``)."""
    if _torchs_own(output, vector):
        return torch.autograd.grad(output, inputs, grad_outputs=vector, **options)
    return torch.autograd.grad(_weighted(output, vector), inputs, **options)
