"""model.safetensors out of every run that completes or is interrupted, and warm starts from it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from framework import ConfigError
from framework.checkpoints import latest_checkpoint
from framework.weights import read_weights
from tests.polyfit import tutorial_quadratic


def test_weights_are_written_whatever_the_models_size(train, recorder, tmp_path):
    result = train(["+task=polyfit", "trainer.max_steps=20", "trainer.param_log_limit=2"], run_dir=tmp_path,
                   task="polyfit")
    assert result["params"] is None  # too big for result.json at this limit...
    weights = load_file(tmp_path / "model.safetensors")  # ...but never lost
    assert set(weights) == {"A", "B", "C"}
    for name, value in weights.items():
        assert torch.equal(value, recorder.final[name])
    _, metadata = read_weights(tmp_path / "model.safetensors")
    assert metadata == {"task": "polyfit", "components": metadata["components"], "dtype": "float32",
                        "feature_columns": 1, "target_columns": 1, "step": 20}


def test_a_failed_run_writes_no_weights(train, tmp_path):
    with pytest.raises(Exception, match="training diverged"):
        train(["+task=sine", "optimizer.lr=1e-4"], run_dir=tmp_path, task="sine")
    assert not (tmp_path / "model.safetensors").exists()


@pytest.fixture
def source_run(train, tmp_path):
    train(["+task=polyfit", "trainer.max_steps=50"], run_dir=tmp_path / "source", task="polyfit")
    return tmp_path / "source"


@pytest.mark.parametrize("form", ["run folder", "safetensors file", "checkpoint"])
def test_init_from_loads_the_weights_and_starts_a_fresh_optimizer(train, recorder, source_run, tmp_path, form):
    where = {"run folder": source_run, "safetensors file": source_run / "model.safetensors",
             "checkpoint": latest_checkpoint(source_run)}[form]
    result = train(["+task=polyfit", "trainer.max_steps=5", f"trainer.init_from={where}"], run_dir=tmp_path / "warm",
                   task="polyfit")
    source = load_file(source_run / "model.safetensors")
    for name, value in source.items():
        assert torch.equal(recorder.initial[name], value)
    assert result["steps"] == 5
    assert recorder.optimizer.state_dict()["state"][0]["step"] == 5  # not 55: a fresh optimizer

    # The same five steps from the same start, in a plain loop (the data are seed 0's first draw).
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    params = [source[name].clone().requires_grad_(True) for name in "ABC"]
    optimizer = torch.optim.NAdam(params, lr=0.01)
    for _ in range(5):
        A, B, C = params
        loss = torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x), (x**2 + 2 * x + 3)[:, None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())


def test_init_from_weights_of_another_model_is_refused_by_name(train, source_run):
    with pytest.raises(ConfigError) as caught:
        train(["+task=linear2d", f"trainer.init_from={source_run}"])
    message = str(caught.value)
    assert "missing weight, bias" in message and "unexpected A, B, C" in message


def test_init_from_a_missing_file_is_refused(train, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        train(["+task=polyfit", f"trainer.init_from={tmp_path / 'nothing.safetensors'}"])
    with pytest.raises(ConfigError, match="no such checkpoint file or run folder"):
        train(["+task=polyfit", f"trainer.init_from={tmp_path / 'nothing.pt'}"])
