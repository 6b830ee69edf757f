"""The loop's behaviours, each against an independent plain PyTorch loop where numbers matter."""

from __future__ import annotations

import json
import math

import pytest
import torch

from framework import ConfigError, hookimpl
from framework.errors import NonFiniteLossError
from tests.polyfit import tutorial_quadratic


def polyfit_data(n=20):
    """Seed 0, then the polynomial data source's draws (x ~ N(0,1)*5, y = x^2 + 2x + 3)."""
    torch.manual_seed(0)
    x = torch.randn(n) * 5
    return x[:, None], (x**2 + 2 * x + 3)[:, None]


def polynomial_parameters():
    return [torch.randn((), requires_grad=True) for _ in range(3)]


def quadratic(params, x):
    return tutorial_quadratic(*params, x)  # as polyfit's preset computes it


def test_lbfgs_runs_through_the_closure_and_matches_plain_lbfgs(train, recorder):
    result = train(["+task=polyfit", "optimizer=lbfgs", "optimizer.lr=1", "trainer.max_steps=4"])
    x, y = polyfit_data()
    params = polynomial_parameters()
    optimizer = torch.optim.LBFGS(params, lr=1)
    first_losses = []

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(quadratic(params, x), y)
        loss.backward()
        return loss

    for _ in range(4):
        first_losses.append(optimizer.step(closure).item())

    assert result["steps"] == 4
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())
    # The logged loss of a step is its first forward pass, before the update.
    assert recorder.logged("train/loss") == {step: first_losses[step - 1] for step in (1, 4)}


@pytest.mark.parametrize("gathered", ["the epoch at once", "batch by batch (data over the limit)"])
def test_shuffled_minibatches_match_a_plain_loop_with_the_same_permutations(train, recorder, monkeypatch, gathered):
    if gathered.startswith("batch by batch"):
        monkeypatch.setattr("framework.batches.GATHER_EPOCH_BYTES", 0)
    overrides = ["+task=polyfit", "data.batch_size=6", "data.shuffle=true", "trainer.max_steps=null",
                 "trainer.max_epochs=3", "optimizer=sgd", "optimizer.lr=0.0001"]
    result = train(overrides)
    x, y = polyfit_data()
    params = polynomial_parameters()
    optimizer = torch.optim.SGD(params, lr=0.0001)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(20, generator=generator)
        for start in range(0, 20, 6):
            rows = order[start:start + 6]
            loss = torch.nn.functional.mse_loss(quadratic(params, x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    assert result["steps"] == 12  # 4 batches (6, 6, 6, 2) per epoch
    assert result["stop_reason"] == "max_epochs"
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())


def test_frozen_parameters_never_change_and_stay_out_of_the_optimizer(train, recorder):
    train(["+task=polyfit", "trainer.max_steps=50", "trainer.freeze=[C]"])
    assert torch.equal(recorder.initial["C"], recorder.final["C"])
    assert not torch.equal(recorder.initial["A"], recorder.final["A"])
    # A and B only: as two tensors, or as one flat tensor of two elements (framework.flat_parameters).
    assert sum(p.numel() for group in recorder.optimizer.param_groups for p in group["params"]) == 2

    x, y = polyfit_data()
    A, B, C = polynomial_parameters()
    C.requires_grad_(False)
    optimizer = torch.optim.NAdam([A, B], lr=0.01)
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(quadratic((A, B, C), x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(recorder.final["A"], A.detach())
    assert torch.equal(recorder.final["B"], B.detach())


def test_freeze_pattern_that_matches_nothing_is_refused(train):
    with pytest.raises(ConfigError, match=r"'Z\*' matches no parameter; parameters: A, B, C"):
        train(["+task=polyfit", "trainer.freeze=[Z*]"])


def test_gradient_clipping_matches_plain_clip_and_logs_the_unclipped_norm(train, recorder):
    train(["+task=polyfit", "optimizer=sgd", "optimizer.lr=0.001", "trainer.grad_clip=1.0",
           "trainer.max_steps=30", "trainer.log_every=10"])
    x, y = polyfit_data()
    params = polynomial_parameters()
    optimizer = torch.optim.SGD(params, lr=0.001)
    norms = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(quadratic(params, x), y)
        optimizer.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, 1.0).item())
        optimizer.step()
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())
    logged = recorder.logged("train/grad_norm")
    assert logged == {step: norms[step - 1] for step in (1, 10, 20, 30)}
    assert logged[1] > 1.0  # really clipped


