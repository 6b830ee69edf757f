"""Where runs and sweep jobs write: folders that no two runs ever share.

- A run's or sweep's default folder (``outputs/<date>/<HH-MM-SS>``, ``multirun/<date>/<HH-MM-SS>``)
  is claimed with an atomic ``mkdir`` when Hydra first resolves it; a second run started in the
  same second gets ``<HH-MM-SS>_2``, then ``_3``. Names stay readable and sort by time.
- A sweep job's folder is named by the values the sweep varies, encoded so that two different
  sets of values never give one name (``/`` is written ``%2F``, not ``_``), and shortened with a
  hash of the whole name past what a file system takes.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# Characters a folder name cannot hold, and '%' itself so that the encoding can be undone.
_ESCAPES = {"%": "%25", "/": "%2F", "\\": "%5C", "\0": "%00"}
MAX_NAME_BYTES = 200  # file systems take 255 bytes; the job number and '_' fit beside it
HASH_CHARS = 12


def claim_new_folder(path: str) -> str:
    """Create ``path``, or ``path_2``, ``path_3``, … for the first that does not exist yet, and
    return it: ``mkdir`` is atomic, so concurrent runs can never claim the same one."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        candidate = base if number == 1 else base.with_name(f"{base.name}_{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)


def folder_safe(text: str) -> str:
    """``text`` as one folder name, different texts giving different names."""
    return "".join(_ESCAPES.get(char, char) for char in text)


def shortened(name: str) -> str:
    """``name`` if a file system takes it, else its start and a hash of all of it."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_CHARS]
    start = name.encode()[:MAX_NAME_BYTES - HASH_CHARS - 1].decode(errors="ignore")
    return f"{start}~{digest}"


def job_folder_name(num: Any, overrides: Any, excluded: Any, sweeper: str) -> str:
    """``optimizer=adam,optimizer.lr=0.01``: the job's overrides that the sweep varies, in
    command-line order; prefixed with the job number where names may repeat.

    A grid (the basic sweeper) never repeats a combination; a sampling sweeper (Optuna) can, so
    its jobs keep their number in front and never overwrite each other.
    """
    excluded = set(excluded or ())
    varied = [item for item in overrides if item.split("=", 1)[0].lstrip("+~") not in excluded]
    name = shortened(folder_safe(",".join(varied)))
    if not name:
        return f"job{num}"
    return name if sweeper == BASIC_SWEEPER else f"{num}_{name}"


def register_resolvers() -> None:
    """The resolvers conf/config.yaml names folders with. Cached: a folder is claimed once per
    run, and Hydra copies the cache into each sweep job's config, so all agree on it."""
    if not OmegaConf.has_resolver("framework_job_folder"):
        OmegaConf.register_new_resolver("framework_job_folder", job_folder_name)
    if not OmegaConf.has_resolver("framework_new_folder"):
        OmegaConf.register_new_resolver("framework_new_folder", claim_new_folder, use_cache=True)
