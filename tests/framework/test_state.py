"""The three parts of the loop's state: the built run, the progress and the stop request."""

from __future__ import annotations

import dataclasses
import random

import numpy
import torch

from framework import hookimpl
from framework.state import Progress, StopRequest


def draws():
    return random.random(), float(numpy.random.rand()), torch.rand(3)


def test_progress_round_trip_restores_position_and_every_random_stream():
    generator = torch.Generator().manual_seed(7)
    progress = Progress(step=12, epoch=3, batch_index=2, shuffle_generator=generator,
                        last_loss=0.5, last_loss_step=12)
    progress.order = torch.randperm(10, generator=generator)
    torch.manual_seed(1), random.seed(1), numpy.random.seed(1)
    saved = progress.state_dict()
    expected_draws, expected_order = draws(), torch.randperm(10, generator=generator)

    restored = Progress(shuffle_generator=torch.Generator().manual_seed(99))
    torch.manual_seed(5), random.seed(5), numpy.random.seed(5)  # scramble everything
    restored.load_state_dict(saved)
    assert (restored.step, restored.epoch, restored.batch_index) == (12, 3, 2)
    assert (restored.last_loss, restored.last_loss_step) == (0.5, 12)
    assert torch.equal(restored.order, progress.order)
    python_draw, numpy_draw, torch_draws = draws()
    assert (python_draw, numpy_draw) == expected_draws[:2]
    assert torch.equal(torch_draws, expected_draws[2])
    assert torch.equal(torch.randperm(10, generator=restored.shuffle_generator), expected_order)


def test_progress_state_loads_with_weights_only(tmp_path):
    path = tmp_path / "progress.pt"
    torch.save(Progress(shuffle_generator=torch.Generator()).state_dict(), path)
    loaded = torch.load(path, weights_only=True)
    Progress(shuffle_generator=torch.Generator()).load_state_dict(loaded)


def test_the_first_stop_request_wins_and_a_signal_marks_an_interruption():
    stop = StopRequest()
    assert not stop and not stop.interrupted
    assert stop.request("tolerance")
    assert not stop.request("interrupted", signal=2)
    assert (stop.reason, stop.interrupted) == ("tolerance", False)


def test_the_built_run_cannot_be_replaced(train, manager):
    refused = []

    class Replacer:
        @hookimpl
        def framework_fit_start(self, state):
            try:
                state.run.model = torch.nn.Linear(1, 1)
            except dataclasses.FrozenInstanceError:
                refused.append(True)

    manager.register_plugin(Replacer(), "replacer", "test")
    train(["+task=linear", "trainer.max_steps=1"])
    assert refused == [True]


class StopAtStep:
    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl
    def framework_step_end(self, state, loss):
        if state.progress.step == self.at:
            state.progress.stop.request("enough")


def test_a_plugin_stop_request_ends_the_run_at_that_step_and_logs_it(train, manager, recorder, tmp_path):
    manager.register_plugin(StopAtStep(7), "stopper", "test")
    result = train(["+task=linear", "trainer.log_every=5"], run_dir=tmp_path)
    assert (result["status"], result["steps"], result["stop_reason"]) == ("completed", 7, "enough")
    assert sorted(recorder.logged("train/loss")) == [1, 5, 7]


def test_tolerance_adds_its_plugin_only_when_set(train, manager):
    seen = {}

    class Probe:
        @hookimpl
        def framework_fit_start(self, state):
            seen["step_end"] = [impl.plugin_name for impl in manager.hook.framework_step_end.get_hookimpls()]

    manager.register_plugin(Probe(), "probe", "test")
    train(["+task=linear", "trainer.max_steps=2"])
    assert seen["step_end"] == []  # off: no hook call per step
    train(["+task=linear", "trainer.max_steps=2", "trainer.tolerance=1e-9"])
    assert seen["step_end"] == ["convergence_stops.LossStop"]
    # ... and only for that fit
    assert manager.hook.framework_step_end.get_hookimpls() == []
