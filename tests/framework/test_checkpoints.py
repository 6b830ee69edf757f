"""Checkpoint files: names, pruning, atomic saves, contents, and loading that never runs code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from framework import ConfigError, hookimpl
from framework.errors import OutputError
from framework.checkpoints import checkpoint_name, latest_checkpoint, list_checkpoints, load_checkpoint
from framework.outputs import atomic_write
from tests.conftest import run_cli


def test_names_sort_in_step_order_and_the_latest_is_the_last():
    names = [checkpoint_name(step) for step in (5, 40, 300, 2000, 10**9)]
    assert names == sorted(names)
    assert checkpoint_name(40) == "step_0000000040.pt"


def test_every_n_steps_and_at_the_end_pruned_to_keep(train, tmp_path):
    train(["+task=linear", "trainer.max_steps=95", "trainer.checkpoint_every=10"], run_dir=tmp_path, task="linear")
    assert [path.name for path in list_checkpoints(tmp_path)] == [checkpoint_name(s) for s in (80, 90, 95)]
    assert latest_checkpoint(tmp_path).name == checkpoint_name(95)


def test_keep_null_keeps_every_checkpoint(train, tmp_path):
    train(["+task=linear", "trainer.max_steps=30", "trainer.checkpoint_every=10", "trainer.keep_checkpoints=null"],
          run_dir=tmp_path, task="linear")
    assert [path.name for path in list_checkpoints(tmp_path)] == [checkpoint_name(s) for s in (10, 20, 30)]


@pytest.mark.parametrize("setting", ["trainer.checkpoint_every=0", "trainer.keep_checkpoints=0"])
def test_counts_below_one_are_refused(train, setting):
    with pytest.raises(ConfigError, match=r"=0 is out of range: it must be >= 1 \(or null\)"):
        train(["+task=linear", setting])


def test_a_checkpoint_holds_everything_to_go_on(train, tmp_path):
    train(["+task=polyfit", "trainer.max_steps=12", "scheduler=step", "scheduler.step_size=5", "optimizer=adam"],
          run_dir=tmp_path, task="polyfit")
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path))
    assert checkpoint["task"] == "polyfit"
    assert checkpoint["components"]["optimizer"] == "adam"
    assert checkpoint["config"]["optimizer"]["name"] == "adam"
    assert set(checkpoint["model"]) == {"A", "B", "C"}
    assert checkpoint["optimizer"]["state"][0]["step"] == 12
    assert checkpoint["scheduler"]["last_epoch"] == 12
    progress = checkpoint["progress"]
    assert progress["step"] == 12 and set(progress["random"]) >= {"python", "numpy", "torch"}
    assert checkpoint["versions"] == {"framework": checkpoint["versions"]["framework"], "torch": torch.__version__}
    assert "logger.tensorboard" in checkpoint["plugins"]


class InfiniteAt:
    """Makes a parameter infinite after one step's update (that step's loss is still finite)."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def framework_step_end(self, state, loss):
        if state.progress.step == self.step:
            with torch.no_grad():
                state.run.model.A.fill_(float("inf"))


def test_a_checkpoint_of_non_finite_weights_is_never_written(train, manager, tmp_path):
    manager.register_plugin(InfiniteAt(3), "infinite", "test")
    with pytest.raises(Exception, match="training diverged"):
        train(["+task=polyfit", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=null"], run_dir=tmp_path,
              task="polyfit")
    assert [path.name for path in list_checkpoints(tmp_path)] == [checkpoint_name(1), checkpoint_name(2)]
    assert not (tmp_path / "model.safetensors").exists()
    for path in list_checkpoints(tmp_path):
        assert all(torch.isfinite(value).all() for value in load_checkpoint(path)["model"].values())


def test_a_write_that_fails_leaves_neither_a_final_nor_a_temporary_file(tmp_path):
    target = tmp_path / "step_0000000001.pt"

    def half_then_fail(handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OutputError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert list(tmp_path.iterdir()) == []


class RunsACommand:
    """What a crafted checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "the-command-ran"
    path = tmp_path / "crafted.pt"
    torch.save({"format": 1, "model": {"A": torch.zeros(())}, "payload": RunsACommand(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):  # the file really is a plain torch checkpoint...
        torch.load(path, weights_only=True)
    return path, marker


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(crafted):
    path, marker = crafted
    with pytest.raises(ConfigError, match="refused: it holds objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("setting", ["trainer.resume", "trainer.init_from"])
def test_the_command_line_refuses_a_crafted_checkpoint(crafted, tmp_path, setting):
    path, marker = crafted
    completed = run_cli("+task=polyfit", f"{setting}={path}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert "refused: it holds objects other than tensors" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not marker.exists()


def test_a_truncated_or_foreign_file_is_refused_with_a_message(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"format": 1}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:20])
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="is not a checkpoint of this framework"):
        load_checkpoint(foreign)


def test_loading_is_weights_only_even_if_torch_load_defaults_change(tmp_path, monkeypatch):
    """load_checkpoint asks for weights_only itself rather than trusting torch's default."""
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "c.pt"
    torch.save({"format": 1}, path)
    load_checkpoint(path)
    assert seen["weights_only"] is True


def test_the_checkpoint_module_is_importable_without_side_effects():
    # The CLI imports it at start-up: it must not import safetensors (only a save does).
    code = "import sys, framework.checkpoints; print('safetensors' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.strip() == "False", completed.stderr
