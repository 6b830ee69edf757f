"""End to end: a value outside its declared range stops ``python -m framework`` before any work with
one line naming the key, the value and the range, and exit status 2 (bad config); a third-party
plugin's declared range is checked the same way; ``logger=null`` runs with no logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.plugin_site import install_distribution, plugin_env

CONFIG_ERROR_EXIT = 2
TASK = ("+task=polyfit", "trainer.max_steps=5")


def written_files(run_dir: Path) -> list[str]:
    """What the run wrote besides Hydra's snapshot (.hydra/) and its log."""
    return sorted(path.name for path in run_dir.iterdir() if path.name not in (".hydra", "framework.log"))


@pytest.mark.parametrize("overrides, message", [
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1.0 is out of range: it must be > 0 (or null)"),
    (["trainer.seed=99999999999999999999"],
     "trainer.seed=99999999999999999999 is out of range: it must be in [0, 4294967295]"),
    (["scheduler=exponential", "scheduler.gamma=-1"], "scheduler.gamma=-1.0 is out of range: it must be > 0"),
])
def test_a_value_out_of_range_exits_2_before_any_work(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    completed = run_cli(*TASK, *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert completed.returncode == CONFIG_ERROR_EXIT, completed.stderr
    assert completed.stderr.strip() == f"error: {message}"
    assert written_files(run_dir) == ["result.json"]  # no events, checkpoints or weights
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"


def test_logger_null_runs_with_no_logger(tmp_path):
    run_dir = tmp_path / "run"
    completed = run_cli(*TASK, "logger=null", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 5
    assert not list(run_dir.rglob("events.out.tfevents.*"))  # no TensorBoard logger
    assert "final loss" not in completed.stderr + completed.stdout  # nor the console's


def test_model_null_is_refused_by_name(tmp_path):
    completed = run_cli(*TASK, "model=null", cwd=tmp_path)
    assert completed.returncode == CONFIG_ERROR_EXIT
    assert completed.stderr.startswith("error: model=null chooses no model, but a run needs one")
    assert "ValueError" not in completed.stderr


PLUGIN_SOURCE = '''
    from dataclasses import dataclass

    import torch

    from framework import Component, hookimpl, setting


    @dataclass
    class DecayConfig:
        rate: float = setting(1.0, gt=0)


    class Decay(torch.nn.Module):
        def __init__(self, rate):
            super().__init__()
            self.rate = rate
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.scale * torch.exp(-self.rate * x)


    @hookimpl
    def framework_components():
        return [Component("model", "decay_acme", lambda config, *, data: Decay(config.rate), DecayConfig)]
'''


def test_an_installed_plugin_declares_a_range_and_gets_it_checked(tmp_path):
    site = install_distribution(tmp_path / "site", distribution="acme-decay", package="acme_decay",
                                source=PLUGIN_SOURCE, entry_point="acme_decay")
    run_dir = tmp_path / "run"
    completed = run_cli(*TASK, "model=decay_acme", "model.rate=0", f"hydra.run.dir={run_dir}",
                        cwd=tmp_path, env=plugin_env(site))
    assert completed.returncode == CONFIG_ERROR_EXIT, completed.stderr
    assert completed.stderr.strip() == "error: model.rate=0.0 is out of range: it must be > 0"
    assert written_files(run_dir) == ["result.json"]
