"""Every task preset composes, selects what tasks.md says, and builds."""

from __future__ import annotations

import pytest
import torch

from framework.build import build_state
from framework.devices import seed_everything
from framework.locations import config_dir
from framework.schema import TrainerConfig
from omegaconf import OmegaConf

# tasks.md's table: data rows, model, loss, optimizer, lr, steps.
TASKS = {
    "polyfit": (20, "polynomial", "mse", "nadam", 0.01, 1000),
    "linear": (4, "linear", "mse", "sgd", 0.001, 200),
    "linear2d": (3, "linear", "mse", "sgd", 0.01, 100),
    "puzzle": (4, "linear", "sse", "nadam", 0.01, 2000),
    "sine": (2000, "polynomial", "sse", "sgd", 1e-6, 2000),
    "legendre": (2000, "sine_cubic", "sse", "sgd", 5e-6, 2000),
}


def test_every_preset_on_disk_is_covered():
    on_disk = {path.stem for path in (config_dir() / "task").glob("*.yaml")}
    assert on_disk == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_preset_composes_and_builds(task, compose_config, registry):
    rows, model, loss, optimizer, lr, steps = TASKS[task]
    cfg = compose_config([f"+task={task}"])
    assert (cfg.model.name, cfg.loss.name, cfg.optimizer.name) == (model, loss, optimizer)
    assert cfg.optimizer.lr == lr and cfg.trainer.max_steps == steps

    trainer = OmegaConf.to_object(cfg.trainer)
    assert isinstance(trainer, TrainerConfig)
    seed_everything(trainer.seed)
    run = build_state(cfg, registry, trainer=trainer, device=torch.device("cpu"), dtype=torch.float32).run
    assert len(run.data) == rows
    assert run.max_steps == steps
    assert type(run.optimizer).__name__.lower() == optimizer
    assert run.optimizer.param_groups[0]["lr"] == lr
    predictions = run.model(run.data.features)
    assert predictions.shape == run.data.targets.shape


@pytest.mark.parametrize("task", sorted(TASKS))
def test_swapping_in_csv_data_leaves_the_rest_of_the_preset(task, compose_config):
    cfg = compose_config([f"+task={task}", "data=csv", "data.path=points.csv"])
    assert cfg.data.name == "csv" and cfg.data.path == "points.csv"
    assert cfg.model.name == TASKS[task][1]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_swapping_the_model_leaves_the_rest_of_the_preset(task, compose_config, registry):
    cfg = compose_config([f"+task={task}", "model=linear", "model.init=zeros"])
    assert cfg.model.name == "linear" and cfg.loss.name == TASKS[task][2]
    trainer = OmegaConf.to_object(cfg.trainer)
    run = build_state(cfg, registry, trainer=trainer, device=torch.device("cpu"), dtype=torch.float32).run
    assert run.model(run.data.features).shape == run.data.targets.shape


def test_misspelt_key_is_refused_by_name(compose_config):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="model.degre"):
        compose_config(["+task=polyfit", "model.degre=3"])
