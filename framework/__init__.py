"""The framework: one correct, fast, observable training loop for PyTorch, extended by plugins.

A plugin author imports only from here::

    from framework import hookimpl, Component, Dataset
"""

from framework.data import Dataset
from framework.errors import ConfigError, DataError, FrameworkError, PluginError, TrainingError
from framework.markers import PROJECT, hookimpl, hookspec
from framework.outputs import is_small_model
from framework.registry import KINDS, AutogradCheck, Component
from framework.schema import DataConfig
from framework.signature_config import config_from_signature, options
from framework.state import BuiltRun, LoopState, Progress, StopRequest

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
    "BuiltRun",
    "LoopState",
    "Progress",
    "StopRequest",
    "PluginError",
    "TrainingError",
    "config_from_signature",
    "hookimpl",
    "hookspec",
    "is_small_model",
    "options",
]
