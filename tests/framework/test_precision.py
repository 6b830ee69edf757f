"""``trainer.precision`` bf16 and 16-mixed on the CPU, against plain PyTorch loops that use
``torch.autocast`` and ``torch.amp.GradScaler`` the documented way, compared with torch.equal;
the scaler's skipped steps, its state across a resume, and the settings that are refused.

The plain loops are written here, independently of the framework: the data and initial values
are those of the reference tasks (tests/framework/test_reference_tasks.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from framework import ConfigError, hookimpl
from framework.errors import NonFiniteLossError
from tests.conftest import run_cli
from tests.framework.compare import assert_identical, final_checkpoint
from tests.polyfit import tutorial_quadratic

AUTOCAST = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def plain_mixed_loop(precision, parameters, forward, optimizer, steps, clip=None, closure=False, device="cpu"):
    """The plain loop under autocast; 16-mixed with GradScaler as torch's AMP examples do (unscale_
    before clipping). Returns the scaler (None for bf16)."""
    scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None
    for _ in range(steps):
        def gradients():
            optimizer.zero_grad()
            with torch.autocast(device, dtype=AUTOCAST[precision]):
                loss = forward()
            (loss if scaler is None else scaler.scale(loss)).backward()
            return loss

        if closure:
            optimizer.step(gradients)
            continue
        gradients()
        if scaler is None:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip)
            optimizer.step()
        else:
            scaler.unscale_(optimizer)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip)
            scaler.step(optimizer)
            scaler.update()
    return scaler


def plain_linear(precision, steps=200, clip=None, optimizer="sgd"):
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]])
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    else:  # lbfgs, at the framework's defaults but for lr
        optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1)
    scaler = plain_mixed_loop(precision, list(model.parameters()), lambda: torch.nn.functional.mse_loss(model(x), y),
                              optimizer, steps, clip=clip, closure=isinstance(optimizer, torch.optim.LBFGS))
    return {"weight": model.weight, "bias": model.bias}, scaler


def plain_linear2d(precision, steps=100, device="cpu", fused_adam=False):
    """linear2d's plain loop (on ``device``: tests/gpu runs it on CUDA); with ``fused_adam``,
    optimizer=adam optimizer.fused=true at lr 0.01."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], device=device)
    y = torch.tensor([[2.0], [4.0], [6.0]], device=device)
    model = torch.nn.Linear(2, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 2))
        model.bias.copy_(torch.randn(1))
    model.to(device)
    optimizer = (torch.optim.Adam(model.parameters(), lr=0.01, fused=True) if fused_adam
                 else torch.optim.SGD(model.parameters(), lr=0.01))
    scaler = plain_mixed_loop(precision, list(model.parameters()), lambda: torch.nn.functional.mse_loss(model(x), y),
                              optimizer, steps, device=device)
    return {"weight": model.weight, "bias": model.bias}, scaler


def plain_polyfit(precision, steps=300):
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    y = (x**2 + 2 * x + 3)[:, None]
    A, B, C = (torch.randn((), requires_grad=True) for _ in range(3))
    optimizer = torch.optim.NAdam([A, B, C], lr=0.01)
    scaler = plain_mixed_loop(precision, [A, B, C],
                              lambda: torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x), y),
                              optimizer, steps)
    return {"A": A, "B": B, "C": C}, scaler


PLAIN = {
    "linear": (plain_linear, 200),
    "linear2d": (plain_linear2d, 100),
    "polyfit": (plain_polyfit, 300),
}


