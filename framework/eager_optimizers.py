"""Keeps torch.optim from importing torch._dynamo in a process that never compiles anything.

torch.optim wraps the optimizers' methods so that a ``torch.compile`` trace skips them:
``torch._disable_dynamo`` (``add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict``) and ``_use_grad_for_differentiable`` (every built-in ``step``). Those wrappers import
``torch._dynamo`` on their first call. That import costs as much as ``import torch`` itself
(about 2.5 s of an 8-s ``python -m framework`` run) and buys nothing in eager mode: no frame
can be being compiled while ``torch._dynamo`` has never been imported.

``skip_dynamo_import()`` gives each wrapper an eager path that is taken only while
``torch._dynamo`` is absent from ``sys.modules``. The path calls the very function torch's
wrapper calls, in the grad mode it sets, so the updates are bit for bit the same. Once anything
imports ``torch._dynamo`` (``torch.compile``, DDP, a plugin), every call goes through torch's
own wrapper again. Only the command line installs it, in a process the framework owns; the
Python API leaves a user's torch as it found it.

A wrapper is recognised by its code object, the one torch's decorator gives every function it
wraps, and a step wrapper only while its code does what this module mirrors. Where a torch
release wraps its methods differently, its wrappers are left alone: they import
``torch._dynamo`` as before, which costs time, never correctness.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch
import torch.optim.optimizer as torch_optimizer

# torch's wrapper (torch._compile._disable_dynamo) caches the disabled function under this
# attribute of the wrapped one, and reads it before importing torch._dynamo.
_DISABLED_CACHE = "__dynamo_disable"


def _wrapper_code(module, decorator_name: str, probe: Callable):
    """The code object of the wrapper a torch decorator puts around ``probe``; None where this
    torch has no such decorator (nothing is then matched, and nothing breaks)."""
    decorator = getattr(module, decorator_name, None)
    return None if decorator is None else decorator(probe).__code__


# Every function a decorator wraps shares its wrapper's code object: probes tell them apart
# exactly, wherever torch's files lie.
_DISABLE_DYNAMO_CODE = _wrapper_code(torch, "_disable_dynamo", lambda: None)
_USE_GRAD_CODE = _wrapper_code(torch_optimizer, "_use_grad_for_differentiable", lambda self: None)
# The names _use_grad's code uses (torch 2.6 to 2.13): a release whose step wrapper does more
# than set the grad mode and break a trace is not mirrored.
_USE_GRAD_NAMES = {"torch._dynamo", "_dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled", "defaults",
                   "graph_break"}


def dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def skip_dynamo_import() -> int:
    """Give torch.optim's dynamo-skipping wrappers an eager path (idempotent; cheap to repeat).
    Returns how many wrappers got one by this call.

    Call it before an optimizer is built: building one calls ``add_param_group``. Optimizer
    classes defined after a call are covered by the next call; an optimizer class with a built
    instance keeps torch's step (its step is then torch's hook wrapper, which is not matched).
    The functional optimizers' ``_disable_dynamo_if_unsupported`` needs nothing: it calls its
    disabled function only while compiling."""
    if dynamo_loaded():
        return 0  # nothing left to save, and torch's wrappers are what a compiling process needs
    given = 0
    for optimizer_class in _optimizer_classes():
        for name, method in list(vars(optimizer_class).items()):
            if _wraps(method, _DISABLE_DYNAMO_CODE) and _DISABLED_CACHE not in vars(method.__wrapped__):
                setattr(method.__wrapped__, _DISABLED_CACHE, _eager_until_dynamo_loads(method))
                given += 1
            elif name == "step" and _wraps(method, _USE_GRAD_CODE) and set(method.__code__.co_names) <= _USE_GRAD_NAMES:
                optimizer_class.step = _eager_use_grad(method)
                given += 1
    return given


def _eager_until_dynamo_loads(wrapper: Callable) -> Callable:
    """What torch's ``_disable_dynamo`` wrapper calls in place of ``torch._dynamo.disable(wrapped)``."""
    wrapped = wrapper.__wrapped__

    @functools.wraps(wrapped)
    def call(*args, **kwargs):
        if dynamo_loaded():
            # Empty torch's cache and call its wrapper again: it builds and keeps the disabled
            # function. (pop: another thread may have emptied it first.)
            vars(wrapped).pop(_DISABLED_CACHE, None)
            return wrapper(*args, **kwargs)
        return wrapped(*args, **kwargs)

    return call


def _eager_use_grad(torch_step: Callable) -> Callable:
    """``_use_grad_for_differentiable`` without its ``torch._dynamo.graph_break()`` calls, which
    only mean something to a trace: the step runs with grad enabled only for a differentiable
    optimizer, and the caller's grad mode is restored after."""
    step = torch_step.__wrapped__

    @functools.wraps(step)
    def eager_step(self, *args, **kwargs):
        if dynamo_loaded():
            return torch_step(self, *args, **kwargs)
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return step(self, *args, **kwargs)
        finally:
            torch.set_grad_enabled(previous)

    return eager_step


def _wraps(candidate: object, wrapper_code) -> bool:
    return (wrapper_code is not None and getattr(candidate, "__code__", None) is wrapper_code
            and callable(getattr(candidate, "__wrapped__", None)))


def _optimizer_classes() -> list[type]:
    found, pending = [], [torch.optim.Optimizer]
    while pending:
        optimizer_class = pending.pop()
        found.append(optimizer_class)
        pending.extend(optimizer_class.__subclasses__())
    return found
