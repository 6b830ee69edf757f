"""Losses, optimizers and schedulers: torch's own behaviour, chosen by name."""

from __future__ import annotations

import inspect

import pytest
import torch

from framework_plugins.optimizers import OPTIMIZERS


def built(registry, kind, name, **context):
    entry = registry.get(kind, name)
    return entry.factory(entry.config(), **context)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("mse", lambda p, t: ((p - t) ** 2).mean()),
        ("sse", lambda p, t: ((p - t) ** 2).sum()),
        ("l1", lambda p, t: (p - t).abs().mean()),
        ("huber", lambda p, t: torch.where((p - t).abs() < 1, 0.5 * (p - t) ** 2, (p - t).abs() - 0.5).mean()),
    ],
)
def test_losses_compute_what_their_names_say(registry, name, reference):
    predictions = torch.tensor([[0.0], [1.0], [4.0]])
    targets = torch.tensor([[0.5], [3.0], [1.0]])
    assert torch.allclose(built(registry, "loss", name)(predictions, targets), reference(predictions, targets))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_configs_carry_torch_s_own_defaults(registry, name):
    entry = registry.get("optimizer", name)
    torch_defaults = {
        key: p.default for key, p in inspect.signature(OPTIMIZERS[name].__init__).parameters.items()
        if key not in ("self", "params") and p.default is not inspect.Parameter.empty
    }
    config = entry.config()
    for key, default in torch_defaults.items():
        value = getattr(config, key)
        assert value == (list(default) if isinstance(default, tuple) else default), key
    optimizer = entry.factory(config, params=[torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, OPTIMIZERS[name])


def test_optimizer_options_reach_torch(registry, compose_config):
    from omegaconf import OmegaConf

    cfg = compose_config(["+task=polyfit", "optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"])
    entry = registry.get("optimizer", "sgd")
    optimizer = entry.factory(OmegaConf.to_object(cfg.optimizer), params=[torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    # lr: SGD's own default (the polyfit preset's rate is its NAdam's, conf/task_optimizer/).
    assert group["momentum"] == 0.9 and group["nesterov"] is True and group["lr"] == cfg.optimizer.lr == 0.001


def test_cosine_scheduler_anneals_over_the_whole_run(registry):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    entry = registry.get("scheduler", "cosine")
    scheduler = entry.factory(entry.config(), optimizer=optimizer, max_steps=50)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_none_scheduler_keeps_the_rate_through_a_run(train, recorder):
    train(["+task=polyfit", "scheduler=none", "trainer.max_steps=30"])
    assert set(recorder.logged("train/lr").values()) == {0.01}
    assert recorder.optimizer.param_groups[0]["lr"] == 0.01