def test_tolerance_stops_at_the_first_step_at_or_below_it(train):
    result = train(["+task=puzzle", "trainer.tolerance=0.01"])
    M = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]])
    rhs = torch.tensor([9.0, 1, 8, 2])
    torch.manual_seed(0)
    w = torch.rand(4, requires_grad=True)
    optimizer = torch.optim.NAdam([w], lr=0.01)
    for step in range(1, 2001):
        loss = ((M @ w - rhs) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() <= 0.01:
            break
    assert result["stop_reason"] == f"loss {loss.item():.3g} <= 0.01"
    assert result["steps"] == step < 2000


def test_scheduler_steps_after_every_optimizer_step(train, recorder):
    train(["+task=polyfit", "scheduler=step", "scheduler.step_size=10", "scheduler.gamma=0.5",
           "trainer.max_steps=30", "trainer.log_every=10"])
    x, y = polyfit_data()
    params = polynomial_parameters()
    optimizer = torch.optim.NAdam(params, lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    lrs = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(quadratic(params, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())
    assert recorder.logged("train/lr") == {1: 0.01, 10: 0.005, 20: 0.0025, 30: 0.00125}
    assert recorder.logged("train/lr")[30] == lrs[-1]


def test_hooks_fire_in_order_and_log_at_first_every_and_last_step(train, recorder):
    train(["+task=linear", "trainer.max_steps=25", "trainer.log_every=10"])
    names = recorder.names()
    assert names[0] == "fit_start" and names[-1] == "fit_end"
    assert names.count("step_end") == 25
    assert [call[1] for call in recorder.calls if call[0] == "log"] == [1, 10, 20, 25]
    assert "exception" not in names
    # Each step's step_end comes before that step's log.
    assert names.index("log") == names.index("step_end") + 1


def test_float64_trains_in_double_precision_like_the_plain_loop(train, recorder):
    train(["+task=linear", "trainer.dtype=float64"])
    assert recorder.final["weight"].dtype == torch.float64
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]], dtype=torch.float64)
    weight = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=0.001)
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(x, weight, bias), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(recorder.final["weight"], weight.detach())
    assert torch.equal(recorder.final["bias"], bias.detach())


def test_non_finite_loss_stops_at_its_step_keeps_logs_and_writes_a_failed_result(train, recorder, tmp_path):
    with pytest.raises(NonFiniteLossError) as caught:
        train(["+task=sine", "optimizer.lr=1e-4", "trainer.log_every=5"], run_dir=tmp_path, task="sine")

    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    params = [torch.randn((), requires_grad=True) for _ in range(4)]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    for step in range(1, 100):
        a, b, c, d = params
        loss = (a + b * x + c * x**2 + d * x**3 - y).pow(2).sum()
        if not math.isfinite(loss.item()):
            break
        last_finite = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    error = caught.value
    assert error.step == step
    assert error.last_finite_loss == last_finite and error.last_finite_step == step - 1
    assert f"step {step}" in str(error)
    assert ("exception", "NonFiniteLossError") in recorder.calls
    assert recorder.names()[-1] == "fit_end"
    assert max(recorder.logged("train/loss")) < step  # logs before the failure were delivered
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["stop_reason"] == "non_finite_loss"
    assert result["steps"] == step and result["final_loss"] is None


class Interrupt:
    @hookimpl
    def framework_log(self, state, step):
        if step == 20:
            raise KeyboardInterrupt


def test_interrupt_writes_an_interrupted_result_and_propagates(train, manager, recorder, tmp_path):
    manager.register_plugin(Interrupt(), "interrupt", "test")
    with pytest.raises(KeyboardInterrupt):
        train(["+task=polyfit"], run_dir=tmp_path, task="polyfit")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted" and result["steps"] == 20
    assert math.isfinite(result["final_loss"])
    assert ("exception", "KeyboardInterrupt") in recorder.calls


class HalfStep:
    """A third-party step: plain gradient descent at half the optimizer's rate."""

    @hookimpl
    def framework_configure_step(self, state):
        def step(features, targets):
            state.run.optimizer.zero_grad()
            loss = state.run.loss_fn(state.run.model(features), targets)
            loss.backward()
            with torch.no_grad():
                for p in state.run.trainable.values():
                    p -= 0.5 * state.run.optimizer.param_groups[0]["lr"] * p.grad
            return loss

        return step


def test_a_plugin_step_replaces_the_default_step(train, manager, recorder):
    manager.register_plugin(HalfStep(), "half_step", "test")
    train(["+task=linear", "trainer.max_steps=3"])
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[3.0], [5.0], [7.0], [9.0]])
    weight = torch.zeros(1, 1, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(x, weight, bias), y)
        loss.backward()
        with torch.no_grad():
            for p in (weight, bias):
                p -= 0.5 * 0.001 * p.grad
                p.grad = None
    assert torch.equal(recorder.final["weight"], weight.detach())


def test_without_a_step_plugin_the_fit_fails_naming_the_cause(manager, registry, compose_config):
    from framework.errors import PluginError
    from framework.run import run_training

    manager.unregister(name="default_step")
    with pytest.raises(PluginError, match="default_step"):
        run_training(compose_config(["+task=linear"]), manager=manager, registry=registry)


def test_prediction_target_shape_mismatch_is_an_error(train):
    with pytest.raises(ConfigError, match=r"predictions have shape \(3, 2\) but the targets have shape \(3, 1\)"):
        train(["+task=linear2d", "model.out_features=2"])


def test_steps_and_epochs_both_null_are_refused(train):
    with pytest.raises(ConfigError, match="max_steps or trainer.max_epochs"):
        train(["+task=linear", "trainer.max_steps=null"])


