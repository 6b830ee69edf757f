"""The plugin manager and registry: built-ins, entry points, disabling, and errors that name plugins.

Throw-away plugins are built inline (pytest's pytester idea). Entry-point tests write a real tiny
distribution (a package plus its ``.dist-info`` folder) into ``tmp_path`` and put that folder on
``sys.path``, so the real ``importlib.metadata`` discovery code runs.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from framework import Component, ConfigError, PluginError, hookimpl
from framework.locations import BUILTIN_PACKAGE
from framework.markers import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV, ENTRY_POINT_GROUP
from framework.plugin_manager import BUILTIN_PLUGINS, build_registry, create_plugin_manager
from framework.registry import Registry

EXPECTED_COMPONENTS = {
    "model": {"polynomial", "linear", "sine_cubic"},
    "loss": {"mse", "sse", "l1", "huber"},
    "optimizer": {"sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "lbfgs"},
    "data": {"polynomial", "tensor", "sine", "equations", "csv"},
    "logger": {"console", "tensorboard"},
    "scheduler": {"none", "step", "exponential", "cosine", "linear"},
    "callback": {"early_stopping"},
}


@dataclass
class DummyConfig:
    size: int = 1


def write_distribution(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A real, minimal installed distribution: module files plus ``DIST-0.1.dist-info/``.

    ``modules`` maps a dotted module name to its source; ``entry_points`` maps an entry-point
    name to ``module[:attr]`` in group ``framework``.
    """
    for module, source in modules.items():
        parts = module.split(".")
        for depth in range(1, len(parts)):
            package = root.joinpath(*parts[:depth])
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").touch()
        root.joinpath(*parts[:-1]).mkdir(parents=True, exist_ok=True)
        root.joinpath(*parts[:-1], parts[-1] + ".py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away distributions; what they import is forgotten afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))  # also invalidates importlib's caches
    monkeypatch.delenv(DISABLE_PLUGINS_ENV, raising=False)
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("acme"):
            del sys.modules[name]


GOOD_PLUGIN = """
    from dataclasses import dataclass

    import torch

    from framework import Component, hookimpl


    @dataclass
    class CubeConfig:
        scale: float = 1.0


    @hookimpl
    def framework_components():
        return [Component("model", "cube_acme", lambda config, *, data: torch.nn.Identity(), CubeConfig)]
"""


# --------------------------------------------------------------------------------------------
# Built-ins
# --------------------------------------------------------------------------------------------


def test_builtins_register_under_their_module_names(manager):
    names = [name for name, _ in manager.list_name_plugin()]
    assert names == list(BUILTIN_PLUGINS)
    for name in BUILTIN_PLUGINS:
        plugin = manager.get_plugin(name)
        assert plugin.__name__ == f"{BUILTIN_PACKAGE}.{name}"
        assert manager.origins[name] == f"built-in, {BUILTIN_PACKAGE}.{name}"


def test_registry_holds_the_builtin_components(manager):
    registry = build_registry(manager)
    for kind, expected in EXPECTED_COMPONENTS.items():
        assert set(registry.names(kind)) == expected, kind
    assert len(registry) == sum(len(names) for names in EXPECTED_COMPONENTS.values())
    model = registry.get("model", "polynomial")
    assert model.provider == f"'polynomial_model' (built-in, {BUILTIN_PACKAGE}.polynomial_model)"


def test_disabled_plugin_stays_out(monkeypatch):
    monkeypatch.delenv(DISABLE_PLUGINS_ENV, raising=False)
    manager = create_plugin_manager(load_entry_points=False, disabled={"tensorboard_logger"})
    assert manager.get_plugin("tensorboard_logger") is None
    assert manager.is_blocked("tensorboard_logger")
    registry = build_registry(manager)
    assert registry.names("logger") == ["console"]
    with pytest.raises(ConfigError, match="unknown logger 'tensorboard'; available: console"):
        registry.get("logger", "tensorboard")


def test_disable_env_var_keeps_plugins_out(monkeypatch):
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, " tensorboard_logger , csv_data,")
    manager = create_plugin_manager(load_entry_points=False, disabled=None)
    assert manager.get_plugin("tensorboard_logger") is None
    assert manager.get_plugin("csv_data") is None
    assert manager.get_plugin("console_logger") is not None
    registry = build_registry(manager)
    assert registry.names("logger") == ["console"]
    assert "csv" not in registry.names("data")


def test_explicit_disabled_overrides_the_env_var(monkeypatch):
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "tensorboard_logger")
    manager = create_plugin_manager(load_entry_points=False, disabled=())
    assert manager.get_plugin("tensorboard_logger") is not None


