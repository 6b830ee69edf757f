"""Check every custom autograd Function the plugins contribute: ``python -m framework.gradcheck``.

A Function whose ``backward`` does not match its ``forward`` trains silently wrong (a tutorial's
P3 did, and nothing told its author). ``torch.autograd.gradcheck`` compares the analytical
gradient with finite differences in double precision.
"""

from __future__ import annotations

import sys

import torch

from framework.registry import AutogradCheck


def check_function(function: type, *inputs: torch.Tensor) -> None:
    """Gradcheck ``function.apply(*inputs)``; raise AssertionError naming the Function if wrong.

    Inputs must be double precision with ``requires_grad=True`` (float32 finite differences are
    too coarse to tell a wrong gradient from rounding).
    """
    for tensor in inputs:
        if isinstance(tensor, torch.Tensor) and tensor.dtype != torch.float64:
            raise ValueError(f"gradcheck {function.__name__}: inputs must be float64, got {tensor.dtype}")
    try:
        ok = torch.autograd.gradcheck(function.apply, inputs, raise_exception=True)
    except RuntimeError as error:  # gradcheck reports the mismatching Jacobians
        raise AssertionError(f"{function.__name__}.backward does not match its forward:\n{error}") from None
    if not ok:
        raise AssertionError(f"{function.__name__}.backward does not match its forward")


def check_all(manager) -> list[str]:
    """Gradcheck every Function declared through ``framework_autograd_functions``; return the names."""
    checked = []
    for impl in manager.hook.framework_autograd_functions.get_hookimpls():
        for check in impl.function() or ():
            if not isinstance(check, AutogradCheck):
                raise TypeError(f"plugin {impl.plugin_name!r} returned {check!r}, not framework.AutogradCheck")
            check_function(check.function, *check.make_inputs())
            checked.append(f"{impl.plugin_name}:{check.name}")
    return checked


def main() -> int:
    from framework.plugin_manager import create_plugin_manager

    try:
        names = check_all(create_plugin_manager())
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    for name in names:
        print(f"ok  {name}")
    print(f"{len(names)} autograd Function(s) pass gradcheck")
    return 0


if __name__ == "__main__":
    sys.exit(main())
