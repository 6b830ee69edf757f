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

A model may also compute with the flat tensor itself (:func:`lent_column`): a polynomial in the
tutorial's form is one matrix product with the column of its coefficients, and autograd then adds
one gradient into the flat one instead of a gradient per coefficient. It gets the flat tensor only
while that is exactly the same thing: its parameters are still the flat tensor's views, their
gradients still its gradient's views, and nothing watches a parameter's own gradient (tensor hooks,
or DDP, which turns lending off: :func:`stop_lending`). And only inside a training step's forward
pass (:func:`lending_forward`), whose loss goes to ``backward()``: anything else that differentiates
with respect to the parameters themselves (the doctor's ``torch.autograd.grad``, a user's own
code) must find them in the graph.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

# A model class attribute: True when every parameter takes part in every forward pass.
DENSE_GRADIENTS = "dense_gradients"
# A model attribute, True where the model's one parameter is a (1, n) weight that its forward
# multiplies by as F.linear does, ``x @ weight.t()``: the flat tensor is then laid out as that
# transpose, strides (1, n), so that ``torch.mm(x, column)`` with the lent column
# (:func:`lent_column`) is F.linear's own product, operand for operand, without the transpose's
# node in the graph. Such a model is flattened though it has a single parameter.
TRANSPOSED_WEIGHT_COLUMN = "transposed_weight_column"

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
    if not getattr(model, DENSE_GRADIENTS, False):
        return False
    if len(parameters) < 2 and not transposed_weight_column(model, parameters):
        return False
    first = parameters[0]
    return all(p.device == first.device and p.dtype == first.dtype and p.layout == torch.strided
               and p.grad is None for p in parameters)


