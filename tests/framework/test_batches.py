"""Shuffled epochs drawn ahead on another thread (framework.batches.NextEpoch) give the orders and
batches drawn in turn, and a checkpoint inside an epoch the generator as drawing in turn leaves it."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from framework.batches import NextEpoch, next_batch
from framework.state import Progress

ROWS, BATCH = 10, 4  # batches of 4, 4 and 2 rows: 3 steps an epoch


class Rows:
    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.features)


def shuffled_run(epochs: int) -> SimpleNamespace:
    features = torch.arange(ROWS * 2, dtype=torch.float32).view(ROWS, 2)
    return SimpleNamespace(data=Rows(features, features[:, :1] * 10), steps_per_epoch=3, batch_size=BATCH,
                           shuffle=True, max_steps=3 * epochs)


def in_turn(epochs: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(ROWS, generator=generator) for _ in range(epochs)]


def train_step(run, progress: Progress):
    """A step's batch, and the step counted as the loop counts it."""
    batch = next_batch(run, progress)
    progress.step += 1
    return batch


def test_orders_drawn_ahead_are_the_orders_drawn_in_turn_and_the_batches_their_rows():
    run = shuffled_run(epochs=4)
    progress = Progress(shuffle_generator=torch.Generator().manual_seed(0))
    for epoch, order in enumerate(in_turn(4)):
        batches = [train_step(run, progress) for _ in range(3)]
        assert torch.equal(progress.order, order), epoch
        assert torch.equal(torch.cat([features for features, _ in batches]), run.data.features[order])
        assert torch.equal(torch.cat([targets for _, targets in batches]), run.data.targets[order])
        # the next epoch is drawn ahead while this one trains, but not after the last one
        assert isinstance(progress.next_epoch, NextEpoch) == (epoch < 3)


def test_a_checkpoint_inside_an_epoch_holds_the_generator_as_drawing_in_turn_leaves_it():
    run = shuffled_run(epochs=3)
    progress = Progress(shuffle_generator=torch.Generator().manual_seed(0))
    train_step(run, progress)  # epoch 1 drawn, epoch 2 being drawn ahead
    generator = torch.Generator().manual_seed(0)
    torch.randperm(ROWS, generator=generator)
    assert torch.equal(progress.state_dict()["shuffle_generator"], generator.get_state())
    saved = progress.state_dict()
    for _ in range(5):
        train_step(run, progress)
    resumed = Progress(shuffle_generator=torch.Generator().manual_seed(123))
    resumed.load_state_dict(saved)
    batches = [train_step(run, resumed) for _ in range(5)]
    assert torch.equal(resumed.order, progress.order)
    assert torch.equal(resumed.shuffle_generator.get_state(), progress.shuffle_generator.get_state())
    assert len(batches) == 5


def test_an_order_drawn_ahead_from_another_generator_state_is_not_taken():
    # A resume loads the generator's state between two epochs: the draw made ahead from the old
    # state is dropped, and the epoch draws from the state it has.
    run = shuffled_run(epochs=3)
    progress = Progress(shuffle_generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        train_step(run, progress)
    progress.shuffle_generator.manual_seed(7)
    train_step(run, progress)
    assert torch.equal(progress.order, in_turn(1, seed=7)[0])


def test_rows_drawn_ahead_are_gathered_again_when_the_data_changed_in_place():
    run = shuffled_run(epochs=2)
    progress = Progress(shuffle_generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        train_step(run, progress)
    progress.next_epoch.thread.join()
    run.data.features.mul_(-1)  # after the rows were gathered ahead
    features, _ = train_step(run, progress)
    assert torch.equal(features, run.data.features[in_turn(2)[1][:BATCH]])
