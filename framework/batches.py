"""Full batches or shuffled minibatches, by index slicing on the device (no DataLoader)."""

from __future__ import annotations

import torch

from framework.state import BuiltRun, Progress


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
    start = progress.batch_index * run.batch_size
    stop = start + run.batch_size
    progress.batch_index += 1
    if progress.batch_index == per_epoch:
        progress.batch_index = 0
        progress.epoch += 1
    if progress.order is None:  # in order: slices are views
        return data.features[start:stop], data.targets[start:stop]
    rows = progress.order[start:stop]
    return data.features[rows], data.targets[rows]
