"""The framework side of an in-process case: configs composed as the command line composes them,
fits run through :func:`framework.run.run_training`, and the fit's loop timed by a plugin.

The timed window runs from ``framework_fit_start`` (its last implementation: the loggers have
opened their writers) to ``framework_fit_end`` (its first implementation: before the loggers
draw figures and close their files). What is paid once per fit inside that window (the final
loss on the full data, the last checkpoint, result.json) cancels in the cases' difference of a
run of N steps and one of a single step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from bench.measure import Outcome
from framework import hookimpl
from framework.locations import config_dir
from framework.plugin_manager import build_registry, create_plugin_manager
from framework.run import run_training
from framework.schema import store_configs
from framework_plugins._figure_writer import wait_for_figures


def synchronize(device) -> None:
    """Wait for the GPU's queued work, so a timed window holds it (nothing on the CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class FitWindow:
    """Times each fit from its first step to the end of its loop."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None

    @hookimpl(trylast=True)
    def framework_fit_start(self, state):
        synchronize(state.run.device)
        self.started = time.perf_counter()

    @hookimpl(tryfirst=True)
    def framework_fit_end(self, state, result):
        synchronize(state.run.device)
        self.ended = time.perf_counter()

    def seconds(self) -> float:
        # A method, not a property: pluggy reads every attribute of a plugin as it registers it.
        return self.ended - self.started


def flat_params(params: dict) -> list[float]:
    """result.json's ``params`` ({name: nested list}) as one flat list, in the model's order."""
    flat: list[float] = []

    def add(value) -> None:
        if isinstance(value, list):
            for item in value:
                add(item)
        else:
            flat.append(float(value))

    for value in params.values():
        add(value)
    return flat


class FrameworkSide:
    """Runs fits of composed configs with the built-in plugins (no installed third-party ones,
    which would make the figures depend on what a developer has installed)."""

    def __init__(self) -> None:
        self.manager = create_plugin_manager(load_entry_points=False, disabled=())
        self.registry = build_registry(self.manager)
        store_configs(self.registry)
        self.window = FitWindow()
        self.manager.register_plugin(self.window, "bench.fit_window", "bench/framework_side.py")
        self.configs: dict[tuple[str, ...], object] = {}

    def config(self, overrides: Sequence[str]):
        key = tuple(overrides)
        if key not in self.configs:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                self.configs[key] = compose(config_name="config", overrides=list(key))
        return self.configs[key]

    def fit(self, overrides: Sequence[str], *, task: str | None, run_folder: bool) -> tuple[float, Outcome, dict]:
        """One fit: (seconds of its loop, what it trained, its result). ``run_folder``: train into
        a fresh temporary run folder (the TensorBoard logger and checkpoints need one), removed after."""
        cfg = self.config(overrides)
        if not run_folder:
            result = run_training(cfg, manager=self.manager, registry=self.registry, run_dir=None, task=task)
        else:
            with tempfile.TemporaryDirectory(prefix="bench_run_") as folder:
                result = run_training(cfg, manager=self.manager, registry=self.registry, run_dir=Path(folder),
                                      task=task)
                # The figure writer draws the fit's figures after it returns: wait for them (outside
                # the timed window), or it draws during the next timed fit, and recreates this folder
                # after it is removed (one left behind in /tmp per fit with figures).
                wait_for_figures(Path(folder))
        if result["status"] != "completed":
            raise RuntimeError(f"the framework's fit of {list(overrides)} ended {result['status']}: {result.get('error')}")
        outcome = Outcome(final_loss=result["final_loss"], params=flat_params(result["params"] or {}))
        return self.window.seconds(), outcome, result

    def whole_fit(self, overrides: Sequence[str], *, task: str | None, run_folder: bool) -> tuple[float, Outcome]:
        """One fit timed whole, from building the run to result.json and the loggers' last
        writes (the config is composed before)."""
        self.config(overrides)
        started = time.perf_counter()
        _, outcome, _ = self.fit(overrides, task=task, run_folder=run_folder)
        return time.perf_counter() - started, outcome
