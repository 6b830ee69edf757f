"""Exact resume in process: a run stopped by a real SIGINT (or resumed from an earlier
checkpoint) and resumed ends identical to one that never stopped."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest
import torch

from framework import ConfigError, hookimpl
from framework.checkpoints import list_checkpoints
from framework.signals import Interrupted
from tests.framework.compare import assert_identical, assert_same_run, curves, final_checkpoint

# Each case: overrides, and the step at which the run is interrupted (between logging steps).
CASES = {
    "full batch, NAdam": (["+task=polyfit", "trainer.max_steps=60"], 23),
    "SGD with momentum and a cosine schedule": (
        ["+task=polyfit", "optimizer=sgd", "optimizer.lr=1e-4", "optimizer.momentum=0.9",
         "scheduler=cosine", "trainer.max_steps=60"], 37),
    "Adam, shuffled minibatches, mid-epoch": (
        ["+task=polyfit", "optimizer=adam", "optimizer.lr=0.05", "data.batch_size=6", "data.shuffle=true",
         "trainer.max_steps=60"], 25),  # 4 batches per epoch: step 25 is the first of epoch 7
    "NAdam, minibatches in order, step schedule": (
        ["+task=sine", "optimizer=nadam", "optimizer.lr=0.01", "data.batch_size=300", "scheduler=step",
         "scheduler.step_size=7", "trainer.max_steps=40"], 11),
    "LBFGS": (["+task=polyfit", "optimizer=lbfgs", "optimizer.lr=1", "trainer.max_steps=12"], 5),
    # Adagrad makes its state when it is built, not at its first step.
    "Adagrad with lr_decay": (["+task=polyfit", "optimizer=adagrad", "optimizer.lr=0.5", "optimizer.lr_decay=0.01",
                               "optimizer.initial_accumulator_value=0.1", "trainer.max_steps=40"], 17),
}
COMMON = ["trainer.log_every=5", "trainer.device=cpu"]


class SignalAt:
    """Sends this process a real SIGINT at one step, as a Ctrl-C would."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    @hookimpl
    def framework_step_end(self, state, loss):
        if state.progress.step == self.step:
            os.kill(os.getpid(), self.signum)


def interrupted_then_resumed(train, manager, overrides: list[str], run_dir, at_step: int, **train_options) -> dict:
    """Run ``overrides`` in ``run_dir`` until a real SIGINT at ``at_step``, then resume it there
    to its end: the resumed run's result, to compare with an uninterrupted run's."""
    stopper = SignalAt(at_step)
    manager.register_plugin(stopper, "stopper", "test")
    with pytest.raises(Interrupted):
        train(overrides, run_dir=run_dir, **train_options)
    manager.unregister(stopper)
    return train([*overrides, f"trainer.resume={run_dir}"], run_dir=run_dir, **train_options)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as a terminal's Ctrl-C has it, even when the tests run as a background job (which
    starts with SIGINT ignored, and the framework leaves an ignored signal ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("case", sorted(CASES))
def test_interrupted_and_resumed_equals_uninterrupted(case, train, manager, tmp_path, ctrl_c_raises):
    overrides, stop_at = CASES[case]
    overrides = [*overrides, *COMMON]
    train(overrides, run_dir=tmp_path / "straight", task=overrides[0][6:])

    stopper = SignalAt(stop_at)
    manager.register_plugin(stopper, "stopper", "test")
    with pytest.raises(Interrupted) as caught:
        train(overrides, run_dir=tmp_path / "stopped", task=overrides[0][6:])
    manager.unregister(stopper)
    assert caught.value.exit_code == 130
    result = json.loads((tmp_path / "stopped" / "result.json").read_text())
    assert (result["status"], result["steps"], result["stop_reason"]) == ("interrupted", stop_at, "SIGINT")
    assert [path.name for path in list_checkpoints(tmp_path / "stopped")] == [f"step_{stop_at:010d}.pt"]
    assert (tmp_path / "stopped" / "model.safetensors").is_file()

    train([*overrides, f"trainer.resume={tmp_path / 'stopped'}"], run_dir=tmp_path / "stopped",
          task=overrides[0][6:])
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")


def test_resuming_from_an_earlier_checkpoint_replaces_what_was_logged_after_it(train, tmp_path):
    """As after a SIGKILL: the folder holds events logged past the checkpoint resumed from."""
    overrides = ["+task=polyfit", "optimizer=sgd", "optimizer.lr=1e-4", "optimizer.momentum=0.9",
                 "trainer.max_steps=50", "trainer.checkpoint_every=10", "trainer.keep_checkpoints=null", *COMMON]
    train(overrides, run_dir=tmp_path / "straight", task="polyfit")
    train(overrides, run_dir=tmp_path / "twice", task="polyfit")
    # The curve of run "twice" goes to step 50; go back to step 20 and run again.
    checkpoint_20 = tmp_path / "twice" / "checkpoints" / f"step_{20:010d}.pt"
    before = final_checkpoint(tmp_path / "twice")
    train([*overrides, f"trainer.resume={checkpoint_20}"], run_dir=tmp_path / "twice", task="polyfit")
    assert_same_run(tmp_path / "twice", tmp_path / "straight")
    assert_identical(final_checkpoint(tmp_path / "twice")["model"], before["model"])
    steps = [step for step, _ in curves(tmp_path / "twice")["train/loss"]]
    assert steps == sorted(set(steps)) == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


