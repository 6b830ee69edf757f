"""The component registry: (kind, name) -> factory and config dataclass, with its provider."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from framework.errors import ConfigError, PluginError
from framework.markers import DISABLE_COMPONENTS_ENV, DISABLE_PLUGINS_ENV

KINDS = ("data", "model", "loss", "optimizer", "scheduler", "logger", "callback")
# Kinds chosen several at a time (logger=[console,tensorboard]): each chosen one is an object that
# is a plugin for the length of a fit, with its settings under <kind>.<name>.
PER_FIT_KINDS = ("logger", "callback")


@dataclass(frozen=True)
class Component:
    """One selectable component, as a plugin contributes it (see ``framework_components``)."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type
    help: str = ""
    # Filled in by the registry: which plugin (and distribution) provided it.
    provider: str = field(default="", compare=False)


@dataclass(frozen=True)
class AutogradCheck:
    """A custom autograd Function and a way to make double-precision inputs to gradcheck it."""

    name: str
    function: type
    make_inputs: Callable[[], tuple]


@dataclass(frozen=True)
class DisabledComponent:
    """One entry of FRAMEWORK_DISABLE_COMPONENTS: ``kind.name`` (whoever provides it) or
    ``plugin:kind.name`` (that plugin's only, so another plugin's of the same name can be used)."""

    kind: str
    name: str
    plugin: str | None = None

    @classmethod
    def parse(cls, text: str) -> DisabledComponent:
        plugin, colon, reference = text.strip().rpartition(":")
        kind, dot, name = reference.partition(".")
        if not dot or not name or kind not in KINDS or (colon and not plugin):
            raise ConfigError(
                f"{DISABLE_COMPONENTS_ENV} holds {text.strip()!r}, which is not a component: write kind.name "
                f"(e.g. loss.huber) or plugin:kind.name (e.g. losses:loss.huber), comma-separated; "
                f"kinds are: {', '.join(KINDS)}"
            )
        return cls(kind, name, plugin or None)

    def matches(self, component: Component, plugin: str) -> bool:
        return (component.kind, component.name) == (self.kind, self.name) and self.plugin in (None, plugin)

    def __str__(self) -> str:
        return f"{self.plugin}:{self.kind}.{self.name}" if self.plugin else f"{self.kind}.{self.name}"


def check_disabled(disabled: Iterable[DisabledComponent], offered: Iterable[tuple[str, Component]]) -> None:
    """Refuse FRAMEWORK_DISABLE_COMPONENTS entries that match none of the (plugin name,
    component) pairs the plugins offer, so a misspelt entry is never ignored silently."""
    offered = list(offered)
    problems = []
    for entry in disabled:
        if any(entry.matches(component, plugin) for plugin, component in offered):
            continue
        names = sorted({component.name for plugin, component in offered
                        if component.kind == entry.kind and entry.plugin in (None, plugin)})
        source = f"plugin {entry.plugin!r}" if entry.plugin else "any plugin"
        problems.append(f"{entry} matches no {entry.kind} of {source} ({entry.kind} components there: "
                        f"{', '.join(names) or 'none; is that plugin loaded?'})")
    if problems:
        raise ConfigError(f"{DISABLE_COMPONENTS_ENV} names components that do not exist: {'; '.join(problems)}")


class Registry:
    """Components by kind and name. Filled once from the plugins, then read by the build.

    Components matching an entry of ``disabled`` are left out as they are added.
    """

    def __init__(self, disabled: Iterable[DisabledComponent] = ()) -> None:
        self._components: dict[tuple[str, str], Component] = {}
        self._plugins: dict[tuple[str, str], str] = {}  # which plugin name provided each component
        self._disabled = tuple(disabled)

    def add(self, component: Component, provider: str, plugin: str = "") -> None:
        """Register ``component`` from the plugin described by ``provider`` (whose plugin name,
        when given, lets errors and FRAMEWORK_DISABLE_COMPONENTS address it)."""
        if any(entry.matches(component, plugin) for entry in self._disabled):
            return
        if component.kind not in KINDS:
            raise PluginError(
                f"plugin {provider} contributes {component.name!r} of unknown kind "
                f"{component.kind!r}; kinds are: {', '.join(KINDS)}"
            )
        if not dataclasses.is_dataclass(component.config):
            raise PluginError(
                f"plugin {provider} contributes {component.kind} {component.name!r} whose config "
                f"{component.config!r} is not a dataclass"
            )
        if any(f.name == "name" for f in dataclasses.fields(component.config)):
            raise PluginError(
                f"plugin {provider} contributes {component.kind} {component.name!r} whose config has a "
                "field called 'name'; that key is the framework's (it says which component was chosen)"
            )
        key = (component.kind, component.name)
        if key in self._components:
            raise PluginError(self._provided_twice(component, provider, plugin))
        self._components[key] = dataclasses.replace(component, provider=provider)
        self._plugins[key] = plugin

    def _provided_twice(self, component: Component, provider: str, plugin: str) -> str:
        key = (component.kind, component.name)
        first, first_plugin = self._components[key].provider, self._plugins[key]
        message = f"{component.kind} {component.name!r} is provided twice: by plugin {first} and by plugin {provider}."
        if not (first_plugin and plugin):
            return f"{message} Uninstall one, or disable one plugin with {DISABLE_PLUGINS_ENV}."
        reference = f"{component.kind}.{component.name}"
        return (
            f"{message} To use the one from {plugin!r} and keep the rest of {first_plugin!r}, set "
            f"{DISABLE_COMPONENTS_ENV}={first_plugin}:{reference}; to keep the one from {first_plugin!r}, set "
            f"{DISABLE_COMPONENTS_ENV}={plugin}:{reference}. ({DISABLE_PLUGINS_ENV}=NAME disables a whole plugin.)"
        )

    def get(self, kind: str, name: str) -> Component:
        try:
            return self._components[(kind, name)]
        except KeyError:
            raise ConfigError(
                f"unknown {kind} {name!r}; available: {', '.join(self.names(kind)) or 'none'}"
            ) from None

    def plugin(self, kind: str, name: str) -> str:
        """The name of the plugin that provided a registered component ("" if not told)."""
        return self._plugins.get((kind, name), "")

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._components if k == kind)

    def __iter__(self):
        return iter(sorted(self._components.values(), key=lambda c: (c.kind, c.name)))

    def __len__(self) -> int:
        return len(self._components)
