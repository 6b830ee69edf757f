"""Shared fixtures: a fresh plugin manager (entry points off), its registry, and config composition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Before torch loads its OpenMP runtime (it reads this once), and inherited by every process a
# test starts: a thread that waits at the end of a parallel region sleeps instead of spinning.
# The tests run two workers, each starting runs of two threads, on two cores; spinning threads
# then hold the cores that the threads they wait for need (three runs of 1500 steps on 50 000
# rows side by side: 33-85 s spinning, 14-18 s sleeping). Results do not change: the thread
# count is the same, and so is every reduction's split.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from framework.locations import config_dir  # noqa: E402
from framework.plugin_manager import build_registry, create_plugin_manager  # noqa: E402
from framework.run import run_training  # noqa: E402
from framework.schema import store_configs  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The test files that take a worker longest (seconds of one worker in a full run on 2 cores,
# 2026-11-23), longest first. ``--dist loadfile --no-loadscope-reorder`` (pyproject.toml) hands
# each file whole to one worker, in collection order (without the second flag, xdist would
# order the files by their number of tests), so these start first: the run does not end with
# one worker still on a long file while the other idles. A file missing here only starts later;
# it runs all the same.
LONGEST_FILES = (
    "tests/cli/test_interrupts.py",  # 245 s
    "tests/cli/test_quick_answers.py",  # 190 s
    "tests/docs/test_readme_commands.py",  # 185 s, two commands at a time
    "tests/cli/test_submitit.py",  # 110 s
    "tests/cli/test_submitit_slurm.py",  # 130 s (2026-11-24)
    "tests/bench/test_bench_run.py",  # 110 s
    "tests/cli/test_distributed.py",  # 95 s
    "tests/cli/test_cli.py",  # 85 s
    "tests/cli/test_sweeps.py",  # 60 s
    "tests/cli/test_vectorized_launcher.py",  # 60 s
    "tests/cli/test_sweep_configs.py",  # 55 s
    "tests/framework/test_ranges.py",  # 55 s
    "tests/cli/test_full_disk_and_pipes.py",  # 50 s
    "tests/framework/test_batched_fit.py",  # 45 s
    "tests/framework/test_sweep_configs.py",  # 45 s
    "tests/cli/test_run_folders.py",  # 40 s
)


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FILES); the others after them, in their own order."""
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(Path(item.fspath).relative_to(REPO_ROOT).as_posix(), len(rank)))


@pytest.fixture
def manager():
    """A fresh plugin manager with the built-ins only: a developer's installed plugins stay out."""
    return create_plugin_manager(load_entry_points=False, disabled=())


@pytest.fixture
def registry(manager):
    registry = build_registry(manager)
    store_configs(registry)
    return registry


@pytest.fixture
def compose_config(registry):
    """compose_config(overrides) -> the composed DictConfig, as the CLI would see it."""

    def compose_with(overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    yield compose_with
    GlobalHydra.instance().clear()


@pytest.fixture
def train(manager, registry, compose_config):
    """train(overrides, run_dir=None) -> result dict, through the same run path as the CLI."""

    def train_with(overrides: list[str], run_dir: Path | None = None, task: str | None = None):
        if not any(item.startswith("trainer.device=") for item in overrides):
            # The CPU unless a test asks for a device: results are compared with CPU tensors,
            # and device=auto would pick a GPU where there is one (tests/gpu covers CUDA).
            overrides = ["trainer.device=cpu", *overrides]
        cfg = compose_config(overrides)
        return run_training(cfg, manager=manager, registry=registry, run_dir=run_dir, task=task)

    return train_with


def cli_env(env: dict | None = None) -> dict[str, str]:
    """A user's environment for ``python -m framework`` (no HYDRA_FULL_ERROR), plus ``env``."""
    full_env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    # device=auto picks a GPU where there is one; these tests check CPU results (tests/gpu
    # covers CUDA).
    full_env["CUDA_VISIBLE_DEVICES"] = ""
    full_env.update(env or {})
    return full_env


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m framework ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout,
    )


def run_cli_watched(watch: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``run_cli``, with the Python code ``watch`` run first in the same process (to install
    a ``gc`` callback or an ``atexit`` report, say)."""
    script = "\n".join([watch, "import runpy, sys",
                         f"sys.argv = ['framework', *{list(args)!r}]",
                         "runpy.run_module('framework', run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def recorder(manager):
    """A Recorder plugin registered on the test's manager (see tests/recorder.py)."""
    from tests.recorder import Recorder

    plugin = Recorder()
    manager.register_plugin(plugin, "recorder", "test")
    return plugin
