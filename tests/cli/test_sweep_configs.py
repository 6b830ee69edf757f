"""End to end: a sweep whose jobs' configs come from twins and from the sweeper's check
(framework/sweep_configs.py) writes exactly what Hydra's own compositions write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env

# The CLI with Hydra's own composition of every job: framework.sweep_configs installs nothing.
WITHOUT_SWEEP_CONFIGS = ("import contextlib, framework.sweep_configs as s; s.installed = contextlib.nullcontext; "
                         "from framework.cli import main; main()")


def sweep(folder: Path, *args: str, fast: bool) -> subprocess.CompletedProcess:
    folder.mkdir()
    command = ["-m", "framework"] if fast else ["-c", WITHOUT_SWEEP_CONFIGS]
    return subprocess.run([sys.executable, *command, "-m", *args], cwd=folder, env=cli_env(),
                          capture_output=True, text=True, timeout=300)


def hydra_files(folder: Path) -> dict[str, str]:
    """Every job's .hydra/*.yaml, the sweep's own folder and its run's place written alike."""
    (sweep_dir,) = folder.glob("multirun/*/*")
    files = {}
    for path in sorted(sweep_dir.glob("*/.hydra/*.yaml")):
        text = path.read_text().replace(str(sweep_dir.relative_to(folder)), "<sweep>")
        files[str(path.relative_to(sweep_dir))] = text.replace(str(folder), "<root>")
    return files


@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_job_folders_are_the_same_as_with_hydras_compositions(launcher, tmp_path):
    args = [f"hydra/launcher={launcher}", "+task=polyfit", "trainer.max_steps=2", "trainer.device=cpu",
            "optimizer=sgd,adam", "optimizer.lr=0.1,0.01", "trainer.seed=1,2"]
    ours = sweep(tmp_path / "ours", *args, fast=True)
    hydras = sweep(tmp_path / "hydras", *args, fast=False)
    assert ours.returncode == hydras.returncode == 0, ours.stderr + hydras.stderr
    ours_files, hydras_files = hydra_files(tmp_path / "ours"), hydra_files(tmp_path / "hydras")
    assert len(ours_files) == 8 * 3  # config.yaml, hydra.yaml and overrides.yaml of each job
    assert ours_files == hydras_files


def test_a_bad_value_is_reported_as_by_hydra(tmp_path):
    """The second job's config comes from the first's twin; its error is Hydra's, and as before
    no job of the batch runs."""
    args = ["+task=polyfit", "trainer.max_steps=2", "trainer.device=cpu", "optimizer.lr=0.1,abc,0.2"]
    ours = sweep(tmp_path / "ours", *args, fast=True)
    hydras = sweep(tmp_path / "hydras", *args, fast=False)
    assert ours.returncode == hydras.returncode == 2
    assert ours.stderr == hydras.stderr
    assert "Error merging override optimizer.lr=abc" in ours.stderr
    assert "could not be converted to Float" in ours.stderr
    assert not list((tmp_path / "ours").glob("multirun/*/*/*/result.json"))
