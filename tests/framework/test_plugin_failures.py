"""A plugin that fails in any hook of a fit: the run is marked failed, the error names the plugin,
the hook and what was being trained, and every other plugin's fit_end still runs."""

from __future__ import annotations

import json

import pytest

from framework import hookimpl
from framework.errors import PluginError

FIT_HOOKS = ("framework_configure_step", "framework_fit_start", "framework_step_end", "framework_log",
             "framework_fit_end")


class Failing:
    """Raises ``failure`` from the hook named ``hook_name``; the other hooks do nothing."""

    def __init__(self, hook_name: str, failure: BaseException) -> None:
        self.hook_name, self.failure = hook_name, failure

    def fail(self, hook_name):
        if hook_name == self.hook_name:
            raise self.failure

    @hookimpl
    def framework_configure_step(self, state):
        self.fail("framework_configure_step")  # returns None: the default step is used

    @hookimpl
    def framework_fit_start(self, state):
        self.fail("framework_fit_start")

    @hookimpl
    def framework_step_end(self, state, loss):
        self.fail("framework_step_end")

    @hookimpl
    def framework_log(self, state, step, metrics):
        self.fail("framework_log")

    @hookimpl
    def framework_fit_end(self, state, result):
        self.fail("framework_fit_end")


@pytest.mark.parametrize("failure", [RuntimeError("boom"), SystemExit(0)], ids=["exception", "SystemExit(0)"])
@pytest.mark.parametrize("hook_name", FIT_HOOKS)
def test_a_failing_hook_names_plugin_hook_and_components_and_marks_the_run_failed(
        hook_name, failure, manager, recorder, train, tmp_path):
    # Registered after the recorder, so pluggy calls it first: the recorder's hooks come after.
    manager.register_plugin(Failing(hook_name, failure), "flaky", "test")
    with pytest.raises(PluginError) as raised:
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    message = str(raised.value)
    assert "'flaky'" in message and hook_name in message and "model linear" in message
    assert ("boom" in message) if isinstance(failure, RuntimeError) else ("SystemExit(0)" in message)

    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["stop_reason"] == "error"
    assert result["error"] == message
    # The other plugin's fit_end ran, and was told that the run failed.
    assert recorder.calls[-1] == ("fit_end", "failed")


def test_a_fit_end_failure_keeps_the_steps_and_the_final_loss(manager, recorder, train, tmp_path):
    manager.register_plugin(Failing("framework_fit_end", ValueError("late")), "flaky", "test")
    with pytest.raises(PluginError, match="'flaky' failed in framework_fit_end"):
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"] == 5 and result["final_loss"] is not None
    assert result["status"] == "failed"


def test_every_failing_fit_end_is_reported_and_the_first_one_stands(manager, train, tmp_path, caplog):
    manager.register_plugin(Failing("framework_fit_end", ValueError("first")), "one", "test")
    manager.register_plugin(Failing("framework_fit_end", ValueError("second")), "two", "test")
    with pytest.raises(PluginError, match="'two'.*second"):  # pluggy calls the last registered first
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert any("'one' failed in framework_fit_end" in record.getMessage() for record in caplog.records)


def test_a_failure_after_a_failed_run_does_not_hide_the_first_error(manager, recorder, train, tmp_path):
    manager.register_plugin(Failing("framework_fit_start", RuntimeError("start")), "early", "test")
    manager.register_plugin(Failing("framework_fit_end", RuntimeError("end")), "late", "test")
    with pytest.raises(PluginError, match="'early' failed in framework_fit_start"):
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert "'early'" in json.loads((tmp_path / "result.json").read_text())["error"]
    assert recorder.calls[-1] == ("fit_end", "failed")


def test_a_plugins_own_framework_error_is_kept_as_its_message(manager, train, tmp_path):
    from framework.errors import DataError

    manager.register_plugin(Failing("framework_fit_start", DataError("the data are stale")), "checker", "test")
    with pytest.raises(DataError, match="the data are stale"):
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["error"] == "the data are stale"


class ExitingStep:
    """A plugin's training step that calls sys.exit(0)."""

    @hookimpl
    def framework_configure_step(self, state):
        def step(features, targets):
            raise SystemExit(0)

        return step


def test_a_step_that_exits_fails_the_run_instead_of_ending_the_process(manager, train, tmp_path):
    from framework.errors import TrainingError

    manager.register_plugin(ExitingStep(), "exiting_step", "test")
    with pytest.raises(TrainingError, match="training failed at step 1: SystemExit"):
        train(["+task=linear", "trainer.max_steps=5", "logger=[]"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
