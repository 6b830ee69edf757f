"""The plugin manager factory: built-ins, then entry points, one register path for both."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from typing import Any, Iterable

import pluggy

from framework import hookspecs
from framework.errors import FrameworkError, PluginError
from framework.hook_calls import PLUGIN_FAILURES, call_implementation, describe_failure
from framework.locations import BUILTIN_PACKAGE, builtin_package
from framework.markers import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_COMPONENTS_ENV,
    DISABLE_PLUGINS_ENV,
    ENTRY_POINT_GROUP,
    PROJECT,
)
from framework.registry import Component, DisabledComponent, Registry, check_disabled

# The built-in plugin modules of plugins/, in registration order. An in-code list (not entry
# points) so that an uninstalled checkout works; each is registered exactly like a third-party
# plugin and can be disabled by this name.
BUILTIN_PLUGINS = (
    "default_step",
    "polynomial_model",
    "linear_model",
    "sine_cubic_model",
    "losses",
    "optimizers",
    "schedulers",
    "synthetic_data",
    "csv_data",
    "console_logger",
    "tensorboard_logger",
    "convergence_stops",
    "optimality_gap",
    "early_stopping",
    "doctor",
    "validation",
)


BUILTIN = "built-in"  # the distribution of the plugins in plugins/ and of the framework's own


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from, for error messages."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}
        # Which distribution each plugin comes from: BUILTIN for ours, else "name version".
        self.distributions: dict[str, str] = {}

    def register_plugin(self, plugin: Any, name: str, origin: str, distribution: str | None = None) -> None:
        try:
            self.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as error:
            raise PluginError(f"plugin {name!r} ({origin}) cannot be registered: {error}") from error
        self.origins[name] = origin
        if distribution is not None:
            self.distributions[name] = distribution

    def check_hooks(self) -> None:
        """Refuse hook implementations that match no specification (a misspelt hook name)."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError as error:
            raise PluginError(
                f"plugin {self.describe(self.get_name(error.plugin))} implements a hook that does not exist: "
                f"{error}. Hooks are listed in framework/hookspecs.py."
            ) from error

    def describe(self, name: str) -> str:
        return f"{name!r} ({self.origins.get(name, 'registered at run time')})"

    def distribution(self, name: str) -> str:
        """``built-in``, ``name version`` of the installed distribution, or, for a plugin that
        came from neither (one a script registered), where it came from."""
        return self.distributions.get(name) or f"no distribution: {self.origins.get(name, 'registered at run time')}"


def disabled_plugins(environ: dict[str, str] | None = None) -> set[str]:
    """Names listed, comma-separated, in FRAMEWORK_DISABLE_PLUGINS."""
    return set(_listed(DISABLE_PLUGINS_ENV, environ))


def disabled_components(environ: dict[str, str] | None = None) -> list[DisabledComponent]:
    """Components listed, comma-separated, in FRAMEWORK_DISABLE_COMPONENTS (kind.name or
    plugin:kind.name); a malformed entry is refused."""
    return [DisabledComponent.parse(entry) for entry in _listed(DISABLE_COMPONENTS_ENV, environ)]


