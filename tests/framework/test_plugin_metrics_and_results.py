"""Plugins add metrics to logging steps (``framework_metrics``) and fields to result.json
(``framework_result``); neither may replace what the loop or another plugin gives."""

from __future__ import annotations

import json

import pytest

from framework import hookimpl
from framework.errors import PluginError
from framework.outputs import PLUGIN_RESULT_FIELDS


class DoubleLoss:
    """Gives ``test/double_loss`` = 2 × train/loss at every logging step, and a result field."""

    def __init__(self, tag: str = "test/double_loss", field: str = "optimal_loss") -> None:
        self.tag, self.field = tag, field

    @hookimpl
    def framework_metrics(self, state, step, metrics):
        return {self.tag: 2 * metrics["train/loss"]}

    @hookimpl
    def framework_result(self, state, result):
        return {self.field: result["final_loss"] / 2}


# loss=l1: not a least-squares fit, so the built-in optimality_gap plugin adds no metric or field.
NOT_LEAST_SQUARES = "loss=l1"


def test_plugin_metrics_reach_every_logger_and_result_fields_reach_result_json(manager, recorder, train, tmp_path):
    manager.register_plugin(DoubleLoss(), "doubler", "test")
    result = train(["+task=linear", NOT_LEAST_SQUARES, "trainer.max_steps=20", "trainer.log_every=5", "logger=[]"],
                   run_dir=tmp_path)
    logged = [call[2] for call in recorder.calls if call[0] == "log"]
    assert [len(metrics) for metrics in logged] == [4] * 5  # steps 1, 5, 10, 15, 20
    assert all(metrics["test/double_loss"] == 2 * metrics["train/loss"] for metrics in logged)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["optimal_loss"] == result["optimal_loss"] == result["final_loss"] / 2


def test_result_fields_no_plugin_gives_are_null(train, tmp_path):
    train(["+task=linear", NOT_LEAST_SQUARES, "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    written = json.loads((tmp_path / "result.json").read_text())
    assert {field: written[field] for field in PLUGIN_RESULT_FIELDS} == dict.fromkeys(PLUGIN_RESULT_FIELDS)


def test_a_plugin_metric_that_shadows_the_loops_fails_the_run(manager, train, tmp_path):
    manager.register_plugin(DoubleLoss(tag="train/loss"), "shadow", "test")
    with pytest.raises(PluginError, match="'train/loss' is given twice at step 1"):
        train(["+task=linear", "trainer.max_steps=3", "logger=[]", "callback=[early_stopping]"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("field", ["final_loss", "status"])
def test_a_plugin_may_not_replace_the_loops_result_fields(field, manager, recorder, train, tmp_path):
    manager.register_plugin(DoubleLoss(field=field), "shadow", "test")
    with pytest.raises(PluginError, match=f"result field '{field}'"):
        train(["+task=linear", "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "failed" and f"'{field}'" in written["error"] and written["steps"] == 3
    assert recorder.calls[-1] == ("fit_end", "failed")