def test_resuming_a_run_that_has_reached_its_limit_says_nothing_is_left(train, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="framework")
    overrides = ["+task=linear", "trainer.max_steps=30", *COMMON]
    train(overrides, run_dir=tmp_path, task="linear")
    result = train([*overrides, f"trainer.resume={tmp_path}"], run_dir=tmp_path, task="linear")
    assert result["steps"] == 30
    assert "nothing is left to train; raise it to go on" in caplog.text
    # The console's line says so too, where it announced "from step 30 to step 30".
    assert "linear: nothing to train: at step 30, the step limit is 30" in caplog.text
    assert "to step 30" not in caplog.text


def test_a_run_can_be_resumed_for_more_steps(train, tmp_path):
    short = ["+task=linear", "trainer.max_steps=100", *COMMON]
    train(short, run_dir=tmp_path / "run", task="linear")
    train([*short, "trainer.max_steps=200", f"trainer.resume={tmp_path / 'run'}"], run_dir=tmp_path / "run",
          task="linear")
    train(["+task=linear", "trainer.max_steps=200", *COMMON], run_dir=tmp_path / "straight", task="linear")
    left, right = final_checkpoint(tmp_path / "run"), final_checkpoint(tmp_path / "straight")
    assert_identical(left["model"], right["model"])
    assert_identical(left["optimizer"], right["optimizer"])


@pytest.mark.parametrize("change, named", [
    ("optimizer.lr=0.1", "optimizer.lr=0.01 there but 0.1 here"),
    ("trainer.seed=1", "trainer.seed=0 there but 1 here"),
    ("optimizer=adam", "optimizer nadam there, adam here"),
])
def test_a_resume_with_other_settings_is_refused_by_name(train, tmp_path, change, named):
    overrides = ["+task=polyfit", "trainer.max_steps=5", *COMMON]
    train(overrides, run_dir=tmp_path, task="polyfit")
    before = (tmp_path / "result.json").read_text()
    with pytest.raises(ConfigError) as caught:
        train([*overrides, change, f"trainer.resume={tmp_path}"], run_dir=tmp_path, task="polyfit")
    assert named in str(caught.value)
    assert (tmp_path / "result.json").read_text() == before  # the run's record is kept


def test_a_checkpoint_of_another_task_is_refused(train, tmp_path):
    train(["+task=polyfit", "trainer.max_steps=3"], run_dir=tmp_path / "a", task="polyfit")
    with pytest.raises(ConfigError, match="checkpoint of task polyfit, not of linear; resume it with"):
        train(["+task=linear", f"trainer.resume={tmp_path / 'a'}"], run_dir=tmp_path / "b", task="linear")


def test_a_checkpoint_of_another_model_shape_is_refused_naming_the_parameter(train, tmp_path):
    csv_3 = tmp_path / "three.csv"
    csv_3.write_text("a,b,y\n1,2,3\n2,3,5\n4,1,5\n")
    common = ["+task=linear2d", "data=csv", f"data.path={csv_3}", "trainer.max_steps=3"]
    train(common, run_dir=tmp_path / "run", task="linear2d")
    csv_3.write_text("a,b,c,y\n1,2,0,3\n2,3,0,5\n4,1,0,5\n")  # the same file now has 3 features
    with pytest.raises(ConfigError, match=r"weight has shape \[1, 2\] there but \[1, 3\] in this run's model"):
        train([*common, f"trainer.resume={tmp_path / 'run'}"], run_dir=tmp_path / "run", task="linear2d")


def test_resume_and_init_from_together_are_refused(train, tmp_path):
    with pytest.raises(ConfigError, match="choose one"):
        train(["+task=linear", f"trainer.resume={tmp_path}", f"trainer.init_from={tmp_path}"])


def test_a_folder_without_checkpoints_is_refused(train, tmp_path):
    with pytest.raises(ConfigError, match="the folder has no checkpoint"):
        train(["+task=linear", f"trainer.resume={tmp_path}"])


def test_a_weights_file_given_to_resume_is_refused_naming_init_from(train, tmp_path):
    train(["+task=linear", "trainer.max_steps=5", *COMMON], run_dir=tmp_path, task="linear")
    weights = tmp_path / "model.safetensors"
    assert weights.is_file()
    with pytest.raises(ConfigError, match=r"weights alone, not a checkpoint.*trainer\.init_from starts a new run"):
        train(["+task=linear", "trainer.max_steps=10", f"trainer.resume={weights}", *COMMON])


