"""The component registry: (kind, name) -> factory and config dataclass, with its provider."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from framework.errors import ConfigError, PluginError

KINDS = ("data", "model", "loss", "optimizer", "scheduler", "logger")


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


class Registry:
    """Components by kind and name. Filled once from the plugins, then read by the build."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], Component] = {}

    def add(self, component: Component, provider: str) -> None:
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
            first = self._components[key].provider
            raise PluginError(
                f"{component.kind} {component.name!r} is provided twice: by plugin {first} and by "
                f"plugin {provider}. Uninstall one, or disable it with FRAMEWORK_DISABLE_PLUGINS."
            )
        self._components[key] = dataclasses.replace(component, provider=provider)

    def get(self, kind: str, name: str) -> Component:
        try:
            return self._components[(kind, name)]
        except KeyError:
            raise ConfigError(
                f"unknown {kind} {name!r}; available: {', '.join(self.names(kind)) or 'none'}"
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._components if k == kind)

    def __iter__(self):
        return iter(sorted(self._components.values(), key=lambda c: (c.kind, c.name)))

    def __len__(self) -> int:
        return len(self._components)
