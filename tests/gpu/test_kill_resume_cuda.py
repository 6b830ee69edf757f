"""Real processes and real signals on a CUDA device: ``python -m framework ... trainer.device=cuda``
killed with SIGKILL between two checkpoints, or stopped with SIGTERM, then resumed, ends exactly
as a run on the GPU that was never interrupted (parameters, optimizer state, result.json, the
logged curves). tests/cli/test_interrupts.py does the same on the CPU.

Marked ``gpu`` and skipped without a CUDA device.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from framework.checkpoints import list_checkpoints, load_checkpoint
from tests.cli.test_interrupts import has_checkpoints, start, wait_until
from tests.conftest import run_cli
from tests.framework.compare import assert_same_run

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# cli_env hides the GPUs from the CLI tests; these give the first one back.
ON_THE_GPU = {"CUDA_VISIBLE_DEVICES": "0"}
# A GPU step of a tiny model costs its kernel launches: enough steps to be caught mid-run.
STEPS = 6000
RUNS = {
    "polyfit": ("+task=polyfit", "data.n=50000", f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=500",
                "trainer.log_every=50", "trainer.device=cuda"),
    # the gradient scaler's state and the shuffle's generator travel in the checkpoint too
    "linear2d-16-mixed": ("+task=linear2d", "trainer.precision=16-mixed", "data.batch_size=64", "data.shuffle=true",
                          f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=500", "trainer.log_every=50",
                          "trainer.device=cuda"),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for name, overrides in RUNS.items():
        folder = tmp_path_factory.mktemp(f"uninterrupted-{name}")
        completed = run_cli(*overrides, f"hydra.run.dir={folder / 'run'}", cwd=folder, env=ON_THE_GPU)
        assert completed.returncode == 0, completed.stderr
        assert json.loads((folder / "run" / "result.json").read_text())["device"].startswith("cuda")
        folders[name] = folder / "run"
    return folders


@pytest.mark.parametrize("name", sorted(RUNS))
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_cuda_run_killed_then_resumed_equals_one_never_interrupted(name, how, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(tmp_path, *RUNS[name], f"hydra.run.dir={run_dir}", env=ON_THE_GPU)
    wait_until(has_checkpoints(run_dir, 2), process)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 143), stderr
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["progress"]["step"] < STEPS
    if how == signal.SIGTERM:
        assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"

    resumed = run_cli(*RUNS[name], f"trainer.resume={run_dir}", cwd=tmp_path, env=ON_THE_GPU)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted[name])
