"""DDP with NCCL on CUDA, through torchrun with real processes: one rank per GPU trains as a single
process does, and more ranks than the machine has GPUs are refused with a message on every rank
(NCCL would stop them inside DDP's first broadcast). tests/cli/test_distributed.py runs 2 CPU
ranks over gloo.

Marked ``gpu`` and skipped without a CUDA device.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch

from framework.weights import read_weights
from tests.cli.test_distributed import torchrun as command_of_torchrun
from tests.conftest import cli_env, run_cli

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ON_THE_GPUS = {"CUDA_VISIBLE_DEVICES": ",".join(str(index) for index in range(torch.cuda.device_count())),
               "OMP_NUM_THREADS": "1"}
TASK = ("+task=linear", "trainer.device=cuda", "logger=[]")


def torchrun(ranks: int, cwd, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=RANKS -m framework ARGS`` with the GPUs visible."""
    return subprocess.run(command_of_torchrun("-m", "framework", *args, ranks=ranks),
                          cwd=cwd, env=cli_env(ON_THE_GPUS), capture_output=True, text=True, timeout=180)


def test_one_nccl_rank_per_gpu_trains_as_one_process_does(tmp_path):
    ranks = torch.cuda.device_count()
    launched = torchrun(ranks, tmp_path, *TASK, "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert launched.returncode == 0, launched.stderr
    assert re.search(r"data-parallel training over \d+ processes \([^)]*nccl", launched.stdout + launched.stderr)
    single = run_cli(*TASK, f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path, env=ON_THE_GPUS)
    assert single.returncode == 0, single.stderr
    ddp_weights, single_weights = (read_weights(tmp_path / name / "model.safetensors")[0] for name in ("ddp", "single"))
    for name, value in single_weights.items():  # the same global batches, the gradients all-reduced
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-5, atol=1e-6, msg=name)
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["status"] == "completed" and result["device"].startswith("cuda")


def test_more_ranks_than_gpus_are_refused_with_a_message(tmp_path):
    ranks = torch.cuda.device_count() + 1
    launched = torchrun(ranks, tmp_path, *TASK, "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'run'}")
    assert launched.returncode != 0
    assert "would share one GPU" in launched.stderr and "Duplicate GPU" not in launched.stderr, launched.stderr
    assert f"--nproc_per_node={torch.cuda.device_count()}" in launched.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"


def test_ranks_given_one_gpu_by_number_are_refused_with_a_message(tmp_path):
    launched = torchrun(2, tmp_path, "+task=linear", "trainer.device=cuda:0", "logger=[]", "trainer.strategy=ddp",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert launched.returncode != 0
    assert "trainer.device=cuda:0 gives every rank that GPU" in launched.stderr, launched.stderr