class ScaleRecorder:
    """The parameters and 16-mixed's loss scale after every step."""

    def __init__(self) -> None:
        self.scales: list[float] = []
        self.parameters: list[dict[str, torch.Tensor]] = []
        self.initial: dict[str, torch.Tensor] = {}

    @hookimpl
    def framework_fit_start(self, state):
        self.initial = {n: p.detach().clone() for n, p in state.run.model.named_parameters()}

    @hookimpl
    def framework_step_end(self, state, loss):
        self.scales.append(state.run.precision.scaler.get_scale())
        self.parameters.append({n: p.detach().clone() for n, p in state.run.model.named_parameters()})


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
@pytest.mark.parametrize("task", sorted(PLAIN))
def test_mixed_precision_equals_the_plain_autocast_loop(task, precision, train, recorder, tmp_path):
    plain, steps = PLAIN[task]
    expected, scaler = plain(precision, steps)
    result = train([f"+task={task}", f"trainer.precision={precision}", f"trainer.max_steps={steps}", "logger=[]"],
                   run_dir=tmp_path, task=task)
    assert result["status"] == "completed" and result["steps"] == steps
    for name, value in expected.items():
        assert torch.equal(recorder.final[name], value.detach()), name
    saved = final_checkpoint(tmp_path)
    assert saved["config"]["trainer"]["precision"] == precision
    assert saved["scaler"] == (None if scaler is None else scaler.state_dict())


def test_the_autocast_changes_the_result_where_it_computes_in_16_bits(train, recorder):
    """The comparison above can fail: nn.Linear under bf16 autocast rounds differently from float32."""
    train(["+task=linear2d", "trainer.precision=bf16", "logger=[]"])
    bf16 = dict(recorder.final)
    train(["+task=linear2d", "trainer.precision=32", "logger=[]"])
    assert not torch.equal(bf16["weight"], recorder.final["weight"])


def test_16_mixed_clips_the_unscaled_gradients_like_the_plain_loop(train, recorder):
    expected, _ = plain_linear("16-mixed", steps=100, clip=0.5)
    train(["+task=linear", "trainer.precision=16-mixed", "trainer.grad_clip=0.5", "trainer.max_steps=100",
           "logger=[]"])
    for name, value in expected.items():
        assert torch.equal(recorder.final[name], value.detach()), name


def test_16_mixed_with_a_fused_optimizer_skips_on_the_device_like_the_plain_loop(train, recorder, tmp_path):
    """A fused optimizer takes the scaler's found_inf itself (no host read): the flat parameter's
    optimizer (framework/flat_parameters.py) passes it through."""
    expected, scaler = plain_linear2d("16-mixed", fused_adam=True)
    assert scaler.get_scale() < 65536.0  # it skipped steps
    train(["+task=linear2d", "trainer.precision=16-mixed", "optimizer=adam", "optimizer.lr=0.01", "optimizer.fused=true",
           "logger=[]"], run_dir=tmp_path)
    for name, value in expected.items():
        assert torch.equal(recorder.final[name], value.detach()), name
    assert final_checkpoint(tmp_path)["scaler"] == scaler.state_dict()


def test_bf16_drives_lbfgs_with_the_closure_under_autocast(train, recorder):
    expected, _ = plain_linear("bf16", steps=15, optimizer="lbfgs")
    result = train(["+task=linear", "optimizer=lbfgs", "optimizer.lr=0.1", "trainer.precision=bf16",
                    "trainer.max_steps=15", "logger=[]"])
    assert result["status"] == "completed"
    for name, value in expected.items():
        assert torch.equal(recorder.final[name], value.detach()), name


def test_a_step_the_scaler_skips_leaves_the_parameters_and_the_run_goes_on(train, manager):
    """linear's first gradients overflow float16 at the initial scale 65536: the scaler skips
    those updates and halves the scale, and the run trains on to its last step."""
    scales = ScaleRecorder()
    manager.register_plugin(scales, "scales", "test")
    result = train(["+task=linear", "trainer.precision=16-mixed", "trainer.max_steps=50", "logger=[]"])
    assert (result["status"], result["steps"], result["stop_reason"]) == ("completed", 50, "max_steps")
    before = [scales.initial, *scales.parameters[:-1]]
    previous_scales = [65536.0, *scales.scales[:-1]]
    skipped = [step for step, (scale, previous) in enumerate(zip(scales.scales, previous_scales)) if scale < previous]
    assert skipped, "no step was skipped: the test exercises nothing"
    for step in range(50):
        moved = any(not torch.equal(before[step][n], scales.parameters[step][n]) for n in before[step])
        assert moved == (step not in skipped), step


