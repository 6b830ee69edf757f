"""Full batches or shuffled minibatches, by index slicing on the device (no DataLoader).

A shuffled epoch gathers its rows once, in the epoch's order, and hands out views of that copy:
one gather of the whole data per epoch instead of one indexing call per batch, which on the
CPU costs about as much as the step of a small model (bench/run.py's W4 case). The batches hold
the same rows in the same order either way. Data larger than ``GATHER_EPOCH_BYTES`` is gathered
batch by batch instead, so that a shuffled epoch never holds two copies of a large dataset.
"""

from __future__ import annotations

import torch

from framework.state import BuiltRun, Progress

GATHER_EPOCH_BYTES = 1 << 30  # a copy of up to 1 GiB of rows per epoch


def next_batch(run: BuiltRun, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
    """The next (features, targets) batch; advances ``batch_index``, ``epoch`` and ``order``."""
    data = run.data
    per_epoch = run.steps_per_epoch
    if per_epoch == 1:  # full batch: the same tensors every step, no copy
        progress.epoch += 1
        return data.features, data.targets
    if progress.batch_index == 0 and run.shuffle:
        progress.order = torch.randperm(
            len(data), generator=progress.shuffle_generator, device=data.features.device
        )
        progress.shuffled_rows = None
    start = progress.batch_index * run.batch_size
    stop = start + run.batch_size
    progress.batch_index += 1
    if progress.batch_index == per_epoch:
        progress.batch_index = 0
        progress.epoch += 1
    if progress.order is None:  # in order: slices are views
        return data.features[start:stop], data.targets[start:stop]
    if progress.shuffled_rows is None:
        if nbytes(data.features) + nbytes(data.targets) > GATHER_EPOCH_BYTES:
            rows = progress.order[start:stop]
            return data.features[rows], data.targets[rows]
        progress.shuffled_rows = (data.features[progress.order], data.targets[progress.order])
    features, targets = progress.shuffled_rows
    return features[start:stop], targets[start:stop]


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
