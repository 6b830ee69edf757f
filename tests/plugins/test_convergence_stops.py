"""The convergence stops (trainer.tol.*, trainer.max_time) fire at the step a plain loop computing
the same criterion finds, say what they saw, cost no hook call when unset, and a resumed run stops
where an uninterrupted one does."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from framework import ConfigError, hookimpl
from tests.conftest import run_cli
from tests.framework import test_resume
from tests.framework.compare import assert_same_run, final_checkpoint
from tests.framework.test_resume import interrupted_then_resumed

ctrl_c_raises = test_resume.ctrl_c_raises  # a fixture

PUZZLE_STEPS = 2000


def plain_puzzle(stop, grad_clip=None, sgd_lr=None):
    """The puzzle preset's loop written plainly (tests/framework/test_reference_tasks.py), run
    until ``stop(step, loss, grad_norm, largest_change)`` says so: (step, what stop returned)."""
    M = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]])
    rhs = torch.tensor([9.0, 1, 8, 2])
    torch.manual_seed(0)
    w = torch.rand(4, requires_grad=True)
    optimizer = torch.optim.NAdam([w], lr=0.01) if sgd_lr is None else torch.optim.SGD([w], lr=sgd_lr)
    for step in range(1, PUZZLE_STEPS + 1):
        loss = ((M @ w - rhs) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        if grad_clip is None:
            grad_norm = torch.linalg.vector_norm(w.grad).item()
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_([w], grad_clip).item()  # the norm before clipping
        before = w.detach().clone()
        optimizer.step()
        change = (w.detach() - before).abs().max().item()
        seen = stop(step, loss.item(), grad_norm, change)
        if seen is not None:
            return step, seen
    raise AssertionError("the plain loop never meets the criterion")


def rel_loss_rule(threshold, window):
    """scipy L-BFGS-B's ftol test between the loss `window` steps earlier and this step's."""
    losses = {}

    def stop(step, loss, grad_norm, change):
        losses[step] = loss
        if step > window:
            old = losses[step - window]
            relative = abs(old - loss) / max(abs(old), abs(loss), 1)
            if relative < threshold:
                return relative
        return None

    return stop


def train_puzzle(train, *overrides, run_dir=None):
    return train(["+task=puzzle", "logger=[]", *overrides], run_dir=run_dir)


@pytest.mark.parametrize("key", ["trainer.tol.loss", "trainer.tolerance"])
def test_loss_stops_at_the_first_step_at_or_below_it(train, key):
    step, seen = plain_puzzle(lambda step, loss, grad_norm, change: loss if loss <= 1e-3 else None)
    result = train_puzzle(train, f"{key}=1e-3")
    assert (result["status"], result["steps"]) == ("completed", step)
    assert result["stop_reason"] == f"loss {seen:.3g} <= 0.001"


@pytest.mark.parametrize("threshold, window", [(1e-4, 10), (1e-3, 1)])
def test_rel_loss_stops_where_the_ftol_test_over_the_window_first_holds(train, threshold, window):
    step, seen = plain_puzzle(rel_loss_rule(threshold, window))
    result = train_puzzle(train, f"trainer.tol.rel_loss={threshold}", f"trainer.tol.window={window}")
    assert result["steps"] == step
    assert result["stop_reason"] == f"rel_loss {seen:.3g} < {threshold:g} over {window} steps"


def test_grad_norm_stops_at_the_first_step_whose_gradient_norm_is_below_it(train):
    step, seen = plain_puzzle(lambda step, loss, grad_norm, change: grad_norm if grad_norm < 1e-2 else None)
    result = train_puzzle(train, "trainer.tol.grad_norm=1e-2")
    assert (result["steps"], result["stop_reason"]) == (step, f"grad_norm {seen:.3g} < 0.01")


def test_grad_norm_reads_the_norm_before_clipping(train):
    # Clipped to 0.5, every gradient the optimizer sees is below the threshold 1 from step 1.
    step, seen = plain_puzzle(lambda step, loss, grad_norm, change: grad_norm if grad_norm < 1 else None,
                              grad_clip=0.5, sgd_lr=0.05)
    result = train_puzzle(train, "trainer.tol.grad_norm=1", "trainer.grad_clip=0.5", "optimizer=sgd",
                          "optimizer.lr=0.05")
    assert (result["steps"], result["stop_reason"]) == (step, f"grad_norm {seen:.3g} < 1")
    assert step > 1


def test_step_stops_at_the_first_update_that_moves_no_parameter_by_as_much(train):
    step, seen = plain_puzzle(lambda step, loss, grad_norm, change: change if change < 1e-4 else None)
    result = train_puzzle(train, "trainer.tol.step=1e-4")
    assert (result["steps"], result["stop_reason"]) == (step, f"step {seen:.3g} < 0.0001")


def test_the_first_stop_met_ends_the_run_and_the_others_set_do_not_matter(train, recorder):
    first, _ = plain_puzzle(lambda step, loss, grad_norm, change: change if change < 1e-4 else None)
    result = train(["+task=puzzle", "trainer.tol.step=1e-4", "trainer.tol.grad_norm=1e-9", "trainer.tol.loss=1e-12",
                    "trainer.tol.rel_loss=1e-12", "trainer.max_time=1e9", "trainer.log_every=500"])
    assert result["steps"] == first and result["stop_reason"].startswith("step ")
    assert max(recorder.logged("train/loss")) == first  # the step that stopped the run is logged


class FakeClock:
    """One second passes at every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_max_time_stops_at_the_first_step_that_ends_past_it(train, monkeypatch):
    stops = importlib.import_module("framework_plugins.convergence_stops")
    monkeypatch.setattr(stops, "clock", FakeClock())
    # Read at the fit's start, then once at the end of every step: 1 s per step.
    result = train(["+task=linear", "logger=[]", "trainer.max_time=5.5"])
    assert (result["status"], result["steps"], result["stop_reason"]) == ("completed", 6, "max_time 6 s >= 5.5 s")


