"""The pieces of framework/distributed.py that need no second process (tests/cli/test_distributed.py
runs real ranks): the strategy, the shards, and how a loss reduces over rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framework.distributed import (LAUNCH_ENV, block, command_line_strategy, rows_reduction, shared_gpu_message,
                                  sharing_ranks, wants_ddp)
from framework.errors import ConfigError
from framework_plugins.losses import sum_squared_error

TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_env(monkeypatch):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)


def test_one_process_unless_a_launcher_started_several(no_launcher):
    assert not wants_ddp("auto") and not wants_ddp("single")


def test_ddp_without_a_launcher_says_to_use_torchrun(no_launcher):
    with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node=2 -m framework"):
        wants_ddp("ddp")


def test_under_torchrun_auto_and_ddp_train_in_parallel_and_single_does_not(torchrun_env):
    assert wants_ddp("auto") and wants_ddp("ddp") and not wants_ddp("single")


def test_auto_with_one_launched_process_is_one_process(torchrun_env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not wants_ddp("auto") and wants_ddp("ddp")


def test_an_unknown_strategy_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"trainer.strategy='dp' is not a strategy; use auto \| ddp \| single"):
        wants_ddp("dp")


def test_the_strategy_is_read_from_the_command_line_before_hydra():
    assert command_line_strategy(["+task=linear"]) == "auto"
    assert command_line_strategy(["trainer.strategy=single", "++trainer.strategy=ddp"]) == "ddp"


@pytest.mark.parametrize("rows, world", [(12, 2), (11, 2), (5, 2), (7, 3), (2, 2)])
def test_blocks_cover_a_batch_in_order_with_sizes_one_apart(rows, world):
    blocks = [block(rows, rank, world) for rank in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == rows
    assert all(left[1] == right[0] for left, right in zip(blocks, blocks[1:]))
    sizes = [stop - start for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_how_a_loss_reduces_over_rows_is_measured():
    targets = torch.randn(6, 1)
    assert rows_reduction(F.mse_loss, targets) == "mean"
    assert rows_reduction(F.l1_loss, targets) == "mean"
    assert rows_reduction(sum_squared_error, targets) == "sum"
    with pytest.raises(ConfigError, match="neither a mean nor a sum over rows"):
        rows_reduction(lambda predictions, targets: (predictions - targets).abs().max(), targets)


def test_the_weights_make_the_single_process_gradient_from_unequal_blocks():
    # What the communication hook sums: each block's gradient times its weight.
    torch.manual_seed(0)
    features, targets = torch.randn(11, 3), torch.randn(11, 1)
    weight = torch.randn(1, 3, requires_grad=True)
    for loss_fn, reduction in ((F.mse_loss, "mean"), (sum_squared_error, "sum")):
        whole = torch.autograd.grad(loss_fn(features @ weight.T, targets), weight)[0]
        combined = torch.zeros_like(weight)
        for rank in range(2):
            start, stop = block(len(features), rank, 2)
            share = (stop - start) / len(features) if reduction == "mean" else 1.0
            part = loss_fn(features[start:stop] @ weight.T, targets[start:stop])
            combined += share * torch.autograd.grad(part, weight)[0]
        torch.testing.assert_close(combined, whole)


@pytest.mark.parametrize("gpus,shared", [
    ([], None), ([7], None), ([3, 5, 9], None),
    ([4, 4], (0, 1)),  # two ranks on a machine with one GPU: LOCAL_RANK % 1 gives both GPU 0
    ([1, 2, 1, 2], (0, 2)),  # four ranks on two GPUs: the first pair that shares is named
])
def test_ranks_that_would_share_a_gpu_are_found(gpus, shared):
    assert sharing_ranks(gpus) == shared


def test_ranks_sharing_a_gpu_are_told_how_many_processes_fit_on_that_machine():
    message = shared_gpu_message((1, 3), "NVIDIA H100", "cuda", gpus_there=2)
    assert message.startswith("ranks 1 and 3 would share one GPU (NVIDIA H100), and NCCL needs a GPU for each rank")
    assert "start at most 2 process(es) on rank 3's machine (torchrun --nproc_per_node=2)" in message
    assert message.endswith("trainer.device=cpu")


def test_ranks_sharing_a_gpu_named_by_number_are_told_to_let_each_take_its_own():
    message = shared_gpu_message((0, 1), "NVIDIA H100", "cuda:0", gpus_there=8)
    assert "trainer.device=cuda:0 gives every rank that GPU; use trainer.device=cuda" in message
    assert "nproc_per_node" not in message
