"""``--help`` and config errors answered from the schema cache, without torch
(framework/quick_answers.py): exactly what the full path prints, with the same exit status, and
never from a cache that no longer describes the installed plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framework.markers import DISABLE_PLUGINS_ENV
from framework.schema_cache import CACHE_ENV
from tests.conftest import cli_env, run_cli
from tests.plugin_site import install_distribution, plugin_env

CONFIG_ERROR = 2
# (command line, exit status): help for several configs, and configs that do not compose.
CASES = [
    (["--help"], 0),
    (["model=linear", "--help"], 0),
    (["+task=polyfit", "optimizer=adam", "--help"], 0),
    (["-h", "+task=sine", "logger=[console]"], 0),
    (["+task=polyfit", "model.degree=3", "--help"], 0),
    (["+task=polyfit", "model.degre=3", "--help"], CONFIG_ERROR),
    (["+task=linear", "trainer.max_stepz=3"], CONFIG_ERROR),
    (["+task=polyfit", "model.degre=3"], CONFIG_ERROR),
    (["model.degre=3"], CONFIG_ERROR),
    (["+task=linear", "trainer.max_steps=abc"], CONFIG_ERROR),
    (["+task=linear", "trainer.tol.windw=3"], CONFIG_ERROR),
    (["model=nope"], CONFIG_ERROR),
    (["+task=nope"], CONFIG_ERROR),
    (["+task=linear", "logger=[console,nope]"], CONFIG_ERROR),
    (["+task=linear", "callback=[early_stop]"], CONFIG_ERROR),
    (["+task=linear", "trainer.max_steps=1e3"], CONFIG_ERROR),
    (["+task=linear2d", "data=csv", "data.path=runs/a=b.csv"], CONFIG_ERROR),
    (["+task=linear", "model=null"], CONFIG_ERROR),
    (["+task=linear", "+trainer.max_steps=3"], CONFIG_ERROR),
]
# Configs that compose: they train, on the full path.
COMPOSING = ["+task=linear", "trainer.max_steps=3", "logger=[]", "trainer.freeze=[]"]
VOUCHED_FOR = ["+task=polyfit", "trainer.max_steps=3", "model.degree=2", "optimizer.lr=0.1", "logger.console.lines=2"]


def cached_env(cache_home: Path, **extra: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(cache_home), CACHE_ENV: "", "HYDRA_FULL_ERROR": "", **extra}


def full_path(env: dict[str, str]) -> dict[str, str]:
    return {**env, CACHE_ENV: "0"}


def answer(completed: subprocess.CompletedProcess) -> tuple:
    return completed.stdout, completed.stderr, completed.returncode


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """(working folder, environment) with a schema cache written by a full run."""
    cache_home = tmp_path_factory.mktemp("cache")
    cwd = tmp_path_factory.mktemp("work")
    env = cached_env(cache_home)
    first = run_cli("--help", cwd=cwd, env=env)  # no cache yet: the full path, which writes it
    assert first.returncode == 0, first.stderr
    assert list((cache_home / "framework").glob("schemas-*.json"))
    return cwd, env


@pytest.mark.parametrize("args, status", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_an_answer_from_the_cache_is_the_full_paths_answer(warm, args, status):
    cwd, env = warm
    quick = run_cli(*args, cwd=cwd, env=env)
    full = run_cli(*args, cwd=cwd, env=full_path(env))
    assert answer(quick) == answer(full)
    assert quick.returncode == status, quick.stderr


QUICK_ANSWERS = textwrap.dedent("""
    import contextlib, io, json, sys
    from framework.quick_answers import answer_without_training
    statuses = []
    for args in json.loads(sys.argv[1]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            statuses.append(answer_without_training(args))
    composed = "hydra._internal.hydra" in sys.modules
    print(json.dumps({"statuses": statuses, "torch": "torch" in sys.modules, "composed": composed}))
""")


def quick_answers(cwd: Path, env: dict[str, str], commands: list[list[str]]) -> dict:
    completed = subprocess.run([sys.executable, "-c", QUICK_ANSWERS, json.dumps(commands)], cwd=cwd,
                               env=cli_env(env), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_help_and_config_errors_are_answered_without_importing_torch(warm):
    cwd, env = warm
    seen = quick_answers(cwd, env, [args for args, _ in CASES])
    assert seen["statuses"] == [status for _, status in CASES]
    assert seen["torch"] is False


def test_a_run_that_trains_is_left_to_the_full_path_and_pays_no_composition_when_vouched_for(warm):
    cwd, env = warm
    vouched = quick_answers(cwd, env, [VOUCHED_FOR, ["+task=linear"]])
    assert vouched == {"statuses": [None, None], "torch": False, "composed": False}
    # A list value is not vouched for: Hydra composes it here, finds nothing wrong, and leaves it.
    composed = quick_answers(cwd, env, [COMPOSING])
    assert composed == {"statuses": [None], "torch": False, "composed": True}


def test_a_config_that_composes_trains_unchanged(warm, tmp_path):
    _, env = warm
    completed = run_cli(*COMPOSING, cwd=tmp_path, env=env)
    assert completed.returncode == 0, completed.stderr
    results = list((tmp_path / "outputs").glob("*/*/result.json"))
    assert len(results) == 1
    result = json.loads(results[0].read_text())
    assert (result["status"], result["steps"], result["task"]) == ("completed", 3, "linear")


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    cache_home, cwd = tmp_path / "cache", tmp_path / "work"
    cwd.mkdir()
    env = cached_env(cache_home)
    run_cli("--help", cwd=cwd, env=env)
    (cache_file,) = (cache_home / "framework").glob("schemas-*.json")
    cache_file.write_text('{"format": 1, "key": "')
    broken = run_cli("model.degre=3", cwd=cwd, env=env)
    assert answer(broken) == answer(run_cli("model.degre=3", cwd=cwd, env=full_path(env)))
    assert json.loads(cache_file.read_text())["components"]  # the full path wrote it again


def test_a_cache_home_that_cannot_be_written_is_no_error(tmp_path):
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    env = cached_env(blocker)
    quick = run_cli("--help", cwd=tmp_path, env=env)
    assert answer(quick) == answer(run_cli("--help", cwd=tmp_path, env=full_path(env)))
    assert quick.returncode == 0


PROBE_SOURCE = '''
    """A third-party plugin whose model has one setting, named {setting}."""

    from dataclasses import dataclass

    from framework import Component, hookimpl


    @dataclass
    class {name}Config:
        {setting}: float = 1.0


    @hookimpl
    def framework_components():
        return [Component("model", "{model}", lambda config, **context: None, {name}Config)]
'''


def probe_source(name: str, model: str, setting: str) -> str:
    return PROBE_SOURCE.format(name=name, model=model, setting=setting)


def test_the_cache_follows_the_installed_plugins_their_files_and_the_disabling_variables(tmp_path):
    site, cwd = tmp_path / "site", tmp_path / "work"
    cwd.mkdir()
    install_distribution(site, distribution="quick-probe", package="quick_probe",
                         source=probe_source("Probe", "probe", "alpha"), entry_point="probe")
    env = plugin_env(site, **cached_env(tmp_path / "cache"))

    def same_as_full_path(*args: str, times: int = 1) -> subprocess.CompletedProcess:
        """The quick answer, ``times`` in a row (the first after a change misses the cache, the
        next ones hit what it wrote), each the same as the full path's."""
        quick = [run_cli(*args, cwd=cwd, env=env) for _ in range(times)]
        full = answer(run_cli(*args, cwd=cwd, env=full_path(env)))
        assert all(answer(each) == full for each in quick)
        return quick[-1]

    run_cli("--help", cwd=cwd, env=env)  # writes the cache
    assert "probe" in same_as_full_path("--help").stdout
    assert "keys there: alpha, name" in same_as_full_path("model=probe", "model.alph=2").stderr

    # An editable plugin changes without a new version: its file is in the key.
    plugin_file = site / "quick_probe" / "plugin.py"
    plugin_file.write_text(textwrap.dedent(probe_source("Probe", "probe", "beta")))
    stat = plugin_file.stat()
    os.utime(plugin_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert "keys there: beta, name" in same_as_full_path("model=probe", "model.alph=2", times=2).stderr

    # A new distribution, then a plugin disabled by name.
    install_distribution(site, distribution="quick-probe-two", package="quick_probe_two",
                         source=probe_source("Other", "other_probe", "gamma"), entry_point="probe_two")
    assert "other_probe" in same_as_full_path("--help", times=2).stdout
    env[DISABLE_PLUGINS_ENV] = "probe_two"
    assert "other_probe" not in same_as_full_path("--help", times=2).stdout


def test_the_help_of_a_sweep_is_the_help_and_runs_nothing(tmp_path):
    # Hydra composes the help's config as a single run's: the swept values were an error, and
    # the folder-name exclusion the framework adds once landed after --help ("unrecognized").
    done = run_cli("-m", "+task=polyfit", "optimizer.lr=0.1,0.01", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "== Configuration groups ==" in done.stdout
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
