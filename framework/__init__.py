"""The framework: one correct, fast, observable training loop for PyTorch, extended by plugins.

A plugin author imports only from here::

    from framework import hookimpl, Component, Dataset, setting

and a notebook or script trains and reloads runs with::

    run = framework.train(["+task=polyfit"])
    again = framework.load_run(run.dir)

Names are imported on first use (PEP 562), so that ``python -m framework`` starts by importing
nothing heavy: a Ctrl-C while torch imports is then caught by ``framework.__main__`` and
reported in one line.
"""

from __future__ import annotations

import importlib

from framework.markers import PROJECT, hookimpl, hookspec

_SOURCES = {
    "Dataset": "framework.data",
    "ConfigError": "framework.errors",
    "DataError": "framework.errors",
    "FrameworkError": "framework.errors",
    "OutputError": "framework.errors",
    "PluginError": "framework.errors",
    "TrainingError": "framework.errors",
    "is_small_model": "framework.outputs",
    "may_be_least_squares": "framework.least_squares",
    "run_problem": "framework.least_squares",
    "Range": "framework.ranges",
    "setting": "framework.ranges",
    "undeclared_ranges": "framework.ranges",
    "KINDS": "framework.registry",
    "AutogradCheck": "framework.registry",
    "Component": "framework.registry",
    "DataConfig": "framework.schema",
    "config_from_signature": "framework.signature_config",
    "options": "framework.signature_config",
    "BuiltRun": "framework.state",
    "LoopState": "framework.state",
    "Progress": "framework.state",
    "StopRequest": "framework.state",
    "Run": "framework.api",
    "train": "framework.api",
    "load_run": "framework.api",
}

__all__ = ["PROJECT", "hookimpl", "hookspec", *_SOURCES]


def __getattr__(name: str):
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'framework' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
