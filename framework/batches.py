"""Full batches or shuffled minibatches, by index slicing on the device (no DataLoader).

A shuffled epoch gathers its rows once, in the epoch's order, and hands out views of that copy:
one gather of the whole data per epoch instead of one indexing call per batch, which on the
CPU costs about as much as the step of a small model (bench/run.py's W4 case). The batches hold
the same rows in the same order either way. Data larger than ``GATHER_EPOCH_BYTES`` is gathered
batch by batch instead, so that a shuffled epoch never holds two copies of a large dataset.

On the CPU the next epoch's order, and its gathered rows, are drawn on another thread while this
epoch trains (:class:`NextEpoch`): torch's ``randperm`` and the gather release the GIL, so they
run on a second core, where they were a sixth of a 1M-row epoch of a small model. They are drawn
from a copy of the shuffle generator and taken only if the generator is still where the copy
started, which then moves on as the draw did: the orders, and so the run, are the ones drawn in
turn, and a checkpoint inside an epoch holds the generator as it was.
"""

from __future__ import annotations

import threading

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
        start_epoch(run, progress)
    start = progress.batch_index * run.batch_size
    stop = start + run.batch_size
    progress.batch_index += 1
    if progress.batch_index == per_epoch:
        progress.batch_index = 0
        progress.epoch += 1
    if progress.order is None:  # in order: slices are views
        return data.features[start:stop], data.targets[start:stop]
    if progress.shuffled_rows is None:
        if not gathers_epochs(data):
            rows = progress.order[start:stop]
            return data.features[rows], data.targets[rows]
        progress.shuffled_rows = (data.features[progress.order], data.targets[progress.order])
    features, targets = progress.shuffled_rows
    return features[start:stop], targets[start:stop]


def start_epoch(run: BuiltRun, progress: Progress) -> None:
    """Draw the shuffled epoch's order (or take the one drawn ahead), and draw the next one ahead
    where another epoch follows."""
    data, generator = run.data, progress.shuffle_generator
    ahead, progress.next_epoch = progress.next_epoch, None
    drawn = None if ahead is None else ahead.take(generator, data)
    if drawn is None:
        progress.order = torch.randperm(len(data), generator=generator, device=data.features.device)
        progress.shuffled_rows = None
    else:
        progress.order, progress.shuffled_rows = drawn
    if data.features.device.type == "cpu" and progress.step + run.steps_per_epoch < run.max_steps:
        progress.next_epoch = NextEpoch(generator, data, gather=gathers_epochs(data, copies=2))


class NextEpoch:
    """An epoch's order (and its rows, ``gather``) drawn on a thread of its own, from a copy of
    the shuffle generator."""

    def __init__(self, generator: torch.Generator, data, gather: bool) -> None:
        self.started_from = generator.get_state()
        self.generator = torch.Generator(device=generator.device)
        self.generator.set_state(self.started_from)
        # What the rows were gathered from: data changed in place since are gathered again.
        self.sources = (data.features, data.targets, data.features._version, data.targets._version)
        self.drawn: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None] | None = None
        self.thread = threading.Thread(target=self.draw, args=(len(data), gather), name="framework-next-epoch")
        self.thread.start()

    def draw(self, rows: int, gather: bool) -> None:
        features, targets = self.sources[:2]
        try:
            order = torch.randperm(rows, generator=self.generator, device=features.device)
            self.drawn = (order, (features[order], targets[order]) if gather else None)
        except Exception:  # the epoch draws its own order instead, and meets the error there if it lasts
            self.drawn = None

    def take(self, generator: torch.Generator, data):
        """(order, rows or None) as the generator would draw them now, which it is moved past; None
        where it is no longer where the draw started (a resume loaded another state) or the draw failed."""
        self.thread.join()
        if self.drawn is None or not torch.equal(generator.get_state(), self.started_from):
            return None
        generator.set_state(self.generator.get_state())
        order, rows = self.drawn
        if (data.features, data.targets, data.features._version, data.targets._version) != self.sources:
            rows = None
        return order, rows


def gathers_epochs(data, copies: int = 1) -> bool:
    """Whether ``copies`` gathered copies of the data fit in GATHER_EPOCH_BYTES."""
    return copies * (nbytes(data.features) + nbytes(data.targets)) <= GATHER_EPOCH_BYTES


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
