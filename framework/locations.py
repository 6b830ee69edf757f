"""Where the built-in plugins and the YAML configs live, in a checkout and when installed.

The repository keeps them in top-level ``plugins/`` and ``conf/``. A package imported as plain
``plugins`` could be shadowed by a user's own ``./plugins/`` folder (``python -m`` puts the working
directory first on ``sys.path``) or clash with another distribution's, so the built-ins are never
imported under that name: the build installs ``plugins/`` as ``framework_plugins`` and ``conf/``
as ``framework/conf`` (see pyproject.toml), and a checkout loads its own ``plugins/`` folder by
path under the same ``framework_plugins`` name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILTIN_PACKAGE = "framework_plugins"
_PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The repository root if ``framework`` runs from a source checkout (editable or not)."""
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "plugins" / "__init__.py").is_file():
        return root
    return None


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and ``task/*.yaml``."""
    root = checkout_root()
    return root / "conf" if root else _PACKAGE_DIR / "conf"


def builtin_plugins_dir() -> Path | None:
    """The folder of the built-in plugin modules, found without importing them."""
    root = checkout_root()
    if root is not None:
        return root / "plugins"
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    return Path(locations[0]) if locations else None


def builtin_package() -> ModuleType:
    """Import the built-in plugins package as ``framework_plugins``, never as ``plugins``."""
    if BUILTIN_PACKAGE in sys.modules:
        return sys.modules[BUILTIN_PACKAGE]
    root = checkout_root()
    if root is None:
        return importlib.import_module(BUILTIN_PACKAGE)
    folder = root / "plugins"
    spec = importlib.util.spec_from_file_location(
        BUILTIN_PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[BUILTIN_PACKAGE] = module
    spec.loader.exec_module(module)
    return module
