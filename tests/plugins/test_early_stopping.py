"""The early_stopping callback stops at the step a plain loop applying the same rule finds, and a
run stopped and resumed stops where an uninterrupted one does."""

from __future__ import annotations

import json
import math

import pytest
import torch

from framework import ConfigError
from tests.framework.compare import assert_same_run, events
from tests.framework.test_resume import ctrl_c_raises, interrupted_then_resumed  # noqa: F401 (a fixture)
from tests.plugins.test_validation import plain_polyfit_with_validation
from tests.polyfit import tutorial_quadratic

LOG_EVERY, MAX_STEPS = 10, 20000


def plain_polyfit_losses(steps: int) -> list[float]:
    """The polyfit preset's loop written plainly (tests/framework/test_reference_tasks.py): the
    loss of every step, as the step computed it."""
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    y = (x**2 + 2 * x + 3)[:, None]
    A, B, C = (torch.randn((), requires_grad=True) for _ in range(3))
    optimizer = torch.optim.NAdam([A, B, C], lr=0.01)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def plain_stop_step(losses: dict[int, float], every: int, min_delta: float, patience: int) -> int:
    """Keras' rule on the checked steps (1 and every ``every``): the step of the patience-th
    check in a row that did not beat the best by more than min_delta."""
    best, bad = math.inf, 0
    for step, loss in losses.items():
        if step != 1 and step % every:
            continue
        if loss < best - min_delta:
            best, bad = loss, 0
        else:
            bad += 1
            if bad == patience:
                return step
    raise AssertionError("the plain loop never stops")


@pytest.mark.parametrize("min_delta, patience", [(1e-3, 5), (1e-2, 3)])
def test_stops_at_the_step_a_plain_loop_applying_the_same_rule_finds(train, tmp_path, min_delta, patience):
    expected = plain_stop_step(dict(enumerate(plain_polyfit_losses(6000), 1)), LOG_EVERY, min_delta, patience)
    result = train(["+task=polyfit", f"trainer.max_steps={MAX_STEPS}", f"trainer.log_every={LOG_EVERY}",
                    "logger=[]", "callback=[early_stopping]", f"callback.early_stopping.min_delta={min_delta}",
                    f"callback.early_stopping.patience={patience}"], run_dir=tmp_path)
    assert result["status"] == "completed"
    assert result["steps"] == expected < MAX_STEPS
    assert result["stop_reason"].startswith("early_stopping: train/loss")
    assert json.loads((tmp_path / "result.json").read_text())["stop_reason"] == result["stop_reason"]


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(train, manager, tmp_path, ctrl_c_raises):  # noqa: F811
    overrides = ["+task=polyfit", f"trainer.max_steps={MAX_STEPS}", f"trainer.log_every={LOG_EVERY}",
                 "callback=[early_stopping]", "callback.early_stopping.min_delta=1e-3"]
    straight = train(overrides, run_dir=tmp_path / "straight")
    # After some checks without improvement were counted.
    resumed = interrupted_then_resumed(train, manager, overrides, tmp_path / "stopped", straight["steps"] - 25)
    assert (resumed["steps"], resumed["stop_reason"]) == (straight["steps"], straight["stop_reason"])
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")


def test_val_loss_without_a_validation_set_is_refused_before_the_first_step(train, recorder, tmp_path):
    with pytest.raises(ConfigError, match="callback.early_stopping.monitor=val/loss is not logged: this run has no "
                                          "validation set; hold out rows with data.val_fraction"):
        train(["+task=linear", "logger=[]", "callback=[early_stopping]", "callback.early_stopping.monitor=val/loss"],
              run_dir=tmp_path)
    assert "step_end" not in recorder.names()
    written = json.loads((tmp_path / "result.json").read_text())
    assert (written["status"], written["steps"]) == ("failed", 0) and "val/loss" in written["error"]


def test_a_monitor_that_is_never_logged_is_refused_at_step_1_naming_the_logged_metrics(train, tmp_path):
    with pytest.raises(ConfigError, match=r"callback.early_stopping.monitor=val/los is not logged; logged metrics: "
                                          r"train/grad_norm, train/loss, train/lr, train/optimality_gap, val/loss$"):
        train(["+task=linear", "logger=[]", "data.val_fraction=0.25", "callback=[early_stopping]",
               "callback.early_stopping.monitor=val/los"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 1


# ------------------------------------------------------------------ monitor=val/loss (plugins/validation.py)

VAL_OVERRIDES = ["+task=polyfit", f"trainer.max_steps={MAX_STEPS}", "data.val_fraction=0.2",
                 "callback=[early_stopping]", "callback.early_stopping.monitor=val/loss"]


# val_every 50 with log_every 10: checks at every 5th logging step only; 30 with 20: val steps
# that fall between logging steps.
@pytest.mark.parametrize("val_every, log_every, min_delta, patience", [(50, 10, 1e-3, 3), (30, 20, 1e-2, 4)])
def test_val_loss_stops_at_the_step_a_plain_loop_finds(train, tmp_path, val_every, log_every, min_delta, patience):
    # The same rule on the plain loop's validation losses (tests/plugins/test_validation.py).
    val_losses = plain_polyfit_with_validation(6000)["val_losses"]
    expected = plain_stop_step(val_losses, val_every, min_delta, patience)
    result = train([*VAL_OVERRIDES, f"trainer.val_every={val_every}", f"trainer.log_every={log_every}", "logger=[]",
                    f"callback.early_stopping.min_delta={min_delta}", f"callback.early_stopping.patience={patience}"],
                   run_dir=tmp_path)
    assert result["steps"] == expected < MAX_STEPS
    assert result["stop_reason"].startswith("early_stopping: val/loss")
    assert result["final_val_loss"] is not None


def test_a_resumed_run_stopping_on_val_loss_stops_where_an_uninterrupted_one_does(train, manager, tmp_path,
                                                                                  ctrl_c_raises):  # noqa: F811
    overrides = [*VAL_OVERRIDES, "trainer.val_every=50", f"trainer.log_every={LOG_EVERY}",
                 "callback.early_stopping.min_delta=1e-3", "callback.early_stopping.patience=3"]
    straight = train(overrides, run_dir=tmp_path / "straight")
    # Between validation steps, after a check without improvement.
    resumed = interrupted_then_resumed(train, manager, overrides, tmp_path / "stopped", straight["steps"] - 75)
    assert (resumed["steps"], resumed["stop_reason"]) == (straight["steps"], straight["stop_reason"])
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")
    val_curve = [[(event.step, event.value) for event in events(tmp_path / run).Scalars("val/loss")]
                 for run in ("stopped", "straight")]
    assert val_curve[0] == val_curve[1] and val_curve[0][-1][0] == straight["steps"]
