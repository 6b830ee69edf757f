"""Exact comparisons of saved runs (atol = rtol = 0), shared by the resume tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from framework.checkpoints import latest_checkpoint

CURVE_TAGS = ("train/loss", "train/lr", "train/grad_norm")


def assert_identical(left, right, where: str = "") -> None:
    """Tensors equal bit for bit (dtype included), containers alike, numbers equal (NaN = NaN)."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and left.dtype == right.dtype, where
        assert torch.equal(left, right), where
    elif isinstance(left, dict):
        assert isinstance(right, dict) and sorted(left, key=str) == sorted(right, key=str), where
        for key in left:
            assert_identical(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, (list, tuple)):
        assert type(left) is type(right) and len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_identical(a, b, f"{where}[{index}]")
    elif isinstance(left, float) and math.isnan(left):
        assert isinstance(right, float) and math.isnan(right), where
    else:
        assert left == right, f"{where}: {left!r} != {right!r}"


def final_checkpoint(run_dir: Path) -> dict:
    return torch.load(latest_checkpoint(run_dir), weights_only=True)


def result_without_time(run_dir: Path) -> dict:
    result = json.loads((Path(run_dir) / "result.json").read_text())
    result.pop("wall_s")
    return result


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: each curve's (step, value) points, after its purge of steps that
    a resumed run logged again."""
    accumulator = events(run_dir)
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in CURVE_TAGS}


def hparams_data(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    """The hparams plugin's summaries of a run, by tag, decoded (TensorBoard reads the first of
    each tag; compare them decoded: the serialised order of their maps varies by process)."""
    content = accumulator.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    """The final parameters and optimizer state, result.json apart from wall time, the logged
    curves and the HParams session are identical."""
    left, right = final_checkpoint(resumed), final_checkpoint(uninterrupted)
    for part in ("model", "optimizer", "scheduler", "progress", "plugins"):
        assert_identical(left[part], right[part], part)
    assert result_without_time(resumed) == result_without_time(uninterrupted)
    assert curves(resumed) == curves(uninterrupted)
    assert hparams_data(events(resumed)) == hparams_data(events(uninterrupted))
