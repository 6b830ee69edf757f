"""``trainer.precision`` and ``trainer.deterministic`` on a CUDA device: the six reference tasks
finish with each precision, 16-mixed and bf16 agree with the plain autocast loop on the GPU, a
16-mixed run stopped and resumed equals one that never stopped, deterministic runs repeat bit
for bit, and ``CUBLAS_WORKSPACE_CONFIG`` is set before cuBLAS first runs. (No host sync with
bf16 and 16-mixed: tests/gpu/test_no_host_sync.py.)

Marked ``gpu`` and skipped where torch sees no CUDA device: ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from framework.checkpoints import latest_checkpoint
from framework.devices import CUBLAS_WORKSPACE_ENV
from tests.framework.compare import assert_identical, assert_same_run
from tests.framework.test_precision import plain_linear2d
from tests.framework.test_reference_tasks import PLAIN_LOOPS
from tests.framework.test_resume import ctrl_c_raises, interrupted_then_resumed  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PRECISIONS = ("32", "bf16", "16-mixed")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", sorted(PLAIN_LOOPS))
def test_every_reference_task_trains_on_cuda_with_each_precision(task, precision, train, recorder, tmp_path):
    result = train([f"+task={task}", "trainer.device=cuda", f"trainer.precision={precision}", "logger=[]"],
                   run_dir=tmp_path, task=task)
    assert result["status"] == "completed" and result["device"].startswith("cuda")
    assert result["stop_reason"] == "max_steps"
    assert all(value.device.type == "cuda" and bool(torch.isfinite(value).all()) for value in recorder.final.values())
    first_loss = recorder.logged("train/loss")[1]
    assert math.isfinite(result["final_loss"]) and result["final_loss"] < first_loss


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_on_cuda_agrees_with_the_plain_autocast_loop_on_cuda(precision, train, recorder, tmp_path):
    expected, scaler = plain_linear2d(precision, device="cuda")
    train(["+task=linear2d", "trainer.device=cuda", f"trainer.precision={precision}", "logger=[]"],
          run_dir=tmp_path, task="linear2d")
    for name, value in expected.items():
        # The same kernels in the same order: equal, up to a rounding should the flat parameter's
        # views take another kernel than separate tensors.
        torch.testing.assert_close(recorder.final[name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    if scaler is not None:
        saved = torch.load(latest_checkpoint(tmp_path), weights_only=True)["scaler"]
        assert saved["scale"] == scaler.get_scale()


def test_a_16_mixed_run_stopped_and_resumed_on_cuda_equals_one_that_never_stopped(train, manager, tmp_path,
                                                                                    ctrl_c_raises):
    overrides = ["+task=linear", "trainer.device=cuda", "trainer.precision=16-mixed", "trainer.max_steps=60",
                 "trainer.log_every=5"]
    train(overrides, run_dir=tmp_path / "straight", task="linear")
    interrupted_then_resumed(train, manager, overrides, tmp_path / "stopped", 23, task="linear")
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")
    straight = torch.load(latest_checkpoint(tmp_path / "straight"), weights_only=True)
    resumed = torch.load(latest_checkpoint(tmp_path / "stopped"), weights_only=True)
    assert_identical(resumed["scaler"], straight["scaler"], "scaler")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task,extra", [
    ("linear2d", []),
    ("puzzle", []),
    ("polyfit", ["data.batch_size=7", "data.shuffle=true"]),  # randperm and gathers on the device
])
def test_deterministic_runs_on_cuda_repeat_bit_for_bit(task, extra, precision, train, recorder, tmp_path):
    overrides = [f"+task={task}", "trainer.device=cuda", "trainer.deterministic=true",
                 f"trainer.precision={precision}", "trainer.max_steps=300", "logger=[]", *extra]
    finals = []
    for repeat in ("first", "second"):
        result = train(overrides, run_dir=tmp_path / repeat, task=task)
        assert result["status"] == "completed"
        finals.append(dict(recorder.final))
    for name, value in finals[0].items():
        assert torch.equal(value, finals[1][name]), name
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting again


def test_deterministic_sets_the_cublas_workspace_before_cuda_starts(tmp_path):
    """A fresh process without CUBLAS_WORKSPACE_CONFIG: torch refuses a cuBLAS matmul under
    use_deterministic_algorithms unless the run set the variable before cuBLAS first ran."""
    env = {key: value for key, value in os.environ.items() if key not in (CUBLAS_WORKSPACE_ENV, "HYDRA_FULL_ERROR")}
    done = subprocess.run(
        [sys.executable, "-m", "framework", "+task=linear2d", "trainer.device=cuda", "trainer.deterministic=true",
         "trainer.max_steps=20", "logger=[]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "CUBLAS_WORKSPACE_CONFIG" not in done.stderr  # neither torch's refusal nor our late warning
