"""The training data container, the checks that make any data source's output usable, and the
held-out validation rows (``data.val_fraction``, or a data source's own validation set)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from framework.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# The split's generator is seeded with trainer.seed + this offset: trainer.seed is at most
# 2**32 - 1, so the split never draws the same stream as a shuffle order (seeded with
# trainer.seed itself), and it never touches the global generator that data and models draw from.
VALIDATION_SEED_OFFSET = 2**32


@dataclass
class Dataset:
    """Features (N, F) and targets (N, T), as a data component returns them.

    A data component may return 1-D tensors; :func:`prepare_dataset` makes them columns.
    ``source`` says where the data came from, for messages. ``validation`` is an optional
    held-out Dataset with the same columns (and no ``validation`` of its own): ``val/loss`` and
    ``final_val_loss`` are computed on it, and the run trains on the other rows only.
    """

    features: torch.Tensor
    targets: torch.Tensor
    source: str = ""
    validation: Dataset | None = None

    def __len__(self) -> int:
        return self.features.shape[0]


def prepare_dataset(data: Dataset, *, dtype: torch.dtype, device: torch.device) -> Dataset:
    """Check shapes and values, convert to the run's float dtype and move to the device, once;
    the same for the data's own validation set, which must have the same columns."""
    if not isinstance(data, Dataset):
        raise DataError(f"the data component returned {type(data).__name__}, not framework.Dataset")
    prepared = prepare_rows(data, "data", dtype=dtype, device=device)
    validation = data.validation
    if validation is None:
        return prepared
    where = f" ({data.source})" if data.source else ""
    if not isinstance(validation, Dataset):
        raise DataError(f"the data component's validation set{where} is {type(validation).__name__}, "
                        "not framework.Dataset")
    if validation.validation is not None:
        raise DataError(f"the data component's validation set{where} has a validation set of its own; "
                        "give one level only")
    held_out = prepare_rows(validation, "validation data", dtype=dtype, device=device)
    for role in ("features", "targets"):
        columns, held_out_columns = getattr(prepared, role).shape[1], getattr(held_out, role).shape[1]
        if columns != held_out_columns:
            raise DataError(f"the validation data{where} have {held_out_columns} {role} column(s) but the "
                            f"training data have {columns}; they must have the same columns")
    prepared.validation = held_out
    return prepared


def prepare_rows(data: Dataset, what: str, *, dtype: torch.dtype, device: torch.device) -> Dataset:
    """One Dataset's features and targets checked, as columns of ``dtype`` on ``device``;
    ``what`` names it in messages (``data``, ``validation data``)."""
    where = f" ({data.source})" if data.source else ""
    columns = {}
    for role, tensor in (("features", data.features), ("targets", data.targets)):
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor)
        if tensor.dim() == 1:
            tensor = tensor.unsqueeze(1)
        if tensor.dim() != 2:
            raise DataError(f"{what} {role}{where} must be 1-D or 2-D, got shape {tuple(tensor.shape)}")
        if tensor.is_complex():
            raise DataError(f"{what} {role}{where} are complex numbers ({tensor.dtype}); only real data can be fitted")
        if not tensor.is_floating_point():
            # Integer targets would make the loss integer and gradients impossible: convert, and say so.
            log.info("%s %s%s are %s; converted to %s", what, role, where, tensor.dtype, dtype)
        tensor = tensor.to(dtype=dtype)
        bad = (~torch.isfinite(tensor)).sum().item()
        if bad:
            raise DataError(f"{what} {role}{where} hold {bad} value(s) that are NaN or infinite")
        columns[role] = tensor
    features, targets = columns["features"], columns["targets"]
    if features.shape[0] == 0:
        raise DataError(f"the {what}{where} have no rows")
    if features.shape[0] != targets.shape[0]:
        raise DataError(
            f"{what}{where} have {features.shape[0]} feature rows but {targets.shape[0]} target rows"
        )
    return Dataset(features.to(device), targets.to(device), data.source)


def held_out_count(rows: int, fraction: float) -> int:
    """How many of ``rows`` ``data.val_fraction`` holds out: ⌈fraction × rows⌉, on the decimal
    value as written (0.1 × 30 is 3, not the 4 that float arithmetic would round up to)."""
    return math.ceil(Fraction(repr(float(fraction))) * rows)


def validation_split(rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows) as sorted CPU index tensors: the validation rows are the
    first :func:`held_out_count` of ``torch.randperm(rows)`` drawn by a generator of its own,
    seeded with ``seed + VALIDATION_SEED_OFFSET``; the training rows are the rest. Sorted, so
    both keep the data's row order."""
    generator = torch.Generator().manual_seed(seed + VALIDATION_SEED_OFFSET)
    order = torch.randperm(rows, generator=generator)
    count = held_out_count(rows, fraction)
    return order[count:].sort().values, order[:count].sort().values


def split_off_validation(data: Dataset, fraction: float | None, *, seed: int) -> Dataset:
    """The prepared ``data`` with ``fraction`` of its rows moved into its validation set
    (``data.val_fraction``); null or 0 returns ``data`` itself, untouched."""
    if not fraction:
        return data
    where = f" ({data.source})" if data.source else ""
    if data.validation is not None:
        raise ConfigError(
            f"data.val_fraction={fraction:g} asks to hold out rows, but the data component gives its own "
            f"validation set{where} ({len(data.validation)} rows); leave data.val_fraction null to validate "
            "on that set (one validation set per run)"
        )
    rows = len(data)
    kept, held_out = validation_split(rows, fraction, seed)
    if len(kept) == 0:
        allowed = (f"with {rows} rows it can be at most {(rows - 1) / rows:.4g} (it holds out ⌈fraction × rows⌉)"
                   if rows > 1 else "one row cannot be split: leave data.val_fraction null")
        raise ConfigError(f"data.val_fraction={fraction:g} holds out all {rows} row(s) of the data{where}, "
                          f"leaving no row to train on; {allowed}")
    device = data.features.device
    kept, held_out = kept.to(device), held_out.to(device)
    log.info("holding out %d of %d rows for validation (data.val_fraction=%g)", len(held_out), rows, fraction)
    validation = Dataset(data.features[held_out], data.targets[held_out], f"{data.source} validation rows".strip())
    return Dataset(data.features[kept], data.targets[kept], data.source, validation=validation)