# --------------------------------------------------------------------------------------------
# Inline plugins: duplicates and misspelt hooks
# --------------------------------------------------------------------------------------------


class DuplicatePolynomial:
    @hookimpl
    def framework_components(self):
        return [Component("model", "polynomial", lambda config, *, data: None, DummyConfig)]


def test_duplicate_component_names_both_providers(manager):
    manager.register_plugin(DuplicatePolynomial(), "dup_plugin", "from test inline")
    with pytest.raises(PluginError) as caught:
        build_registry(manager)
    message = str(caught.value)
    assert "model 'polynomial' is provided twice" in message
    assert f"'polynomial_model' (built-in, {BUILTIN_PACKAGE}.polynomial_model)" in message
    assert "'dup_plugin' (from test inline)" in message


class MisspeltHook:
    @hookimpl
    def framework_fit_strat(self, state):  # framework_fit_start
        pass


def test_misspelt_hook_is_refused_naming_the_plugin(manager):
    manager.register_plugin(MisspeltHook(), "typo_plugin", "from test inline")
    with pytest.raises(PluginError) as caught:
        manager.check_hooks()
    message = str(caught.value)
    assert "'typo_plugin' (from test inline)" in message
    assert "framework_fit_strat" in message


class UnknownArgument:
    @hookimpl
    def framework_fit_start(self, state, trainer):  # no such argument in the spec
        pass


def test_hook_with_unknown_argument_is_refused_naming_the_plugin(manager):
    with pytest.raises(PluginError) as caught:
        manager.register_plugin(UnknownArgument(), "bad_args", "from test inline")
    message = str(caught.value)
    assert "'bad_args' (from test inline)" in message
    assert "trainer" in message


def test_plugin_name_taken_twice_is_refused(manager):
    manager.register_plugin(DuplicatePolynomial(), "dup", "first")
    with pytest.raises(PluginError, match=r"plugin 'dup' \(second\) cannot be registered"):
        manager.register_plugin(UnknownArgument(), "dup", "second")


def test_plugin_failing_in_components_is_named(manager):
    class Exploding:
        @hookimpl
        def framework_components(self):
            raise RuntimeError("boom")

    manager.register_plugin(Exploding(), "exploding", "from test inline")
    with pytest.raises(PluginError, match=r"'exploding' \(from test inline\) failed in framework_components: RuntimeError: boom"):
        build_registry(manager)


def test_non_component_result_is_refused(manager):
    class WrongType:
        @hookimpl
        def framework_components(self):
            return [("model", "tuple_model")]

    manager.register_plugin(WrongType(), "wrong_type", "from test inline")
    with pytest.raises(PluginError, match="'wrong_type'.*expected framework.Component"):
        build_registry(manager)


# --------------------------------------------------------------------------------------------
# Entry points: a real distribution on sys.path
# --------------------------------------------------------------------------------------------


def test_entry_point_plugin_is_loaded_and_provides_components(site):
    write_distribution(site, "acme-cube", {"acme_cube.plugin": GOOD_PLUGIN}, {"acme_cube": "acme_cube.plugin"})
    manager = create_plugin_manager(load_entry_points=True, disabled=())
    assert manager.get_plugin("acme_cube") is sys.modules["acme_cube.plugin"]
    # Built-ins first, then entry points: one register path, one order. (Plugins a developer has
    # installed may come before or after the test's own.)
    names = [name for name, _ in manager.list_name_plugin()]
    assert names[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS) and "acme_cube" in names[len(BUILTIN_PLUGINS):]
    registry = build_registry(manager)
    component = registry.get("model", "cube_acme")
    assert component.provider == "'acme_cube' (from distribution acme-cube 0.1)"
    assert "cube_acme" in registry.names("model")


def test_entry_points_off_leaves_installed_plugins_out(site):
    write_distribution(site, "acme-cube", {"acme_cube.plugin": GOOD_PLUGIN}, {"acme_cube": "acme_cube.plugin"})
    manager = create_plugin_manager(load_entry_points=False, disabled=())
    assert manager.get_plugin("acme_cube") is None
    assert "acme_cube.plugin" not in sys.modules


def test_autoload_env_var_turns_entry_points_off(site, monkeypatch):
    write_distribution(site, "acme-cube", {"acme_cube.plugin": GOOD_PLUGIN}, {"acme_cube": "acme_cube.plugin"})
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert create_plugin_manager(disabled=()).get_plugin("acme_cube") is None
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV)
    assert create_plugin_manager(disabled=()).get_plugin("acme_cube") is not None