def test_integer_dtype_is_refused_in_our_words(train):
    with pytest.raises(ConfigError, match="Integer tensors cannot require gradients"):
        train(["+task=linear", "trainer.dtype=int64"])


def test_minibatches_in_order_are_slices_matching_a_plain_loop(train, recorder):
    result = train(["+task=polyfit", "data.batch_size=8", "trainer.max_steps=7", "optimizer=sgd",
                    "optimizer.lr=0.0001"])
    x, y = polyfit_data()
    params = polynomial_parameters()
    optimizer = torch.optim.SGD(params, lr=0.0001)
    for step in range(7):
        start = (step % 3) * 8  # 20 rows: batches of 8, 8, 4
        rows = slice(start, start + 8)
        loss = torch.nn.functional.mse_loss(quadratic(params, x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert result["steps"] == 7 and result["stop_reason"] == "max_steps"
    for name, plain in zip("ABC", params):
        assert torch.equal(recorder.final[name], plain.detach())


def test_max_epochs_and_max_steps_stop_at_whichever_comes_first(train):
    by_epochs = train(["+task=polyfit", "data.batch_size=8", "trainer.max_epochs=2"])
    assert (by_epochs["steps"], by_epochs["stop_reason"]) == (6, "max_epochs")
    by_steps = train(["+task=polyfit", "data.batch_size=8", "trainer.max_epochs=100", "trainer.max_steps=5"])
    assert (by_steps["steps"], by_steps["stop_reason"]) == (5, "max_steps")
    only_epochs = train(["+task=linear", "trainer.max_steps=null", "trainer.max_epochs=7"])
    assert (only_epochs["steps"], only_epochs["stop_reason"]) == (7, "max_epochs")


def test_batch_size_below_one_is_refused_before_any_work(train):
    with pytest.raises(ConfigError, match="data.batch_size=0 is out of range"):
        train(["+task=polyfit", "data.batch_size=0"])


def test_the_step_that_meets_the_tolerance_is_logged(train, recorder):
    result = train(["+task=puzzle", "trainer.tolerance=0.01", "trainer.log_every=100"])
    logged = recorder.logged("train/loss")
    assert result["steps"] % 100 != 0  # the stop falls between regular logging steps
    assert max(logged) == result["steps"] and logged[result["steps"]] <= 0.01


def test_losses_read_in_batches_stop_at_the_first_non_finite_one():
    """The GPU path (several losses read at once), run on CPU tensors."""
    from framework.loop import LossWatch
    from framework.state import Progress

    state = Progress()
    watch = LossWatch(state, read_every=3)
    for value in (4.0, 2.0):
        state.step += 1
        watch.add(torch.tensor(value))
    assert not watch.due()
    assert watch.read() == 2.0 and (state.last_loss, state.last_loss_step) == (2.0, 2)
    for value in (1.0, math.nan, 0.5):
        state.step += 1
        watch.add(torch.tensor(value))
    assert watch.due()
    with pytest.raises(NonFiniteLossError) as caught:
        watch.read()
    assert (caught.value.step, caught.value.last_finite_loss, caught.value.last_finite_step) == (4, 1.0, 3)


class Exploding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise RuntimeError("boom")


class ExplodingModelPlugin:
    @hookimpl
    def framework_components(self):
        from dataclasses import dataclass

        from framework import Component

        @dataclass
        class ExplodingConfig:
            pass

        return [Component("model", "exploding", lambda config, *, data: Exploding(), ExplodingConfig)]


def test_an_error_inside_the_step_names_the_step_and_the_components(manager, compose_config):
    from framework.errors import TrainingError
    from framework.plugin_manager import build_registry
    from framework.run import run_training
    from framework.schema import store_configs

    manager.register_plugin(ExplodingModelPlugin(), "exploding", "test")
    registry = build_registry(manager)
    store_configs(registry)
    cfg = compose_config(["+task=linear", "model=exploding"])
    with pytest.raises(TrainingError, match=r"training failed at step 1: RuntimeError: boom \(model exploding, loss mse"):
        run_training(cfg, manager=manager, registry=registry)


class InterruptedData:
    @hookimpl
    def framework_components(self):
        from dataclasses import dataclass

        from framework import Component

        @dataclass
        class StopConfig:
            pass

        def interrupt(config, *, dtype):
            raise KeyboardInterrupt

        return [Component("data", "interrupting", interrupt, StopConfig)]


def test_an_interrupt_before_the_first_step_is_recorded_as_interrupted(manager, compose_config, tmp_path):
    from framework.plugin_manager import build_registry
    from framework.run import run_training
    from framework.schema import store_configs

    manager.register_plugin(InterruptedData(), "interrupting", "test")
    registry = build_registry(manager)
    store_configs(registry)
    with pytest.raises(KeyboardInterrupt):
        run_training(compose_config(["+task=linear", "data=interrupting", "trainer.device=cpu"]), manager=manager, registry=registry,
                     run_dir=tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["status"], result["steps"], result["device"]) == ("interrupted", 0, "cpu")
