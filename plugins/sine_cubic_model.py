"""The ``sine_cubic`` model: y = a + b * P3(c + d * x), P3 a custom autograd Function."""

import inspect
from dataclasses import dataclass
from typing import List

import torch

from framework import AutogradCheck, Component, ConfigError, hookimpl, setting


class LegendreP3(torch.autograd.Function):
    """The Legendre polynomial P3(z) = (5z^3 - 3z) / 2, with its derivative 1.5 (5z^2 - 1).

    Written the way ``torch.func`` needs a custom Function: ``forward`` takes the inputs only,
    ``setup_context`` saves what backward needs, and ``generate_vmap_rule = True`` lets
    ``vmap`` run it over a batch of jobs (the vectorized launcher, framework/batched_fit.py) by
    running these same elementwise operations on the batched tensors.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return 0.5 * (5 * z**3 - 3 * z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (z,) = inputs
        ctx.save_for_backward(z)

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * z**2 - 1)


# A Function with setup_context has its arguments bound to forward's signature on every public
# apply (torch.autograd.Function.apply; under torch.func, see eager_apply), and inspect.signature
# builds that signature anew each time: ≈ 25 µs a call. Given here once, it is read instead.
LegendreP3.forward.__signature__ = inspect.signature(LegendreP3.forward)


def eager_apply(function):
    """``function.apply`` for a one-tensor ``function``, without torch's Python preamble where
    the preamble has only that tensor to unwrap.

    Before calling the C++ apply, torch's ``Function.apply`` binds a ``setup_context``
    Function's arguments to ``forward``'s signature and unwraps the tensors of finished
    ``torch.func`` transforms: ≈ 25 µs a call even with the signature given, 8% of a legendre
    step, where the tutorial's form of the Function pays ≈ 5. With no ``torch.func`` transform
    active and nothing being compiled, the binding has nothing to do (``forward`` takes one
    tensor and has no defaults): the tensor is unwrapped (one that escaped a finished transform;
    ≈ 0.2 µs) and the C++ apply called directly. Under vmap or grad (the vectorized launcher's
    vmap path), under ``torch.compile`` (which traces the public apply), or on a torch without
    these private names, the public apply runs. tests/plugins/test_models.py checks both paths
    against it.
    """
    c_apply = vars(getattr(torch._C, "_FunctionBase", object)).get("apply")
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    unwrap_if_dead = getattr(getattr(torch._C, "_functorch", None), "unwrap_if_dead", None)
    if c_apply is None or transforms_active is None or unwrap_if_dead is None:
        return function.apply
    direct_apply = c_apply.__get__(None, function)
    compiling = torch.compiler.is_compiling

    def apply(z):
        if transforms_active() or compiling():
            return function.apply(z)
        return direct_apply(unwrap_if_dead(z))

    return apply


legendre_p3 = eager_apply(LegendreP3)


@dataclass
class SineCubicConfig:
    init: List[float] = setting(default_factory=lambda: [0.0, -1.0, 0.0, 0.3])  # a, b, c, d: any finite


class SineCubic(torch.nn.Module):
    dense_gradients = True  # every coefficient is in every forward (framework.flat_parameters)
    broadcasts_over_jobs = True  # scalars in elementwise arithmetic only (framework.batched_fit)

    def __init__(self, a: float, b: float, c: float, d: float) -> None:
        super().__init__()
        for name, value in zip("abcd", (a, b, c, d)):
            self.register_parameter(name, torch.nn.Parameter(torch.full((), value)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.a + self.b * legendre_p3(self.c + self.d * features)


def build_sine_cubic(config: SineCubicConfig, *, data) -> SineCubic:
    if len(config.init) != 4:
        raise ConfigError(f"model.init needs the 4 values a, b, c, d; got {list(config.init)}")
    if data.features.shape[1] != 1:
        raise ConfigError(f"model=sine_cubic fits one input column, but the data have {data.features.shape[1]}")
    return SineCubic(*config.init)


@hookimpl
def framework_components():
    return [Component("model", "sine_cubic", build_sine_cubic, SineCubicConfig,
                      help="a + b * P3(c + d * x), P3 the Legendre polynomial as an autograd Function")]


@hookimpl
def framework_autograd_functions():
    return [
        AutogradCheck(
            "legendre_p3",
            LegendreP3,
            lambda: (torch.linspace(-2.0, 2.0, 25, dtype=torch.float64, requires_grad=True),),
        )
    ]