def test_disabled_entry_point_is_not_even_imported(site, monkeypatch):
    write_distribution(site, "acme-cube", {"acme_cube.plugin": GOOD_PLUGIN}, {"acme_cube": "acme_cube.plugin"})
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "acme_cube")
    manager = create_plugin_manager(load_entry_points=True, disabled=None)
    assert manager.get_plugin("acme_cube") is None
    assert "acme_cube.plugin" not in sys.modules
    with pytest.raises(ConfigError, match="unknown model 'cube_acme'; available: .*linear, polynomial, sine_cubic") as caught:
        build_registry(manager).get("model", "cube_acme")
    assert "cube_acme" not in str(caught.value).split("available:")[1]


def test_entry_point_import_failure_names_plugin_and_distribution(site):
    write_distribution(
        site, "acme-broken",
        {"acme_broken.plugin": "import acme_dependency_that_is_not_installed\n"},
        {"acme_broken": "acme_broken.plugin"},
    )
    with pytest.raises(PluginError) as caught:
        create_plugin_manager(load_entry_points=True, disabled=())
    message = str(caught.value)
    assert 'error importing plugin "acme_broken"' in message
    assert "from distribution acme-broken 0.1" in message
    assert "ModuleNotFoundError" in message and "acme_dependency_that_is_not_installed" in message


def test_entry_point_duplicate_component_names_builtin_and_distribution(site):
    source = """
        from dataclasses import dataclass

        from framework import Component, hookimpl


        @dataclass
        class Config:
            pass


        @hookimpl
        def framework_components():
            return [Component("loss", "mse", lambda config: None, Config)]
    """
    write_distribution(site, "acme-losses", {"acme_losses.plugin": source}, {"acme_losses": "acme_losses.plugin"})
    manager = create_plugin_manager(load_entry_points=True, disabled=())
    with pytest.raises(PluginError) as caught:
        build_registry(manager)
    message = str(caught.value)
    assert "loss 'mse' is provided twice" in message
    assert f"'losses' (built-in, {BUILTIN_PACKAGE}.losses)" in message
    assert "'acme_losses' (from distribution acme-losses 0.1)" in message


def test_entry_point_named_like_a_builtin_is_refused(site):
    write_distribution(site, "acme-clash", {"acme_clash.plugin": GOOD_PLUGIN}, {"losses": "acme_clash.plugin"})
    with pytest.raises(PluginError) as caught:
        create_plugin_manager(load_entry_points=True, disabled=())
    message = str(caught.value)
    assert "plugin name 'losses' from distribution acme-clash 0.1 is already taken" in message
    assert f"'losses' (built-in, {BUILTIN_PACKAGE}.losses)" in message


def test_entry_point_with_misspelt_hook_is_refused_naming_plugin_and_distribution(site):
    source = """
        from framework import hookimpl


        @hookimpl
        def framework_fit_strat(state):
            pass
    """
    write_distribution(site, "acme-typo", {"acme_typo.plugin": source}, {"acme_typo": "acme_typo.plugin"})
    with pytest.raises(PluginError) as caught:
        create_plugin_manager(load_entry_points=True, disabled=())
    message = str(caught.value)
    assert "'acme_typo' (from distribution acme-typo 0.1)" in message
    assert "framework_fit_strat" in message


# --------------------------------------------------------------------------------------------
# The registry on its own
# --------------------------------------------------------------------------------------------


def test_unknown_name_lists_what_exists(manager):
    registry = build_registry(manager)
    with pytest.raises(ConfigError) as caught:
        registry.get("model", "polynomal")
    assert str(caught.value) == "unknown model 'polynomal'; available: linear, polynomial, sine_cubic"
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'; available: adagrad, adam, adamw, lbfgs, nadam, rmsprop, sgd"):
        registry.get("optimizer", "adamm")


def test_unknown_name_in_an_empty_kind_says_none():
    with pytest.raises(ConfigError, match="unknown model 'x'; available: none"):
        Registry().get("model", "x")


def test_registry_refuses_unknown_kind_and_non_dataclass_config():
    registry = Registry()
    with pytest.raises(PluginError, match="'p' contributes 'thing' of unknown kind 'widget'; kinds are: data, model"):
        registry.add(Component("widget", "thing", lambda config: None, DummyConfig), "'p'")
    with pytest.raises(PluginError, match="'p' contributes model 'thing' whose config .* is not a dataclass"):
        registry.add(Component("model", "thing", lambda config: None, dict), "'p'")
    assert len(registry) == 0


def test_a_component_config_with_its_own_name_field_is_refused(manager):
    from dataclasses import dataclass

    from framework import Component
    from framework.registry import Registry

    @dataclass
    class Named:
        name: str = "mine"

    with pytest.raises(PluginError, match="field called 'name'"):
        Registry().add(Component("model", "named", lambda config, *, data: None, Named), "'x' (test)")
