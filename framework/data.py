"""The training data container, and the checks that make any data source's output usable."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from framework.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Features (N, F) and targets (N, T), as a data component returns them.

    A data component may return 1-D tensors; :func:`prepare_dataset` makes them columns.
    ``source`` says where the data came from, for messages.
    """

    features: torch.Tensor
    targets: torch.Tensor
    source: str = ""

    def __len__(self) -> int:
        return self.features.shape[0]


def prepare_dataset(data: Dataset, *, dtype: torch.dtype, device: torch.device) -> Dataset:
    """Check shapes and values, convert to the run's float dtype and move to the device, once."""
    if not isinstance(data, Dataset):
        raise DataError(f"the data component returned {type(data).__name__}, not framework.Dataset")
    where = f" ({data.source})" if data.source else ""
    columns = {}
    for role, tensor in (("features", data.features), ("targets", data.targets)):
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor)
        if tensor.dim() == 1:
            tensor = tensor.unsqueeze(1)
        if tensor.dim() != 2:
            raise DataError(f"data {role}{where} must be 1-D or 2-D, got shape {tuple(tensor.shape)}")
        if tensor.is_complex():
            raise DataError(f"data {role}{where} are complex numbers ({tensor.dtype}); only real data can be fitted")
        if not tensor.is_floating_point():
            # Integer targets would make the loss integer and gradients impossible: convert, and say so.
            log.info("data %s%s are %s; converted to %s", role, where, tensor.dtype, dtype)
        tensor = tensor.to(dtype=dtype)
        bad = (~torch.isfinite(tensor)).sum().item()
        if bad:
            raise DataError(f"data {role}{where} hold {bad} value(s) that are NaN or infinite")
        columns[role] = tensor
    features, targets = columns["features"], columns["targets"]
    if features.shape[0] == 0:
        raise DataError(f"the data{where} have no rows")
    if features.shape[0] != targets.shape[0]:
        raise DataError(
            f"data{where} have {features.shape[0]} feature rows but {targets.shape[0]} target rows"
        )
    return Dataset(features.to(device), targets.to(device), data.source)
