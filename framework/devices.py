"""Turning ``trainer.device``, ``trainer.dtype``, ``trainer.seed`` and ``trainer.deterministic``
into torch settings."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from typing import Callable

import torch

from framework.errors import ConfigError
from framework.schema import DEVICES_HELP, DTYPES

log = logging.getLogger(__name__)

# cuBLAS picks its reduction order by the workspace it has: with more than one workspace
# configuration in play its matmuls may differ from run to run, and torch refuses them under
# use_deterministic_algorithms unless this variable fixes one (CUDA's "Results reproducibility").
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


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


def use_deterministic(on: bool) -> Callable[[], None] | None:
    """``trainer.deterministic=true``: reproducible kernels, as PyTorch's "Reproducibility" notes ask.

    ``torch.use_deterministic_algorithms(True)`` (an operation without a deterministic kernel then
    raises rather than vary), ``torch.backends.cudnn.benchmark = False`` (benchmarking may pick
    another convolution algorithm each run), and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when the
    environment does not set it. cuBLAS reads that variable once, when the process first uses it,
    so this runs before any CUDA work of the run; a process that used CUDA before without it is
    warned. Returns the function that puts torch's two settings back at the end of the run (a
    second run in the same process starts from the caller's settings); the variable stays set,
    as cuBLAS keeps the workspace it configured for the process. Off (false): nothing is changed
    and None is returned.
    """
    if not on:
        return None
    if CUBLAS_WORKSPACE_ENV not in os.environ:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            log.warning("trainer.deterministic=true but this process used CUDA before %s was set: cuBLAS may "
                        "not be reproducible in it; set %s=%s in the environment before starting Python",
                        CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE_CONFIG)
        os.environ[CUBLAS_WORKSPACE_ENV] = CUBLAS_WORKSPACE_CONFIG
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False

    def restore() -> None:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark

    return restore
