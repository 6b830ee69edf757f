"""Keeps torch.optim from importing torch._dynamo in a process that never compiles anything.

torch.optim wraps the optimizers' methods so that a ``torch.compile`` trace skips them:
``torch._disable_dynamo`` (``add_param_group``, ``zero_grad``, ``state_dict``,
``load_state_dict`` and the functional ``adam``, ``nadam``, ...) and
``_use_grad_for_differentiable`` (every built-in ``step``). Those wrappers import
``torch._dynamo`` on their first call. That import costs as much as ``import torch`` itself
(about 2.5 s of an 8-s ``python -m framework`` run) and buys nothing in eager mode: no frame
can be being compiled while ``torch._dynamo`` has never been imported.

``skip_dynamo_import()`` gives each wrapper an eager path that is taken only while
``torch._dynamo`` is absent from ``sys.modules``. The path calls the very function torch's
wrapper calls, in the grad mode it sets, so the updates are bit for bit the same. Once anything
imports ``torch._dynamo`` (``torch.compile``, DDP, a plugin), every call goes through torch's
own wrapper again. Only the command line installs it, in a process the framework owns; the
Python API leaves a user's torch as it found it.

Where a torch release wraps its methods differently, the wrappers it does not recognise are
left alone: they import ``torch._dynamo`` as before, which costs time, never correctness.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from types import FunctionType, ModuleType

import torch
import torch._compile as torch_compile_module
import torch.optim
import torch.optim.optimizer as torch_optimizer_module

# torch's wrapper (torch._compile._disable_dynamo) caches the disabled function under this
# attribute of the wrapped one, and reads it before importing torch._dynamo.
_DISABLED_CACHE = "__dynamo_disable"


def dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def skip_dynamo_import() -> None:
    """Give torch.optim's dynamo-skipping wrappers an eager path (idempotent; cheap to repeat).

    Call it before an optimizer is built: building one calls ``add_param_group``. Optimizer
    classes defined after a call are covered by the next call."""
    if dynamo_loaded():
        return  # nothing left to save, and torch's wrappers are what a compiling process needs
    for wrapper in _disable_dynamo_wrappers():
        wrapped = wrapper.__wrapped__
        if getattr(wrapped, _DISABLED_CACHE, None) is None:
            setattr(wrapped, _DISABLED_CACHE, _eager_until_dynamo_loads(wrapper))
    for optimizer_class in _optimizer_classes():
        step = optimizer_class.__dict__.get("step")
        # A class whose step torch already hooked (an instance was built) is left as it is.
        if _is_use_grad_wrapper(step) and not getattr(step, "hooked", False):
            optimizer_class.step = _eager_use_grad(step)


def _eager_until_dynamo_loads(wrapper: Callable) -> Callable:
    """What torch's ``_disable_dynamo`` wrapper calls in place of ``torch._dynamo.disable(wrapped)``."""
    wrapped = wrapper.__wrapped__

    @functools.wraps(wrapped)
    def call(*args, **kwargs):
        if dynamo_loaded():
            # Empty torch's cache and call its wrapper again: it builds and keeps the disabled function.
            delattr(wrapped, _DISABLED_CACHE)
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


def _is_disable_dynamo_wrapper(candidate: object) -> bool:
    code = getattr(candidate, "__code__", None)
    return (code is not None and code.co_name == "inner" and code.co_filename == torch_compile_module.__file__
            and callable(getattr(candidate, "__wrapped__", None)))


def _is_use_grad_wrapper(candidate: object) -> bool:
    code = getattr(candidate, "__code__", None)
    return (code is not None and code.co_name == "_use_grad"
            and code.co_filename == torch_optimizer_module.__file__
            and callable(getattr(candidate, "__wrapped__", None)))


def _disable_dynamo_wrappers() -> Iterator[FunctionType]:
    """torch's ``_disable_dynamo`` wrappers among torch.optim's methods and functions, and those
    held by the functional optimizers' fallback closures (``_disable_dynamo_if_unsupported``)."""
    for candidate in _optimizer_functions():
        if _is_disable_dynamo_wrapper(candidate):
            yield candidate
        for cell in getattr(candidate, "__closure__", None) or ():
            try:
                held = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if _is_disable_dynamo_wrapper(held):
                yield held


def _optimizer_functions() -> Iterator[object]:
    for module in _optimizer_modules():
        yield from vars(module).values()
    for optimizer_class in _optimizer_classes():
        yield from vars(optimizer_class).values()


def _optimizer_modules() -> list[ModuleType]:
    prefix = torch.optim.__name__ + "."
    return [module for name, module in list(sys.modules.items())
            if module is not None and (name == torch.optim.__name__ or name.startswith(prefix))]


def _optimizer_classes() -> list[type]:
    found, pending = [], [torch.optim.Optimizer]
    while pending:
        optimizer_class = pending.pop()
        found.append(optimizer_class)
        pending.extend(optimizer_class.__subclasses__())
    return found
