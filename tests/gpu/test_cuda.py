"""The loop on a CUDA device: the reference tasks agree with the plain loops, a run stopped and
resumed on the GPU equals one that never stopped, a divergence is reported at its own step
although losses are read in batches there, and a checkpoint taken on the GPU resumes on the CPU.

Marked ``gpu`` and skipped where torch sees no CUDA device (CI has none): run them with
``python -m pytest -m gpu`` on a machine with one.
"""

from __future__ import annotations

import json

import pytest
import torch

from framework.errors import NonFiniteLossError
from framework.signals import Interrupted
from tests.framework.compare import assert_same_run
from tests.framework.test_reference_tasks import PLAIN_LOOPS
from tests.framework.test_resume import CASES, SignalAt, ctrl_c_raises  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("task", sorted(PLAIN_LOOPS))
def test_task_on_cuda_agrees_with_the_plain_cpu_loop(task, train, recorder, tmp_path):
    result = train([f"+task={task}", "trainer.device=cuda"], run_dir=tmp_path, task=task)
    assert result["status"] == "completed" and result["device"].startswith("cuda")
    expected = PLAIN_LOOPS[task]()
    for name, value in expected.items():
        ours = recorder.final[name]
        assert ours.device.type == "cuda", name
        # Other kernels round differently: equal up to float32 rounding, not bit for bit.
        torch.testing.assert_close(ours.cpu(), value.detach(), rtol=2e-3, atol=2e-3, msg=f"{task}: {name}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_stopped_and_resumed_on_cuda_equals_uninterrupted(case, train, manager, tmp_path, ctrl_c_raises):
    overrides, stop_at = CASES[case]
    overrides = [*overrides, "trainer.log_every=5", "trainer.device=cuda"]
    task = overrides[0][6:]
    train(overrides, run_dir=tmp_path / "straight", task=task)
    stopper = SignalAt(stop_at)
    manager.register_plugin(stopper, "stopper", "test")
    with pytest.raises(Interrupted):
        train(overrides, run_dir=tmp_path / "stopped", task=task)
    manager.unregister(stopper)
    train([*overrides, f"trainer.resume={tmp_path / 'stopped'}"], run_dir=tmp_path / "stopped", task=task)
    assert_same_run(tmp_path / "stopped", tmp_path / "straight")


def test_a_divergence_on_cuda_is_reported_at_the_step_the_cpu_reports(train, tmp_path):
    overrides = ["+task=polyfit", "optimizer=sgd", "optimizer.lr=1", "trainer.max_steps=200", "trainer.log_every=50",
                 "logger=[]"]
    steps = {}
    for device in ("cpu", "cuda"):
        with pytest.raises(NonFiniteLossError) as raised:
            train([*overrides, f"trainer.device={device}"], run_dir=tmp_path / device)
        steps[device] = raised.value.step
        assert json.loads((tmp_path / device / "result.json").read_text())["stop_reason"] == "non_finite_loss"
    assert steps["cuda"] == steps["cpu"]


def test_a_checkpoint_taken_on_cuda_resumes_on_the_cpu(train, tmp_path):
    overrides = ["+task=linear", "trainer.max_steps=40", "logger=[]"]
    train([*overrides, "trainer.device=cuda"], run_dir=tmp_path / "gpu")
    result = train(["+task=linear", "trainer.max_steps=60", "logger=[]", "trainer.device=cpu",
                    f"trainer.resume={tmp_path / 'gpu'}"], run_dir=tmp_path / "gpu")
    assert (result["status"], result["steps"], result["device"]) == ("completed", 60, "cpu")


def test_the_python_api_trains_on_cuda_with_the_default_loggers_and_returns_a_cpu_model(tmp_path):
    import framework

    run = framework.train(["+task=polyfit", "trainer.max_steps=50", "trainer.device=cuda"], run_dir=tmp_path / "run")
    assert run.result["status"] == "completed" and run.result["device"].startswith("cuda")
    assert all(parameter.device.type == "cpu" for parameter in run.model.parameters())
    x = torch.linspace(-3, 3, 7)[:, None]
    assert torch.equal(run.model(x), framework.load_run(run.dir).model(x))