def test_max_time_counts_the_training_time_before_a_resume(train, tmp_path):
    stopped = train(["+task=linear", "trainer.max_time=1e-6"], run_dir=tmp_path)  # a step takes longer
    assert stopped["steps"] == 1 and stopped["stop_reason"].startswith("max_time ")
    spent = final_checkpoint(tmp_path)["plugins"]["convergence_stops.TimeStop"]["elapsed_s"]
    assert spent >= 1e-6
    # As a run resumed at its max_steps: no step is taken.
    again = train(["+task=linear", "trainer.max_time=1e-6", f"trainer.resume={tmp_path}"], run_dir=tmp_path)
    assert (again["status"], again["steps"]) == ("completed", 1)
    assert again["stop_reason"] == f"max_time {spent:.6g} s >= 1e-06 s"
    # Raised on resume, it lets the run go on.
    longer = train(["+task=linear", "trainer.max_time=1e6", f"trainer.resume={tmp_path}"], run_dir=tmp_path)
    assert (longer["steps"], longer["stop_reason"]) == (200, "max_steps")
    assert final_checkpoint(tmp_path)["plugins"]["convergence_stops.TimeStop"]["elapsed_s"] > spent


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(train, manager, tmp_path, ctrl_c_raises):
    overrides = ["+task=puzzle", "trainer.tol.rel_loss=1e-4", "trainer.tol.step=1e-6", "trainer.tol.grad_norm=1e-6",
                 "trainer.log_every=50"]
    straight = train(overrides, run_dir=tmp_path / "straight")
    assert straight["stop_reason"].startswith("rel_loss ")
    # Inside the last window: a resumed run that forgot the window's losses would stop later.
    resumed = interrupted_then_resumed(train, manager, overrides, tmp_path / "stopped", straight["steps"] - 4)
    assert (resumed["steps"], resumed["stop_reason"]) == (straight["steps"], straight["stop_reason"])
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")
    # TensorBoard's Text tab: only the reason the run ended for good, not the interruption's.
    assert [(event.step, event.tensor_proto.string_val[0].decode()) for event in stop_reason_texts(tmp_path / "stopped")] \
        == [(straight["steps"], f"`{straight['stop_reason']}`")]


def stop_reason_texts(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events.Tensors("result/stop_reason/text_summary")


def test_tolerance_and_tol_loss_set_differently_are_refused_before_any_work(train, recorder, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.tolerance=0.1 and trainer.tol.loss=0.2 are both set"):
        train(["+task=linear", "trainer.tolerance=0.1", "trainer.tol.loss=0.2"], run_dir=tmp_path)
    assert recorder.calls == []
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
    assert train(["+task=linear", "trainer.tolerance=0.1", "trainer.tol.loss=0.1", "logger=[]"])["stop_reason"] \
        .startswith("loss ")


def test_only_the_stops_that_are_set_take_part_in_the_fit(train, manager):
    seen = []

    class Probe:
        @hookimpl
        def framework_fit_start(self, state):
            seen.append(sorted(impl.plugin_name for impl in manager.hook.framework_step_end.get_hookimpls()
                               if impl.plugin_name.startswith("convergence_stops.")))

    manager.register_plugin(Probe(), "probe", "test")
    train(["+task=linear", "trainer.max_steps=2", "logger=[]", "trainer.tol.window=3"])
    train(["+task=linear", "trainer.max_steps=2", "logger=[]", "trainer.tol.grad_norm=1e-9", "trainer.max_time=1e9"])
    train(["+task=linear", "trainer.max_steps=2", "logger=[]", "trainer.tol.loss=0", "trainer.tol.rel_loss=1e-9",
           "trainer.tol.grad_norm=1e-9", "trainer.tol.step=1e-9", "trainer.max_time=1e9"])
    prefix = "convergence_stops."
    assert seen == [[], [prefix + "GradNormStop", prefix + "TimeStop"],
                    sorted(prefix + name for name in ("LossStop", "RelLossStop", "GradNormStop", "StepStop", "TimeStop"))]


def test_the_stop_reason_is_in_result_json_on_the_console_and_in_tensorboard(train, tmp_path, caplog):
    step, seen = plain_puzzle(lambda step, loss, grad_norm, change: grad_norm if grad_norm < 1e-2 else None)
    reason = f"grad_norm {seen:.3g} < 0.01"
    with caplog.at_level("INFO", logger="framework"):
        train(["+task=puzzle", "trainer.tol.grad_norm=1e-2"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["stop_reason"] == reason
    assert re.search(rf"completed after {step} steps \({re.escape(reason)}\)", caplog.text)
    [text] = stop_reason_texts(tmp_path)
    assert text.step == step
    assert text.tensor_proto.string_val[0].decode() == f"`{reason}`"


def test_the_command_line_prints_the_stop_reason_and_refuses_two_loss_thresholds(tmp_path):
    completed = run_cli("+task=linear", "trainer.tol.loss=0.1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    reason = json.loads((tmp_path / "run" / "result.json").read_text())["stop_reason"]
    assert reason.startswith("loss ") and reason.endswith(" <= 0.1")
    assert f"({reason})" in completed.stdout + completed.stderr
    refused = run_cli("+task=linear", "trainer.tolerance=0.1", "trainer.tol.loss=0.2",
                      f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: trainer.tolerance=0.1 and trainer.tol.loss=0.2 are both set: "
                                      "trainer.tolerance is the older name of trainer.tol.loss; set only trainer.tol.loss")
