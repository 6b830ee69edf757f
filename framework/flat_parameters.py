"""One flat tensor for the optimizer of a model made of many small parameters.

torch's optimizers run a Python loop over their parameters on the CPU (their ``foreach`` kernels
are for GPUs), and for the tiny models of our users that loop is the step's largest cost: NAdam on
polyfit's three scalar coefficients costs a third more than NAdam on one (3,) tensor. The
optimizers below update every element on its own, with the same operations whatever the
tensor's shape, so one optimizer over a flat tensor holding all the parameters gives every
parameter exactly (bit for bit) the values it would get from the optimizer over the parameters one
by one.

The parameters stay the model's, with their names: each one's data becomes a view into the flat
tensor, and each one's gradient a view into the flat tensor's gradient. Autograd accumulates a
parameter's gradient into its existing ``.grad`` in place, so a backward pass fills the flat
gradient without a copy, and an update of the flat tensor is an update of every parameter.

Two things would break that sharing, and both are taken care of:
- ``optimizer.zero_grad()`` sets gradients to None by default: the optimizer's zero_grad here
  zeroes the flat gradient in place instead;
- a step plugin or callback that sets a parameter's ``.grad`` itself (``model.zero_grad()``,
  an assignment): before every update (after the closure, when ``step`` is given one) any such
  gradient is put back into the flat one.

Only models that say every parameter gets a gradient from every forward pass are flattened
(:data:`DENSE_GRADIENTS`): torch's optimizers skip a parameter whose gradient is None, while the
flat tensor's would hold zeros, which moves it under momentum or weight decay.
"""

from __future__ import annotations

import types

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

# A model class attribute: True when every parameter takes part in every forward pass.
DENSE_GRADIENTS = "dense_gradients"

# Updates that treat every element on its own, with the same arithmetic whatever the shape
# (their single-tensor code, torch's default on the CPU). Exact types: a subclass may not be.
ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adamax,
)


def can_flatten(model: torch.nn.Module, parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> bool:
    """Whether :func:`flatten` gives exactly the updates ``optimizer`` gives ``parameters``."""
    if type(optimizer) not in ELEMENTWISE_OPTIMIZERS or len(optimizer.param_groups) != 1:
        return False
    if len(parameters) < 2 or not getattr(model, DENSE_GRADIENTS, False):
        return False
    first = parameters[0]
    return all(p.device == first.device and p.dtype == first.dtype and p.layout == torch.strided
               and p.grad is None for p in parameters)


class FlatParameters:
    """The flat tensor the optimizer updates, and the parameters that are views of it."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.parameters = list(parameters)
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in self.parameters])
        self.flat = torch.nn.Parameter(flat)
        self.flat.grad = torch.zeros_like(flat)
        self.gradient = self.flat.grad
        self.grad_views: list[torch.Tensor] = []
        offset = 0
        for parameter in self.parameters:
            size = parameter.numel()
            parameter.data = self.flat.data[offset:offset + size].view_as(parameter)
            view = self.gradient[offset:offset + size].view_as(parameter)
            parameter.grad = view
            self.grad_views.append(view)
            offset += size

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The optimizer's zero_grad: in place, whatever was asked, so the views stay shared."""
        self.gradient.zero_()

    def gather(self) -> None:
        """Before each update: put back into the flat gradient any gradient a plugin replaced."""
        if self.flat.grad is not self.gradient:
            self.flat.grad = self.gradient
        for parameter, view in zip(self.parameters, self.grad_views):
            grad = parameter.grad
            if grad is not view:
                # Replaced (model.zero_grad(), an assignment) or dropped (None: no gradient,
                # which a model declaring dense gradients does not have; read as zero).
                with torch.no_grad():
                    view.copy_(grad) if grad is not None else view.zero_()
                parameter.grad = view


def flatten(optimizer_factory, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer over one flat tensor holding ``parameters`` (built by ``optimizer_factory``,
    called with the list of tensors to optimize)."""
    flat = FlatParameters(parameters)
    optimizer = optimizer_factory([flat.flat])
    optimizer.zero_grad = flat.zero_grad
    update = optimizer.step
    lean_sgd = type(optimizer) is torch.optim.SGD

    # Not a step pre-hook: those run before the closure that computes the gradients. A bound
    # method, as learning-rate schedulers expect of optimizer.step (they wrap its __func__).
    def step(self, closure=None):
        if closure is None:
            flat.gather()
            if lean_sgd and plain_sgd_update(self, flat):
                return None
            return update()

        def closure_then_gather():
            loss = closure()
            flat.gather()
            return loss

        return update(closure_then_gather)

    optimizer.step = types.MethodType(step, optimizer)
    return optimizer


def plain_sgd_update(optimizer: torch.optim.SGD, flat: FlatParameters) -> bool:
    """SGD with no momentum, weight decay or hooks: torch's own update of the flat tensor
    (``param.add_(grad, alpha=-lr)``, as its single-tensor and foreach code do) without the
    bookkeeping around it (profiler record, grad mode, hook chains, grouping), a sixth of the
    legendre tutorial's step. Returns False, updating nothing, in every other case."""
    group = optimizer.param_groups[0]
    lr = group["lr"]
    if (group["momentum"] or group["weight_decay"] or group["maximize"] or group["differentiable"]
            or group["fused"] or not isinstance(lr, float) or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks or getattr(optimizer, "grad_scale", None) is not None):
        return False
    flat.flat.data.add_(flat.gradient, alpha=-lr)
    return True
