"""Turning ``trainer.device``, ``trainer.dtype`` and ``trainer.seed`` into torch settings."""

from __future__ import annotations

import contextlib
import random
import re

import torch

from framework.errors import ConfigError
from framework.schema import DEVICES_HELP, DTYPES


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ConfigError(f"trainer.device={name!r} is not a device; use {DEVICES_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name} but CUDA is not available here (torch {torch.__version__}); "
            "use trainer.device=cpu or auto"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        extra = ""
        if isinstance(getattr(torch, name, None), torch.dtype) and not getattr(torch, name).is_floating_point:
            extra = " Integer tensors cannot require gradients, so parameters must be floating point."
        raise ConfigError(f"trainer.dtype={name} is not supported; use {' or '.join(DTYPES)}.{extra}")
    return getattr(torch, name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy (when installed) and torch (CPU and every CUDA device)."""
    random.seed(seed)
    try:
        import numpy
    except ImportError:  # numpy is optional for the core
        pass
    else:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build parameters directly in the run's dtype (a float64 run draws float64 initial values)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
