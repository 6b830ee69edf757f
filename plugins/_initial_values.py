"""Initial parameter values shared by the built-in models (a helper module, not a plugin)."""

import torch

from framework import ConfigError

INITS = {
    "zeros": torch.zeros,
    "randn": torch.randn,  # N(0, 1)
    "uniform": torch.rand,  # U[0, 1)
}


def initial_values(init: str, shape: tuple[int, ...], *, setting: str) -> torch.Tensor:
    """Draw from torch's global generator in the default dtype (the run's dtype)."""
    try:
        draw = INITS[init]
    except KeyError:
        raise ConfigError(f"{setting}={init!r} is not an initialisation here; use one of {', '.join(INITS)}") from None
    return draw(shape)
