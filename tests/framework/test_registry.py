"""The registry on its own: disabling single components (FRAMEWORK_DISABLE_COMPONENTS) and the
duplicate-name error that says exactly how to choose between two providers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from framework import Component, ConfigError, PluginError, hookimpl
from framework.markers import DISABLE_COMPONENTS_ENV
from framework.plugin_manager import build_registry, disabled_components
from framework.registry import DisabledComponent, Registry, check_disabled


@dataclass
class HuberLikeConfig:
    beta: float = 0.5


def loss(name: str) -> Component:
    return Component("loss", name, lambda config: None, HuberLikeConfig)


class AcmeHuber:
    """An inline plugin that contributes a loss named like a built-in one."""

    @hookimpl
    def framework_components(self):
        return [loss("huber")]


@pytest.mark.parametrize("text, expected", [
    ("loss.huber", DisabledComponent("loss", "huber")),
    (" losses:loss.huber ", DisabledComponent("loss", "huber", plugin="losses")),
    ("acme.losses:model.cube", DisabledComponent("model", "cube", plugin="acme.losses")),
])
def test_disabled_component_entries_parse(text, expected):
    assert DisabledComponent.parse(text) == expected


@pytest.mark.parametrize("text", ["huber", "loss.", "losses:huber", "widget.thing", ":loss.huber"])
def test_malformed_entry_is_refused_with_the_syntax(text):
    with pytest.raises(ConfigError) as caught:
        DisabledComponent.parse(text)
    message = str(caught.value)
    assert DISABLE_COMPONENTS_ENV in message and repr(text) in message
    assert "kind.name (e.g. loss.huber) or plugin:kind.name" in message


def test_env_var_lists_entries_comma_separated():
    environ = {DISABLE_COMPONENTS_ENV: "loss.huber, acme:model.cube,,"}
    assert disabled_components(environ) == [DisabledComponent("loss", "huber"),
                                            DisabledComponent("model", "cube", plugin="acme")]
    assert disabled_components({}) == []


def test_plugin_qualified_entry_leaves_out_that_plugins_component_only():
    registry = Registry([DisabledComponent("loss", "huber", plugin="losses")])
    registry.add(loss("huber"), "'losses' (built-in)", plugin="losses")
    registry.add(loss("mse"), "'losses' (built-in)", plugin="losses")
    registry.add(loss("huber"), "'acme' (from acme 0.1)", plugin="acme")
    assert registry.names("loss") == ["huber", "mse"]
    assert registry.get("loss", "huber").provider == "'acme' (from acme 0.1)"


def test_plain_entry_leaves_out_the_component_whoever_provides_it():
    registry = Registry([DisabledComponent("loss", "huber")])
    registry.add(loss("huber"), "'losses'", plugin="losses")
    registry.add(loss("huber"), "'acme'", plugin="acme")
    registry.add(loss("mse"), "'losses'", plugin="losses")
    assert registry.names("loss") == ["mse"]


def test_entry_that_matches_nothing_is_refused_naming_what_exists():
    disabled = [DisabledComponent("loss", "hubber"), DisabledComponent("loss", "huber", plugin="acme")]
    offered = [("losses", loss("huber")), ("losses", loss("mse")), ("models", Component("model", "hubber", None, HuberLikeConfig))]
    check_disabled(disabled[:0], offered)  # nothing disabled: nothing to refuse
    with pytest.raises(ConfigError) as caught:
        check_disabled(disabled, offered)
    message = str(caught.value)
    assert message.startswith(f"{DISABLE_COMPONENTS_ENV} names components that do not exist")
    assert "loss.hubber matches no loss of any plugin (loss components there: huber, mse)" in message
    assert "acme:loss.huber matches no loss of plugin 'acme' (loss components there: none; is that plugin loaded?)" in message


def test_duplicate_names_both_providers_and_the_exact_settings(manager):
    manager.register_plugin(AcmeHuber(), "acme_losses", "from test inline")
    with pytest.raises(PluginError) as caught:
        build_registry(manager, disabled=())
    message = str(caught.value)
    assert "loss 'huber' is provided twice: by plugin 'losses' (built-in" in message
    assert "and by plugin 'acme_losses' (from test inline)" in message
    assert f"{DISABLE_COMPONENTS_ENV}=losses:loss.huber" in message
    assert f"{DISABLE_COMPONENTS_ENV}=acme_losses:loss.huber" in message


def test_disabling_the_builtin_keeps_the_rest_of_its_plugin(manager):
    manager.register_plugin(AcmeHuber(), "acme_losses", "from test inline")
    registry = build_registry(manager, disabled=[DisabledComponent("loss", "huber", plugin="losses")])
    assert registry.names("loss") == ["huber", "l1", "mse", "sse"]
    assert registry.get("loss", "huber").config is HuberLikeConfig
    assert registry.get("loss", "mse").provider.startswith("'losses' (built-in")


def test_a_misspelt_entry_is_reported_before_a_duplicate_name(manager):
    manager.register_plugin(AcmeHuber(), "acme_losses", "from test inline")
    with pytest.raises(ConfigError, match="losses:loss.hubber matches no loss of plugin 'losses'"):
        build_registry(manager, disabled=[DisabledComponent("loss", "hubber", plugin="losses")])


def test_build_registry_reads_the_env_var(manager, monkeypatch):
    monkeypatch.setenv(DISABLE_COMPONENTS_ENV, "loss.l1")
    assert "l1" not in build_registry(manager).names("loss")
    monkeypatch.setenv(DISABLE_COMPONENTS_ENV, "loss.l2")
    with pytest.raises(ConfigError, match="loss.l2 matches no loss of any plugin"):
        build_registry(manager)
