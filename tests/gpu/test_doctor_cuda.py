"""The conditioning doctor on a CUDA device: the same numbers as on the CPU, and the CUDA random
stream left as it was. Marked ``gpu``; run with ``python -m pytest -m gpu`` on a machine with one."""

from __future__ import annotations

import pytest
import torch

from framework.build import build_state
from framework.devices import resolve_device, resolve_dtype, seed_everything
from framework.doctor import diagnose
from framework.run import checked_trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("task", ["sine", "legendre", "polyfit"])
def test_the_doctor_on_cuda_agrees_with_the_cpu_and_leaves_the_cuda_stream_alone(task, compose_config, registry):
    found = {}
    for device in ("cpu", "cuda"):
        cfg = compose_config([f"+task={task}", f"trainer.device={device}", "logger=[]"])
        trainer = checked_trainer(cfg)
        seed_everything(trainer.seed)
        run = build_state(cfg, registry, trainer=trainer, device=resolve_device(trainer.device),
                          dtype=resolve_dtype(trainer.dtype)).run
        cuda_stream = torch.cuda.get_rng_state()
        found[device] = diagnose(run)
        assert torch.equal(torch.cuda.get_rng_state(), cuda_stream)
    cpu, cuda = found["cpu"], found["cuda"]
    assert cuda.curvature == cpu.curvature and (cuda.lr_bound is None) == (cpu.lr_bound is None)
    # Other kernels round differently: equal up to float32 rounding.
    for name in ("condition_number", "largest_eigenvalue", "lr_bound"):
        if getattr(cpu, name) is not None:
            assert getattr(cuda, name) == pytest.approx(getattr(cpu, name), rel=1e-4), name
