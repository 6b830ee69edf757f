"""The framework: one correct, fast, observable training loop for PyTorch, extended by plugins.

A plugin author imports only from here::

    from framework import hookimpl, Component, Dataset
"""

from framework.data import Dataset
from framework.errors import ConfigError, DataError, FrameworkError, PluginError, TrainingError
from framework.markers import PROJECT, hookimpl, hookspec
from framework.registry import KINDS, AutogradCheck, Component
from framework.schema import DataConfig
from framework.state import LoopState

__all__ = [
    "PROJECT",
    "KINDS",
    "AutogradCheck",
    "Component",
    "ConfigError",
    "DataError",
    "DataConfig",
    "Dataset",
    "FrameworkError",
    "LoopState",
    "PluginError",
    "TrainingError",
    "hookimpl",
    "hookspec",
]
