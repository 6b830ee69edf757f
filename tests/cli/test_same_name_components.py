"""A third-party distribution contributes ``loss=huber``, a name the built-in ``losses`` plugin
also has. The commands say how to choose, and FRAMEWORK_DISABLE_COMPONENTS=losses:loss.huber
uses the plugin's huber while keeping the built-in mse, sse and l1 (so the presets still work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from framework.markers import DISABLE_COMPONENTS_ENV
from tests.conftest import run_cli
from tests.plugin_site import install_distribution, plugin_env

PLUGIN_SOURCE = '''
    import json
    import os
    from dataclasses import dataclass

    import torch

    from framework import Component, hookimpl


    @dataclass
    class AcmeHuberConfig:
        beta: float = 0.25


    def build_huber(config):
        record = os.environ.get("ACME_RECORD")
        if record:  # lets the test see which huber was built, with which config
            with open(record, "w") as handle:
                json.dump({"type": type(config).__name__, "beta": config.beta}, handle)
        return lambda predictions, targets: torch.nn.functional.smooth_l1_loss(predictions, targets, beta=config.beta)


    @hookimpl
    def framework_components():
        return [Component("loss", "huber", build_huber, AcmeHuberConfig, help="smooth L1, by ACME")]
'''

DISABLE_BUILTIN_HUBER = {DISABLE_COMPONENTS_ENV: "losses:loss.huber"}
SHORT = ("trainer.max_steps=3", "logger=[console]")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install_distribution(tmp_path_factory.mktemp("site"), distribution="acme-losses", package="acme_losses",
                                source=PLUGIN_SOURCE, entry_point="acme_losses")


def run_with_plugin(site: Path, cwd: Path, *args: str, **extra_env: str):
    return run_cli(*args, cwd=cwd, env=plugin_env(site, **extra_env), timeout=120)


def test_same_name_is_refused_naming_both_providers_and_the_setting(site, tmp_path):
    completed = run_with_plugin(site, tmp_path, "--help")
    assert completed.returncode == 4
    message = completed.stderr
    assert "loss 'huber' is provided twice: by plugin 'losses' (built-in" in message
    assert "'acme_losses' (from distribution acme-losses 0.1)" in message
    assert f"set {DISABLE_COMPONENTS_ENV}=losses:loss.huber" in message
    assert "Traceback" not in message


def test_disabling_the_builtin_huber_uses_the_plugins_and_keeps_the_other_losses(site, tmp_path):
    record = tmp_path / "record.json"
    huber_dir = tmp_path / "huber"
    completed = run_with_plugin(site, tmp_path, "+task=polyfit", "loss=huber", "loss.beta=0.5", *SHORT,
                                f"hydra.run.dir={huber_dir}", ACME_RECORD=str(record), **DISABLE_BUILTIN_HUBER)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(record.read_text()) == {"type": "AcmeHuberConfig", "beta": 0.5}
    result = json.loads((huber_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 3

    # The plugin's loss, not the built-in one: smooth L1 with beta 0.5 on the run's own data and
    # final parameters (x ~ N(0,1)*5 seeded as the preset does) gives the reported final loss.
    a, b, c = (torch.tensor(result["params"][name]) for name in "ABC")
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    y = x**2 + 2 * x + 3
    prediction = a * x**2 + b * x + c
    expected = torch.nn.functional.smooth_l1_loss(prediction, y, beta=0.5).item()
    assert result["final_loss"] == pytest.approx(expected, rel=1e-5)

    # The rest of the built-in losses plugin is still there: the preset's mse works.
    mse_dir = tmp_path / "mse"
    completed = run_with_plugin(site, tmp_path, "+task=polyfit", *SHORT, f"hydra.run.dir={mse_dir}",
                                **DISABLE_BUILTIN_HUBER)
    assert completed.returncode == 0, completed.stderr
    assert json.loads((mse_dir / "result.json").read_text())["status"] == "completed"


def test_help_lists_every_loss_and_the_plugins_huber_settings(site, tmp_path):
    completed = run_with_plugin(site, tmp_path, "loss=huber", "--help", **DISABLE_BUILTIN_HUBER)
    assert completed.returncode == 0, completed.stderr
    line = next(line for line in completed.stdout.splitlines() if line.startswith("loss: "))
    assert sorted(name.strip() for name in line.split(":", 1)[1].split(",")) == ["huber", "l1", "mse", "sse"]
    assert "loss:\n  beta: 0.25\n  name: huber\n" in completed.stdout


def test_a_disabled_component_that_does_not_exist_is_refused(site, tmp_path):
    completed = run_with_plugin(site, tmp_path, "--help", **{DISABLE_COMPONENTS_ENV: "losses:loss.hubber"})
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"error: {DISABLE_COMPONENTS_ENV} names components that do not exist")
    assert "losses:loss.hubber matches no loss of plugin 'losses' (loss components there: huber, l1, mse, sse)" in completed.stderr