def transposed_weight_column(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> bool:
    """Whether ``parameters`` are the one (1, n) weight of a model that declares
    TRANSPOSED_WEIGHT_COLUMN: its flat tensor is then laid out as the weight's transpose."""
    return (getattr(model, TRANSPOSED_WEIGHT_COLUMN, False) and len(parameters) == 1
            and parameters[0].dim() == 2 and parameters[0].shape[0] == 1)


class FlatParameters:
    """The flat tensor the optimizer updates, and the parameters that are views of it."""

    def __init__(self, parameters: list[torch.nn.Parameter], transposed: bool = False) -> None:
        self.parameters = list(parameters)
        with torch.no_grad():
            # A column, (n, 1): the shape of the tutorial's weight, so that a model computing with
            # it (lent_column) needs no view, whose node autograd would run every backward pass
            # (≈ 8 µs of polyfit's 190 µs step, with the view itself). Checkpoints keep (n,):
            # see column_state_hooks. Transposed: a (1, n) row's transpose, strides (1, n)
            # (TRANSPOSED_WEIGHT_COLUMN).
            values = torch.cat([p.detach().reshape(-1) for p in self.parameters])
            flat = values.view(1, -1).t() if transposed else values.view(-1, 1)
        self.flat = torch.nn.Parameter(flat)
        self.flat.grad = torch.zeros_like(flat)
        self.gradient = self.flat.grad
        self.grad_views: list[torch.Tensor] = []
        self.lends = True  # False once anything needs each parameter's own gradient (stop_lending)
        offset = 0
        for parameter in self.parameters:
            size = parameter.numel()
            parameter.data = self.flat.data[offset:offset + size].view_as(parameter)
            view = self.gradient[offset:offset + size].view_as(parameter)
            parameter.grad = view
            self.grad_views.append(view)
            offset += size
        # Where the flat tensor and each view start, to tell that they still share their memory.
        self.addresses = tuple(p.data_ptr() for p in self.parameters)

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


# The FlatParameters whose flat tensor the running training step's forward pass may compute with
# (lending_forward), else None.
_lender: FlatParameters | None = None


def lent_leaf(parameters: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The flat tensor of ``parameters`` as a vector of shape (n,), where :func:`lent_column`
    lends it, else None: a view of the column, so one more node in the graph than the column
    itself (the shape this function has always given plugins)."""
    column = lent_column(parameters)
    return None if column is None else column.view(-1)


def lent_column(parameters: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The flat tensor whose elements are ``parameters`` (all of them, in this order), itself: a
    column of shape (n, 1), for a forward pass that computes with it in their place; None unless
    that is exactly the same thing. A gradient autograd adds into the flat one is then each
    parameter's, as if added one by one, and each parameter's value is the flat tensor's.

    Only inside :func:`lending_forward`, for the parameters of its optimizer. Checked at every call
    (≈ 2 µs for three parameters), since each can stop being true: a
    parameter's data replaced (``.to(device)``, a deep copy), a gradient set to None or replaced
    (``model.zero_grad()``: the parameters then get their own, and the optimizer gathers them),
    a parameter frozen (``requires_grad_(False)``: it gets no gradient), a hook on a parameter's
    gradient, or DDP."""
    owner = _lender
    if owner is None or not owner.lends or len(owner.parameters) != len(parameters):
        return None
    flat = owner.flat
    if flat.grad is not owner.gradient or flat.data_ptr() != owner.addresses[0]:
        return None
    for parameter, own, view, address in zip(parameters, owner.parameters, owner.grad_views, owner.addresses):
        if (parameter is not own or parameter.grad is not view or parameter.data_ptr() != address
                or not parameter.requires_grad or parameter._backward_hooks
                or parameter._post_accumulate_grad_hooks):
            return None
    return flat


def lending_forward(model, optimizer: torch.optim.Optimizer):
    """``model``, or where ``optimizer`` updates a flat tensor (:func:`flatten`), a function that
    calls it with that tensor lent (:func:`lent_column`): for a training step, whose loss then goes to
    ``backward()``. Any other forward pass computes with the parameters themselves."""
    owner = getattr(optimizer, "flat_parameters", None)
    if owner is None:
        return model

    def forward(features):
        global _lender
        outer, _lender = _lender, owner
        try:
            return model(features)
        finally:
            _lender = outer

    return forward


def stop_lending(optimizer: torch.optim.Optimizer) -> None:
    """No forward pass computes with ``optimizer``'s flat tensor from now on: DDP's reducer waits
    for each parameter's own gradient."""
    owner = getattr(optimizer, "flat_parameters", None)
    if owner is not None:
        owner.lends = False


def flatten(optimizer_factory, parameters: list[torch.nn.Parameter], transposed: bool = False) -> torch.optim.Optimizer:
    """An optimizer over one flat tensor holding ``parameters`` (built by ``optimizer_factory``,
    called with the list of tensors to optimize); ``transposed``: see TRANSPOSED_WEIGHT_COLUMN."""
    flat = FlatParameters(parameters, transposed)
    optimizer = optimizer_factory([flat.flat])
    optimizer.zero_grad = flat.zero_grad
    optimizer.flat_parameters = flat  # for lending_forward
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
    column_state_hooks(optimizer, flat.flat, parameters[0].shape if len(parameters) == 1 else None)
    return optimizer


def column_state_hooks(optimizer: torch.optim.Optimizer, flat: torch.Tensor, own_shape: torch.Size | None) -> None:
    """The optimizer's state of the flat column, (n, 1), saved as (n,) and loaded from (n,): a
    checkpoint holds what it held before the column, and what the vectorized launcher's batched
    optimizers give a job (plugins/_batched_optimizers.py). ``own_shape``: the shape of the one
    parameter of a model flattened for its transposed column (TRANSPOSED_WEIGHT_COLUMN), whose
    state a checkpoint written before that holds in this shape, also loaded."""
    shape, flat_shape = flat.shape, torch.Size((flat.numel(),))
    loaded_shapes = (flat_shape,) if own_shape is None else (flat_shape, torch.Size(own_shape))

    def reshaped(state_dict: dict, have: tuple[torch.Size, ...], want) -> dict:
        # New dicts: torch's state_dict holds the optimizer's own per-parameter dicts, and a
        # checkpoint's dicts are the caller's.
        state = {index: {key: value.view(want) if isinstance(value, torch.Tensor) and value.shape in have else value
                         for key, value in entries.items()}
                 for index, entries in state_dict["state"].items()}
        return {**state_dict, "state": state}

    optimizer.register_state_dict_post_hook(lambda _, state_dict: reshaped(state_dict, (shape,), flat_shape))
    optimizer.register_load_state_dict_pre_hook(lambda _, state_dict: reshaped(state_dict, loaded_shapes, shape))


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
