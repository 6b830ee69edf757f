"""Full batches or shuffled minibatches, by index slicing on the device (no DataLoader)."""

from __future__ import annotations

import torch

from framework.state import LoopState


def next_batch(state: LoopState) -> tuple[torch.Tensor, torch.Tensor]:
    """The next (features, targets) batch; advances ``batch_index``, ``epoch`` and ``order``."""
    data = state.data
    per_epoch = state.steps_per_epoch
    if per_epoch == 1:  # full batch: the same tensors every step, no copy
        state.epoch += 1
        return data.features, data.targets
    if state.batch_index == 0 and state.shuffle:
        state.order = torch.randperm(
            len(data), generator=state.shuffle_generator, device=data.features.device
        )
    start = state.batch_index * state.batch_size
    stop = start + state.batch_size
    state.batch_index += 1
    if state.batch_index == per_epoch:
        state.batch_index = 0
        state.epoch += 1
    if state.order is None:  # in order: slices are views
        return data.features[start:stop], data.targets[start:stop]
    rows = state.order[start:stop]
    return data.features[rows], data.targets[rows]
