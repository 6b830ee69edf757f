"""The shuffled order of an epoch (framework/batches.py)."""

import pytest
import torch

from framework.batches import order_dtype


@pytest.mark.parametrize("rows", [2, 20, 1_000_003, 2**24 + 5])
def test_a_cpu_shuffle_in_int32_is_the_int64_permutation(rows):
    # The framework draws its CPU order in int32 (faster); a plain loop's torch.randperm(rows)
    # draws int64. Both from the same generator state must give the same rows, and leave the
    # generator where the other leaves it (the next epoch's order).
    assert order_dtype(rows, torch.device("cpu")) == torch.int32
    ours, plain = torch.Generator().manual_seed(rows), torch.Generator().manual_seed(rows)
    for _ in range(2):
        order = torch.randperm(rows, generator=ours, dtype=order_dtype(rows, torch.device("cpu")))
        assert order.dtype == torch.int32
        assert torch.equal(order.long(), torch.randperm(rows, generator=plain))


def test_rows_beyond_int32_and_other_devices_keep_int64():
    assert order_dtype(2**31, torch.device("cpu")) == torch.int64
    assert order_dtype(2**31 - 1, torch.device("cpu")) == torch.int32
    assert order_dtype(100, torch.device("cuda")) == torch.int64