def _listed(variable: str, environ: dict[str, str] | None) -> list[str]:
    value = (os.environ if environ is None else environ).get(variable, "")
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def create_plugin_manager(
    *, load_entry_points: bool | None = None, disabled: Iterable[str] | None = None
) -> PluginManager:
    """Build a fresh plugin manager: built-ins, then installed entry points, then check hooks.

    ``load_entry_points`` defaults to on unless FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD is set;
    ``disabled`` defaults to the names in FRAMEWORK_DISABLE_PLUGINS.
    """
    if load_entry_points is None:
        load_entry_points = not os.environ.get(DISABLE_AUTOLOAD_ENV)
    blocked = disabled_plugins() if disabled is None else set(disabled)
    manager = PluginManager()
    for name in blocked:
        manager.set_blocked(name)

    builtin_package()  # framework_plugins, from the checkout or the installed package
    for name in BUILTIN_PLUGINS:
        if name in blocked:
            continue
        module_name = f"{BUILTIN_PACKAGE}.{name}"
        module = _import_plugin(functools.partial(importlib.import_module, module_name), name, "built-in")
        manager.register_plugin(module, name, f"built-in, {module_name}", BUILTIN)

    if load_entry_points:
        for entry_point, distribution in _entry_points():
            if entry_point.name in blocked:
                continue
            origin = f"from distribution {distribution}"
            if manager.get_plugin(entry_point.name) is not None:
                raise PluginError(
                    f"plugin name {entry_point.name!r} {origin} is already taken by plugin "
                    f"{manager.describe(entry_point.name)}"
                )
            plugin = _import_plugin(entry_point.load, entry_point.name, origin)
            manager.register_plugin(plugin, entry_point.name, origin, distribution)

    manager.check_hooks()
    return manager


def call_each(manager: PluginManager, hook_name: str, only: Iterable[str] | None = None,
              **arguments: Any) -> list[tuple[str, Any]]:
    """Call a hook one implementation at a time: [(plugin name, result)], in registration order.

    For hooks whose results belong to the plugin that gave them (contributions, saved states).
    Each implementation gets the arguments it names (pluggy's opt-in arguments); ``only``
    limits the call to those plugin names. A failure names the plugin.
    """
    wanted = None if only is None else set(only)
    results = []
    for impl in getattr(manager.hook, hook_name).get_hookimpls():  # in registration order
        if wanted is not None and impl.plugin_name not in wanted:
            continue
        try:
            returned = call_implementation(impl, arguments)
        except FrameworkError:
            raise
        except PLUGIN_FAILURES as error:
            raise PluginError(
                f"plugin {manager.describe(impl.plugin_name)} failed in {hook_name}: {describe_failure(error)}"
            ) from error
        results.append((impl.plugin_name, returned))
    return results


def contributions(manager: PluginManager, hook_name: str, expected: type) -> list[tuple[str, Any]]:
    """Call a contribution hook plugin by plugin: [(provider, item)], failures naming the plugin."""
    return [(manager.describe(name), item) for name, item in _contributions_by_plugin(manager, hook_name, expected)]


def _contributions_by_plugin(manager: PluginManager, hook_name: str, expected: type) -> list[tuple[str, Any]]:
    """[(plugin name, item)] from a contribution hook, each item checked to be ``expected``."""
    items = []
    for name, returned in call_each(manager, hook_name):
        for item in returned or ():
            if not isinstance(item, expected):
                raise PluginError(
                    f"plugin {manager.describe(name)} returned {item!r} from {hook_name}; "
                    f"expected framework.{expected.__name__} objects"
                )
            items.append((name, item))
    return items


def build_registry(manager: PluginManager, disabled: Iterable[DisabledComponent] | None = None) -> Registry:
    """Ask every plugin for its components and fill a registry, naming providers on conflict.

    ``disabled`` (default: FRAMEWORK_DISABLE_COMPONENTS) leaves single components out, so a
    plugin's component can replace a built-in of the same name without losing the rest of the
    built-in plugin; an entry that matches nothing is refused.
    """
    disabled = disabled_components() if disabled is None else list(disabled)
    offered = _contributions_by_plugin(manager, "framework_components", Component)
    check_disabled(disabled, offered)
    registry = Registry(disabled)
    for name, component in offered:
        registry.add(component, manager.describe(name), plugin=name)
    return registry


def _entry_points():
    """(entry point, 'dist version') for every installed plugin (entry_points() lists each
    distribution once, even when it is on sys.path twice)."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist
        origin = f"{distribution.metadata['Name']} {distribution.version}" if distribution else "unknown"
        yield entry_point, origin


def _import_plugin(load, name: str, origin: str):
    try:
        return load()
    except Exception as error:
        raise PluginError(
            f'error importing plugin "{name}" ({origin}): {type(error).__name__}: {error}'
        ) from error
