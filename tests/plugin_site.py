"""Install a throw-away plugin as a real distribution (package + dist-info with an entry point in
group ``framework``) into a folder, for subprocess tests that need the real discovery code."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from framework.markers import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV


def install_distribution(root: Path, *, distribution: str, package: str, source: str, entry_point: str) -> Path:
    """Write ``package/plugin.py`` (from ``source``) and its dist-info into ``root``; return root."""
    folder = root / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "plugin.py").write_text(textwrap.dedent(source))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[framework]\n{entry_point} = {package}.plugin\n")
    return root


def plugin_env(site: Path, **extra_env: str) -> dict[str, str]:
    """The environment of a subprocess that finds the distributions in ``site``, with entry
    points on and nothing disabled, whatever the developer's shell says."""
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": pythonpath, DISABLE_AUTOLOAD_ENV: "", DISABLE_PLUGINS_ENV: "", **extra_env}
