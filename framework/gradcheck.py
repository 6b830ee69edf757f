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
        torch.autograd.gradcheck(function.apply, inputs, raise_exception=True)
    except RuntimeError as error:  # gradcheck reports the mismatching Jacobians
        raise AssertionError(f"{function.__name__}.backward does not match its forward:\n{error}") from None


def check_all(manager) -> list[str]:
    """Gradcheck every Function declared through ``framework_autograd_functions``; return the names."""
    from framework.plugin_manager import contributions

    checked = []
    for provider, check in contributions(manager, "framework_autograd_functions", AutogradCheck):
        try:
            check_function(check.function, *check.make_inputs())
        except AssertionError as error:
            raise AssertionError(f"{check.name} from plugin {provider}: {error}") from None
        checked.append(check.name)
    return checked


def main() -> int:
    from framework.errors import FrameworkError
    from framework.plugin_manager import create_plugin_manager

    try:
        names = check_all(create_plugin_manager())
    except (AssertionError, FrameworkError, ValueError) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    for name in names:
        print(f"ok  {name}")
    print(f"{len(names)} autograd Function(s) pass gradcheck")
    return 0


if __name__ == "__main__":
    sys.exit(main())
