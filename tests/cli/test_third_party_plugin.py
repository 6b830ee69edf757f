"""End to end, as a third-party author meets it: a real installed distribution declares an entry
point in group ``framework``; ``python -m framework`` then offers its model by name, validates its
config, lists it in ``--help`` and lets FRAMEWORK_DISABLE_PLUGINS turn it off. No change to this
repository is involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.locations import config_dir

from framework.markers import DISABLE_PLUGINS_ENV
from tests.conftest import run_cli
from tests.plugin_site import install_distribution, plugin_env

ENTRY_POINT = "acme"

PLUGIN_SOURCE = '''
    """A third-party plugin: it imports only what the framework package root exports."""

    import json
    import os
    from dataclasses import asdict, dataclass

    import torch

    from framework import Component, hookimpl


    @dataclass
    class QuadraticConfig:
        scale: float = 1.0


    class Quadratic(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale
            self.a = torch.nn.Parameter(torch.zeros(()))
            self.b = torch.nn.Parameter(torch.zeros(()))
            self.c = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.scale * (self.a * x**2 + self.b * x + self.c)


    def build_quadratic(config, *, data):
        record = os.environ.get("ACME_RECORD")
        if record:  # lets the test see the config the factory was given
            with open(record, "w") as handle:
                json.dump({"type": type(config).__name__, "scale": config.scale,
                           "rows": int(data.features.shape[0])}, handle)
        return Quadratic(config.scale)


    @dataclass
    class StopAfterConfig:
        after: int = 3


    class StopAfter:
        """A callback: stops the run after ``after`` steps, with its own reason."""

        def __init__(self, config):
            self.after = config.after

        @hookimpl
        def framework_step_end(self, state):
            if state.progress.step >= self.after:
                state.progress.stop.request(f"stop_after_acme: {self.after} steps")


    @hookimpl
    def framework_components():
        return [Component("model", "quadratic_acme", build_quadratic, QuadraticConfig,
                          help="scale * (a x^2 + b x + c), by ACME"),
                Component("callback", "stop_after_acme", lambda config, **context: StopAfter(config),
                          StopAfterConfig, help="stop after `after` steps, by ACME")]
'''

BASE_ARGS = ("data=polynomial", "loss=mse", "optimizer=sgd", "optimizer.lr=1e-4", "trainer.max_steps=5")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding the installed distribution ``acme-models`` (package + dist-info)."""
    return install_distribution(tmp_path_factory.mktemp("site"), distribution="acme-models", package="acme_models",
                                source=PLUGIN_SOURCE, entry_point=ENTRY_POINT)


def run_with_plugin(site: Path, cwd: Path, *args: str, **extra_env: str):
    return run_cli(*args, cwd=cwd, env=plugin_env(site, **extra_env), timeout=120)


# The model group holds the built-in models and the YAML model variants of conf/model/.
MODEL_PRESETS = ["linear", "polynomial", "sine_cubic", *(path.stem for path in (config_dir() / "model").glob("*.yaml"))]


def group_options(help_text: str, group: str) -> list[str]:
    """The options ``--help`` lists for one config group (its "group: a, b, c" line)."""
    line = next(line for line in help_text.splitlines() if line.startswith(f"{group}: "))
    return [name.strip() for name in line.split(":", 1)[1].split(",")]


def test_plugin_model_trains_with_its_config(site, tmp_path):
    run_dir = tmp_path / "run"
    record = tmp_path / "record.json"
    completed = run_with_plugin(
        site, tmp_path, *BASE_ARGS, "model=quadratic_acme", "model.scale=2", f"hydra.run.dir={run_dir}",
        ACME_RECORD=str(record),
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["steps"] == 5
    assert set(result["params"]) == {"a", "b", "c"}  # the plugin's model, not a built-in
    # The factory received the plugin's own dataclass with the command line's value.
    assert json.loads(record.read_text()) == {"type": "QuadraticConfig", "scale": 2.0, "rows": 20}
    snapshot = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "name: quadratic_acme" in snapshot and "scale: 2.0" in snapshot


def test_plugin_callback_is_chosen_like_a_builtin_and_stops_the_run(site, tmp_path):
    run_dir = tmp_path / "run"
    completed = run_with_plugin(site, tmp_path, "+task=linear", "callback=[early_stopping,stop_after_acme]",
                                "callback.stop_after_acme.after=7", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["status"], result["steps"], result["stop_reason"]) == ("completed", 7, "stop_after_acme: 7 steps")
    assert "stop_after_acme: 7 steps" in completed.stderr + completed.stdout


def test_help_lists_the_plugin_model_and_its_config(site, tmp_path):
    completed = run_with_plugin(site, tmp_path, "data=polynomial", "model=quadratic_acme", "--help")
    assert completed.returncode == 0, completed.stderr
    assert set(MODEL_PRESETS) | {"quadratic_acme"} == set(group_options(completed.stdout, "model"))
    assert "model:\n  scale: 1.0\n  name: quadratic_acme\n" in completed.stdout  # its config, validated


def test_bare_help_lists_the_plugin_model(site, tmp_path):
    completed = run_with_plugin(site, tmp_path, "--help")
    assert completed.returncode == 0, completed.stderr
    assert set(MODEL_PRESETS) | {"quadratic_acme"} == set(group_options(completed.stdout, "model"))


def test_misspelt_key_of_plugin_config_is_refused(site, tmp_path):
    run_dir = tmp_path / "run"
    completed = run_with_plugin(
        site, tmp_path, *BASE_ARGS, "model=quadratic_acme", "model.scael=2", f"hydra.run.dir={run_dir}"
    )
    assert completed.returncode != 0
    assert "scael" in completed.stderr
    assert "keys there: name, scale" in completed.stderr  # what exists, from the plugin's dataclass
    assert "Traceback" not in completed.stderr
    assert not (run_dir / "result.json").exists()  # refused before any work


def test_disabled_plugin_model_is_an_unknown_option(site, tmp_path):
    run_dir = tmp_path / "run"
    completed = run_with_plugin(
        site, tmp_path, *BASE_ARGS, "model=quadratic_acme", f"hydra.run.dir={run_dir}",
        **{DISABLE_PLUGINS_ENV: ENTRY_POINT},
    )
    assert completed.returncode != 0
    assert "quadratic_acme" in completed.stderr  # the refused name
    options = completed.stderr.split("Available options in 'model':", 1)[1].split("Config search path", 1)[0]
    assert sorted(options.split()) == sorted(MODEL_PRESETS)
    assert "Traceback" not in completed.stderr
    assert not (run_dir / "result.json").exists()
