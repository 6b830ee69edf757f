"""The Python API: framework.train runs as the command line does; framework.load_run gives the
trained model back from a run folder; the README's example runs as written."""

from __future__ import annotations

import json
import re

import pytest
import torch

import framework
from framework import ConfigError, TrainingError
from tests.conftest import REPO_ROOT


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Checkpoints, resume and reuse", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "polyfit" / "model.safetensors").is_file()


def test_train_leaves_the_same_run_folder_as_the_command_line(tmp_path):
    run = framework.train(["+task=linear", "trainer.max_steps=40"], run_dir=tmp_path / "run")
    assert run.dir == tmp_path / "run"
    assert run.result == json.loads((run.dir / "result.json").read_text())
    assert (run.result["task"], run.result["status"], run.result["steps"]) == ("linear", "completed", 40)
    for made in (".hydra/config.yaml", "framework.log", "model.safetensors", "checkpoints/step_0000000040.pt"):
        assert (run.dir / made).is_file(), made
    assert list(run.dir.glob("events.out.tfevents.*"))
    assert run.config.optimizer.lr == 0.001 and run.config.trainer.max_steps == 40
    assert torch.equal(run.model.weight.detach(), torch.tensor([run.result["params"]["weight"]]).reshape(1, 1))


def test_train_without_a_run_dir_writes_under_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = framework.train(["+task=linear", "trainer.max_steps=2"])
    assert run.dir.parent.parent == tmp_path / "outputs"


@pytest.mark.parametrize("task", ["legendre", "linear2d", "puzzle"])
def test_load_run_predicts_what_the_trained_model_predicted(tmp_path, task):
    run = framework.train([f"+task={task}", "trainer.max_steps=30"], run_dir=tmp_path / task)
    again = framework.load_run(run.dir)
    assert type(again.model) is type(run.model)
    columns = {"legendre": 1, "linear2d": 2, "puzzle": 4}[task]
    x = torch.randn(9, columns)
    with torch.no_grad():
        assert torch.equal(again.model(x), run.model(x))
    assert again.result == run.result
    assert again.config.model.name == run.config.model.name


def test_train_reports_bad_config_and_failures_as_the_cli_does(tmp_path):
    with pytest.raises(ConfigError, match="'degre' is not a key of model; keys there: .*degree"):
        framework.train(["+task=polyfit", "model.degre=3"], run_dir=tmp_path / "bad")
    with pytest.raises(TrainingError, match="training diverged"):
        framework.train(["+task=sine", "optimizer.lr=1e-4"], run_dir=tmp_path / "diverged")
    assert json.loads((tmp_path / "diverged" / "result.json").read_text())["status"] == "failed"
    assert "training diverged" in (tmp_path / "diverged" / "framework.log").read_text()
    with pytest.raises(ConfigError, match="has no model.safetensors"):
        framework.load_run(tmp_path / "diverged")
    with pytest.raises(ConfigError, match="is not a run folder"):
        framework.load_run(tmp_path)
    with pytest.raises(ConfigError, match="runs one fit"):
        framework.train(["-m", "+task=polyfit"])


def test_a_new_run_never_writes_into_a_folder_holding_a_trained_run(tmp_path):
    framework.train(["+task=linear", "trainer.max_steps=5"], run_dir=tmp_path / "run")
    kept = {name: (tmp_path / "run" / name).read_bytes() for name in ("result.json", ".hydra/config.yaml")}
    # Named as the caller named it (run_dir=, not the hydra.run.dir= it becomes).
    with pytest.raises(ConfigError, match="^run_dir=.* already holds a run; resume it with trainer.resume="):
        framework.train(["+task=polyfit"], run_dir=tmp_path / "run")
    assert {name: (tmp_path / "run" / name).read_bytes() for name in kept} == kept
    # A folder whose run was refused before its first step can be used again.
    with pytest.raises(ConfigError):
        framework.train(["+task=linear", "trainer.max_steps=0"], run_dir=tmp_path / "refused")
    assert framework.train(["+task=linear", "trainer.max_steps=3"], run_dir=tmp_path / "refused").result["steps"] == 3


def test_train_resumes_a_run_in_its_own_folder(tmp_path):
    first = framework.train(["+task=linear", "trainer.max_steps=50"], run_dir=tmp_path / "run")
    snapshot = (first.dir / ".hydra" / "config.yaml").read_text()
    again = framework.train(["+task=linear", "trainer.max_steps=80", f"trainer.resume={first.dir}"])
    assert again.dir == first.dir and again.result["steps"] == 80
    # Naming the folder as well changes nothing: the original snapshot is kept either way.
    third = framework.train(["+task=linear", "trainer.max_steps=90", f"trainer.resume={first.dir}"], run_dir=first.dir)
    assert third.result["steps"] == 90
    assert (first.dir / ".hydra" / "config.yaml").read_text() == snapshot
    assert len(list((first.dir / ".hydra").glob("resume_*/config.yaml"))) >= 1
