"""A full disk and a console whose reader has gone, met by real processes: one paragraph that
names the path, a stop at a step boundary, nothing half written under a final name, and never a
traceback.

A full disk is simulated without root by a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so
that a write past it fails with EFBIG, as a write to a full disk fails with ENOSPC).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from framework.checkpoints import list_checkpoints, load_checkpoint
from tests.conftest import cli_env


def run_with_file_size_limit(cwd: Path, limit: int, *args: str) -> subprocess.CompletedProcess:
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "framework", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_file_size)


def the_run_folder(cwd: Path) -> Path:
    (folder,) = cwd.glob("outputs/*/*")
    return folder


def assert_nothing_half_written(run_dir: Path) -> None:
    assert not list(run_dir.rglob(".*.tmp")), "a temporary file was left behind"
    for checkpoint in list_checkpoints(run_dir):
        load_checkpoint(checkpoint)  # every checkpoint under its final name is whole


def assert_one_paragraph(stderr: str, names: str) -> None:
    assert "Traceback" not in stderr and "Logging error" not in stderr and "unexpected" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert names in line and "File too large" in line, line


def test_events_that_cannot_be_written_stop_the_run_with_the_folder_named(tmp_path):
    done = run_with_file_size_limit(tmp_path, 30_000, "+task=linear", "trainer.max_steps=3000", "trainer.log_every=1",
                                    "trainer.checkpoint_every=50")
    assert done.returncode == 6, done.stderr
    run_dir = the_run_folder(tmp_path)
    assert_one_paragraph(done.stderr, f"TensorBoard events into {run_dir}")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and 0 < result["steps"] < 3000
    assert str(run_dir) in result["error"]
    assert_nothing_half_written(run_dir)
    assert list_checkpoints(run_dir), "the checkpoints saved before the failure are kept"


def test_a_checkpoint_that_cannot_be_written_leaves_no_partial_file(tmp_path):
    done = run_with_file_size_limit(tmp_path, 10_000, "+task=linear", "trainer.max_steps=300", "logger=[console]",
                                    "trainer.checkpoint_every=100")
    assert done.returncode == 6, done.stderr
    run_dir = the_run_folder(tmp_path)
    assert_one_paragraph(done.stderr, str(run_dir / "checkpoints" / "step_0000000100.pt"))
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["status"], result["steps"]) == ("failed", 100)  # stopped at that step's boundary
    assert list_checkpoints(run_dir) == []
    assert_nothing_half_written(run_dir)


def test_a_snapshot_that_cannot_be_written_is_one_paragraph(tmp_path):
    done = run_with_file_size_limit(tmp_path, 300, "+task=linear", "trainer.max_steps=10", "logger=[]")
    assert done.returncode == 6, done.stderr
    assert_one_paragraph(done.stderr, "cannot write")


def pipe_into_head(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = f"{sys.executable} -m framework {' '.join(args)} | head -2"
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ("+task=linear", "trainer.max_steps=2000", "logger.console.lines=50"),
    ("-m", "+task=linear", "trainer.max_steps=200", "optimizer=sgd,adam"),
], ids=["run", "sweep"])
def test_output_piped_into_head_ends_quietly_and_the_run_completes(tmp_path, args):
    done = pipe_into_head(tmp_path, *args)
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == "", done.stderr
    results = [json.loads(path.read_text()) for path in tmp_path.glob("*/*/**/result.json")]
    assert results and all(result["status"] == "completed" for result in results)
    if "-m" in args:
        assert len(list(tmp_path.glob("multirun/*/*/summary.md"))) == 1
