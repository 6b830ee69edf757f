"""A third-party logger that fails late, as a user meets it: a real installed distribution, the
real command, its exit status, result.json, the TensorBoard files and the sweep summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.framework.compare import events, hparams_data
from tests.plugin_site import install_distribution, plugin_env

FLAKY_LOGGER = '''
    from dataclasses import dataclass

    from framework import Component, hookimpl


    @dataclass
    class FlakyConfig:
        fail_in: str = "none"  # the hook that fails
        how: str = "error"  # error: RuntimeError; exit0: SystemExit(0)


    class Flaky:
        def __init__(self, config):
            self.config = config

        def fail(self, hook_name):
            if hook_name == self.config.fail_in:
                if self.config.how == "exit0":
                    raise SystemExit(0)
                raise RuntimeError("disk quota of the flaky service")

        @hookimpl
        def framework_fit_start(self, state):
            self.fail("framework_fit_start")

        @hookimpl
        def framework_log(self, state, step, metrics):
            self.fail("framework_log")

        @hookimpl
        def framework_fit_end(self, state, result):
            self.fail("framework_fit_end")


    @hookimpl
    def framework_components():
        return [Component("logger", "flaky", lambda config, **context: Flaky(config), FlakyConfig)]
'''


@pytest.fixture(scope="module")
def flaky_env(tmp_path_factory) -> dict[str, str]:
    site = install_distribution(tmp_path_factory.mktemp("site"), distribution="flaky-logger", package="flaky_logger",
                                source=FLAKY_LOGGER, entry_point="flaky")
    return plugin_env(site)


def single_run_dir(cwd: Path) -> Path:
    (result,) = cwd.glob("outputs/*/*/result.json")
    return result.parent


@pytest.mark.parametrize("hook_name", ["framework_fit_start", "framework_log", "framework_fit_end"])
def test_a_logger_failing_in_a_hook_fails_the_run_and_the_others_still_write(hook_name, flaky_env, tmp_path):
    done = run_cli("+task=linear", "trainer.max_steps=20", "logger=[console,tensorboard,flaky]",
                   f"logger.flaky.fail_in={hook_name}", cwd=tmp_path, env=flaky_env)
    assert done.returncode == 4, done.stderr  # PluginError's status
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert f"plugin 'logger.flaky' failed in {hook_name}" in done.stderr
    assert "disk quota of the flaky service" in done.stderr

    run_dir = single_run_dir(tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "logger.flaky" in result["error"] and hook_name in result["error"]
    if hook_name == "framework_fit_start":
        return  # pluggy calls the logger listed last first: TensorBoard had not started
    # The TensorBoard logger's own fit_end still ran (after the failing one: pluggy calls the
    # logger listed last first): the curve is kept and the HParams session is closed, as failed.
    accumulator = events(run_dir)
    assert "_hparams_/session_end_info" in hparams_data(accumulator)
    if hook_name == "framework_fit_end":  # a failure while logging stopped the run at step 1
        assert "train/loss" in accumulator.Tags()["scalars"]


def test_a_sweep_counts_a_plugin_failure_and_a_plugin_exit_as_failed_jobs_and_runs_the_rest(flaky_env, tmp_path):
    done = run_cli("-m", "+task=linear", "trainer.max_steps=10", "logger=[flaky]", "logger.flaky.how=exit0",
                   "logger.flaky.fail_in=framework_fit_start,framework_fit_end,none", cwd=tmp_path, env=flaky_env)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "2 of 3 jobs failed" in done.stderr
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    results = {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/result.json")}
    statuses = {name.split("=")[-1]: result["status"] for name, result in results.items()}
    assert statuses == {"framework_fit_start": "failed", "framework_fit_end": "failed", "none": "completed"}
    summary = (sweep_dir / "summary.md").read_text()
    assert "SystemExit(0)" in summary and "plugin 'logger.flaky' failed in framework_fit_start" in summary