class Counter:
    """A stateful per-fit plugin: its count is saved in checkpoints and given back on resume."""

    def __init__(self) -> None:
        self.steps = 0
        self.loaded = None

    @hookimpl
    def framework_step_end(self, state, loss):
        self.steps += 1

    @hookimpl
    def framework_state_dict(self, state):
        return {"steps": self.steps, "seen": torch.tensor([self.steps])}

    @hookimpl
    def framework_load_state_dict(self, state, state_dict):
        self.loaded = state_dict
        self.steps = state_dict["steps"]


def test_plugin_states_are_saved_and_given_back_by_plugin_name(train, manager, tmp_path):
    first = Counter()
    manager.register_plugin(first, "counter", "test")
    train(["+task=linear", "trainer.max_steps=30"], run_dir=tmp_path, task="linear")
    manager.unregister(first)
    saved = final_checkpoint(tmp_path)["plugins"]
    assert saved["counter"]["steps"] == 30 and "logger.tensorboard" in saved

    second = Counter()
    manager.register_plugin(second, "counter", "test")
    train(["+task=linear", "trainer.max_steps=50", f"trainer.resume={tmp_path}"], run_dir=tmp_path, task="linear")
    assert second.loaded["steps"] == 30 and torch.equal(second.loaded["seen"], torch.tensor([30]))
    assert second.steps == 50


def test_a_resume_in_the_same_process_and_second_writes_an_event_file_that_sorts_after_the_first(train, tmp_path):
    # TensorBoard reads event files in name order; names start with their second, and within one
    # process and second a per-process counter (…9, …10) could sort the resumed run's file first.
    # The figures are written by the figure writer process, in an event file of its own, which
    # must sort after the run's and before the resumed run's (whose purge then applies to it).
    from framework_plugins._event_files import EVENT_FILE_PREFIX, event_file_second
    from framework_plugins._figure_writer import wait_for_figures

    overrides = ["+task=linear", "logger=[tensorboard]", "trainer.log_every=5"]
    train([*overrides, "trainer.max_steps=10"], run_dir=tmp_path)
    train([*overrides, "trainer.max_steps=20", f"trainer.resume={tmp_path}"], run_dir=tmp_path)
    wait_for_figures(tmp_path)
    in_name_order = sorted(tmp_path.glob(EVENT_FILE_PREFIX + "*"))
    ours = f".{os.getpid()}."
    assert [ours in path.name for path in in_name_order] == [True, False, True, False], in_name_order
    first, resumed = (event_file_second(path) for path in in_name_order if ours in path.name)
    assert resumed > first
    assert [step for step, _ in curves(tmp_path)["train/loss"]] == [1, 5, 10, 15, 20]


def test_an_optimizer_state_numbered_one_parameter_at_a_time_is_refused_by_name(train, tmp_path):
    """A checkpoint whose optimizer held polyfit's coefficients one by one (written before they
    were one flat tensor, framework/flat_parameters.py) does not fit: said, not a ValueError."""
    train(["+task=polyfit", "trainer.max_steps=10", "logger=[]"], run_dir=tmp_path)
    (path,) = list_checkpoints(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    coefficients = [torch.zeros((), requires_grad=True) for _ in range(3)]
    one_by_one = torch.optim.NAdam(coefficients, lr=0.01)
    for coefficient in coefficients:
        coefficient.grad = torch.ones(())
    one_by_one.step()
    checkpoint["optimizer"] = one_by_one.state_dict()
    torch.save(checkpoint, path)
    before = json.loads((tmp_path / "result.json").read_text())

    with pytest.raises(ConfigError, match="holds 3 tensor.* updates 1 .*trainer.init_from="):
        train(["+task=polyfit", "trainer.max_steps=20", "logger=[]", f"trainer.resume={tmp_path}"], run_dir=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text()) == before  # the run's record is kept


def test_a_polynomial_checkpoint_without_the_form_setting_resumes_as_the_sum_of_terms(train, tmp_path):
    """Checkpoints written before model.form existed computed the polynomial term by term."""
    common = ["+task=polyfit", "logger=[]", *COMMON]
    train([*common, "model.form=terms", "trainer.max_steps=20"], run_dir=tmp_path / "run", task="polyfit")
    for path in (tmp_path / "run" / "checkpoints").iterdir():
        old = torch.load(path, weights_only=True)
        del old["config"]["model"]["form"]
        torch.save(old, path)
    with pytest.raises(ConfigError, match=r"model.form='terms' there but 'matmul' here"):
        train([*common, "trainer.max_steps=40", f"trainer.resume={tmp_path / 'run'}"], run_dir=tmp_path / "run",
              task="polyfit")
    train([*common, "model.form=terms", "trainer.max_steps=40", f"trainer.resume={tmp_path / 'run'}"],
          run_dir=tmp_path / "run", task="polyfit")
    train([*common, "model.form=terms", "trainer.max_steps=40"], run_dir=tmp_path / "straight", task="polyfit")
    assert_identical(final_checkpoint(tmp_path / "run")["model"], final_checkpoint(tmp_path / "straight")["model"])
