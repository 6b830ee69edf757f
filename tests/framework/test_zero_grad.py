"""The lean zero_grad (framework/zero_grad.py): torch's zero_grad(set_to_none=True) without its
profiler record while no profiler runs, and torch's own otherwise."""

from __future__ import annotations

import pytest
import torch

from framework.build import build_state
from framework.devices import resolve_device, resolve_dtype, seed_everything
from framework.run import checked_trainer
from framework.zero_grad import lean_zero_grad


@pytest.fixture
def torch_calls(monkeypatch):
    """Every call of torch's Optimizer.zero_grad from now on, with its set_to_none."""
    calls = []
    torch_zero_grad = torch.optim.Optimizer.zero_grad

    def counted(self, set_to_none: bool = True):
        calls.append(set_to_none)
        return torch_zero_grad(self, set_to_none)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", counted)
    return calls


def two_groups() -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    parameters = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2)),
                  torch.nn.Parameter(torch.ones(()))]
    optimizer = torch.optim.Adam([{"params": parameters[:2]}, {"params": parameters[2:], "lr": 0.1}])
    return optimizer, parameters


def with_gradients(parameters) -> None:
    sum(parameter.sum() ** 2 for parameter in parameters).backward()


def test_it_sets_every_gradient_of_every_group_to_none_without_torchs_call(torch_calls):
    optimizer, parameters = two_groups()
    lean_zero_grad(optimizer)
    with_gradients(parameters)

    optimizer.zero_grad()

    assert [parameter.grad for parameter in parameters] == [None, None, None]
    assert torch_calls == []


def test_zeros_in_place_and_a_running_profiler_get_torchs_own(torch_calls):
    optimizer, parameters = two_groups()
    lean_zero_grad(optimizer)
    with_gradients(parameters)
    optimizer.zero_grad(set_to_none=False)
    assert all(torch.equal(parameter.grad, torch.zeros_like(parameter)) for parameter in parameters)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        optimizer.zero_grad()
    assert [parameter.grad for parameter in parameters] == [None, None, None]
    assert torch_calls == [False, True]
    assert "Optimizer.zero_grad#Adam.zero_grad" in {event.name for event in profile.events()}


def test_an_optimizer_with_a_zero_grad_of_its_own_keeps_it():
    class OwnZeroGrad(torch.optim.SGD):
        def zero_grad(self, set_to_none: bool = True) -> None:
            self.called = True

    parameter = torch.nn.Parameter(torch.ones(2))
    own = OwnZeroGrad([parameter], lr=0.1)
    lean_zero_grad(own)
    own.zero_grad()
    assert own.called

    patched = torch.optim.SGD([parameter], lr=0.1)
    patched.zero_grad = marker = lambda set_to_none=True: None
    assert lean_zero_grad(patched).zero_grad is marker


def test_the_framework_builds_optimizers_with_it_and_a_step_calls_no_torch_zero_grad(
        compose_config, registry, torch_calls):
    # a polynomial of degree 0: one parameter, not flattened (a flattened optimizer zeroes its
    # flat gradient)
    cfg = compose_config(["+task=polyfit", "model.degree=0", "trainer.device=cpu", "logger=[]"])
    trainer = checked_trainer(cfg)
    seed_everything(trainer.seed)
    run = build_state(cfg, registry, trainer=trainer, device=resolve_device(trainer.device),
                      dtype=resolve_dtype(trainer.dtype)).run
    (parameter,) = run.model.parameters()
    assert run.optimizer.param_groups[0]["params"] == [parameter]
    for _ in range(2):
        run.optimizer.zero_grad()
        run.loss_fn(run.model(run.data.features), run.data.targets).backward()
        assert parameter.grad is not None
        run.optimizer.step()
    run.optimizer.zero_grad()
    assert parameter.grad is None
    assert torch_calls == []