def test_a_skipped_step_is_not_taken_for_convergence_by_tol_step(train):
    result = train(["+task=linear", "trainer.precision=16-mixed", "trainer.tol.step=1e-9", "trainer.max_steps=50",
                    "logger=[]"])
    assert (result["steps"], result["stop_reason"]) == (50, "max_steps")


def test_a_non_finite_loss_still_stops_a_16_mixed_run(train, tmp_path):
    with pytest.raises(NonFiniteLossError):
        train(["+task=polyfit", "optimizer=sgd", "optimizer.lr=1", "trainer.precision=16-mixed",
               "trainer.max_steps=200", "logger=[]"], run_dir=tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["status"], result["stop_reason"]) == ("failed", "non_finite_loss")


@pytest.mark.parametrize("precision", ["16-mixed", "bf16"])
def test_a_mixed_precision_run_resumed_equals_one_that_never_stopped(precision, train, tmp_path):
    common = ["+task=linear", f"trainer.precision={precision}", "trainer.log_every=5", "logger=[]"]
    train([*common, "trainer.max_steps=60"], run_dir=tmp_path / "straight", task="linear")
    train([*common, "trainer.max_steps=30"], run_dir=tmp_path / "resumed", task="linear")
    halfway = final_checkpoint(tmp_path / "resumed")
    if precision == "16-mixed":  # the scaler's state matters: it skipped steps and lowered its scale
        assert halfway["scaler"]["scale"] < 65536.0
    train([*common, "trainer.max_steps=60", f"trainer.resume={tmp_path / 'resumed'}"], run_dir=tmp_path / "resumed",
          task="linear")
    straight, resumed = final_checkpoint(tmp_path / "straight"), final_checkpoint(tmp_path / "resumed")
    for part in ("model", "optimizer", "scheduler", "scaler"):
        assert_identical(resumed[part], straight[part], part)
    assert resumed["progress"]["step"] == 60


def test_a_checkpoint_without_the_precision_setting_resumes_as_precision_32(train, tmp_path):
    """Checkpoints written before trainer.precision existed were all precision 32."""
    common = ["+task=linear", "logger=[]"]
    train([*common, "trainer.max_steps=20"], run_dir=tmp_path)
    path = sorted((tmp_path / "checkpoints").iterdir())[-1]
    old = torch.load(path, weights_only=True)
    for key in ("precision", "deterministic"):
        del old["config"]["trainer"][key]
    del old["scaler"]
    torch.save(old, path)
    result = train([*common, "trainer.max_steps=40", f"trainer.resume={tmp_path}"], run_dir=tmp_path)
    assert (result["status"], result["steps"]) == ("completed", 40)
    with pytest.raises(ConfigError, match=r"trainer.precision='32' there but 'bf16' here"):
        train([*common, "trainer.max_steps=60", "trainer.precision=bf16", f"trainer.resume={tmp_path}"],
              run_dir=tmp_path)


def test_precision_32_builds_no_autocast_and_no_scaler(train, manager):
    seen = {}

    class Look:
        @hookimpl
        def framework_fit_start(self, state):
            seen["precision"] = state.run.precision

    manager.register_plugin(Look(), "look", "test")
    train(["+task=linear", "trainer.max_steps=2", "logger=[]"])
    assert seen["precision"] is None


@pytest.mark.parametrize("overrides,message", [
    (["trainer.precision=fp16"], "trainer.precision='fp16' is not a precision; use 32 | bf16 | 16-mixed"),
    (["trainer.precision=16"], "trainer.precision='16' is not a precision; use 32 | bf16 | 16-mixed"),
    (["optimizer=lbfgs", "trainer.precision=16-mixed"], "trainer.precision=16-mixed cannot drive LBFGS"),
    (["trainer.dtype=float64", "trainer.precision=bf16"], "trainer.dtype=float64 has none"),
])
def test_a_precision_that_cannot_work_is_refused_before_any_work(overrides, message, tmp_path):
    done = run_cli("+task=linear", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"
