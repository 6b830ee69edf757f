"""The hook specifications are the contract: each docstring documents every argument, when the hook
is called and how results combine; every built-in hook implementation fits a specification."""

from __future__ import annotations

import inspect
import re

import pytest

from framework import hookspecs
from framework.markers import PROJECT
from framework.plugin_manager import BUILTIN_PLUGINS

SPECS = {
    name: function
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(function, f"{PROJECT}_spec")
}


def spec_arguments(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_specs_are_found():
    # Guards the tests below against passing on an empty module.
    assert {"framework_components", "framework_fit_start", "framework_log", "framework_fit_end"} <= set(SPECS)


def test_every_function_in_the_module_is_a_spec():
    functions = {name for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
                 if function.__module__ == hookspecs.__name__}
    assert functions == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_name_has_the_project_prefix(name):
    assert name.startswith(f"{PROJECT}_")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_docstring_is_the_contract(name):
    doc = inspect.getdoc(SPECS[name])
    assert doc, f"{name} has no docstring"
    undocumented = [arg for arg in spec_arguments(SPECS[name]) if not re.search(rf"\b{arg}\b", doc)]
    assert not undocumented, f"{name}'s docstring does not mention {undocumented}"
    assert re.search(r"\bCalled\b", doc), f"{name}'s docstring does not say when it is called"
    assert re.search(r"\bresults?\s+(are|is)\b", doc, re.IGNORECASE), (
        f"{name}'s docstring does not say how results combine"
    )


def test_module_docstring_lists_the_specs_in_definition_order():
    listed = re.findall(rf"^\s+({PROJECT}_\w+)", hookspecs.__doc__, re.MULTILINE)
    source = inspect.getsource(hookspecs)
    defined = sorted(SPECS, key=lambda name: source.index(f"def {name}("))
    assert listed == defined


def builtin_hookimpls(manager):
    """(where, hook name, function) for every hookimpl in the built-in plugin modules, including
    those on classes the modules define (loggers are registered only for the length of a fit)."""
    found = []
    for plugin_name in BUILTIN_PLUGINS:
        module = manager.get_plugin(plugin_name)
        holders = [(plugin_name, module)] + [
            (f"{plugin_name}.{cls.__name__}", cls)
            for cls in vars(module).values()
            if inspect.isclass(cls) and cls.__module__ == module.__name__
        ]
        for where, holder in holders:
            for attribute in dir(holder):
                if manager.parse_hookimpl_opts(holder, attribute) is not None:
                    found.append((where, attribute, getattr(holder, attribute)))
    return found


def test_builtin_hookimpls_are_found(manager):
    found = {(where, hook) for where, hook, _ in builtin_hookimpls(manager)}
    # Module-level and class-level implementations are both seen.
    assert ("default_step", "framework_configure_step") in found
    assert ("console_logger", "framework_components") in found
    assert ("console_logger.ConsoleLogger", "framework_log") in found
    assert ("tensorboard_logger.TensorBoardLogger", "framework_fit_end") in found


def test_builtin_hookimpls_take_only_spec_arguments(manager):
    problems = []
    for where, hook, function in builtin_hookimpls(manager):
        if hook not in SPECS:
            problems.append(f"{where}.{hook} implements no hook specification")
            continue
        arguments = [arg for arg in inspect.signature(function).parameters if arg != "self"]
        extra = set(arguments) - set(spec_arguments(SPECS[hook]))
        if extra:
            problems.append(f"{where}.{hook} takes {sorted(extra)}, not in the spec {spec_arguments(SPECS[hook])}")
    assert not problems, "\n".join(problems)
