"""The built-in plugins are imported as ``framework_plugins``, never as ``plugins``, so a user's own
``./plugins/`` folder (first on ``sys.path`` under ``python -m``) cannot shadow them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framework import locations
from framework.locations import BUILTIN_PACKAGE, builtin_package
from framework.plugin_manager import BUILTIN_PLUGINS
from tests.conftest import REPO_ROOT, run_cli


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A working directory holding a user's own ``plugins`` package that must never be imported."""
    own = tmp_path / "plugins"
    own.mkdir()
    (own / "__init__.py").write_text('raise RuntimeError("the user\'s own ./plugins was imported")\n')
    (own / "losses.py").write_text('raise RuntimeError("the user\'s own ./plugins/losses.py was imported")\n')
    return tmp_path


def test_builtin_package_is_framework_plugins():
    package = builtin_package()
    assert package.__name__ == BUILTIN_PACKAGE == "framework_plugins"
    assert sys.modules[BUILTIN_PACKAGE] is package
    assert Path(package.__file__).resolve() == (REPO_ROOT / "plugins" / "__init__.py").resolve()


def test_checkout_root_and_config_dir():
    assert locations.checkout_root() == REPO_ROOT.resolve()
    assert locations.config_dir() == REPO_ROOT.resolve() / "conf"
    assert (locations.config_dir() / "config.yaml").is_file()


def test_own_plugins_folder_does_not_shadow_builtins(user_folder):
    run_dir = user_folder / "run"
    completed = run_cli(
        "data=polynomial", "model=polynomial", "trainer.max_steps=3", f"hydra.run.dir={run_dir}",
        cwd=user_folder, env={"FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD": "1"}, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "own ./plugins" not in completed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 3


def test_no_module_named_plugins_is_imported(user_folder):
    # Run from the user's folder: ``python -c`` puts the working directory first on sys.path,
    # exactly as ``python -m`` does.
    script = textwrap.dedent(
        """
        import json, sys
        from framework.plugin_manager import build_registry, create_plugin_manager

        manager = create_plugin_manager(load_entry_points=False, disabled=())
        build_registry(manager)
        print(json.dumps({
            "shadowable": sorted(m for m in sys.modules if m == "plugins" or m.startswith("plugins.")),
            "builtins": {name: plugin.__name__
                         for name, plugin in manager.list_name_plugin()},
            "path0": sys.path[0],
        }))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=user_folder, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["path0"] in ("", str(user_folder))  # the user's folder was importable first
    assert report["shadowable"] == []
    assert report["builtins"] == {name: f"{BUILTIN_PACKAGE}.{name}" for name in BUILTIN_PLUGINS}
