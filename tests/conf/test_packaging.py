"""An installed copy (pip install .) carries every config folder: pyproject lists each one."""

import pytest

from tests.conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def test_every_config_folder_ships_in_the_package():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {REPO_ROOT / "conf"} | {path.parent for path in (REPO_ROOT / "conf").rglob("*.yaml")}
    for folder in folders:
        package = ".".join(("framework", *folder.relative_to(REPO_ROOT).parts))
        assert package in setuptools["packages"], f"{folder} is not installed: add {package}"
        assert "*.yaml" in setuptools["package-data"][package]
