"""Every task preset composes, selects what tasks.md says, and builds."""

from __future__ import annotations

import inspect

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


# --------------------------------------------------------------------------------------------
# A preset's optimizer settings belong to the optimizer it chose (conf/task_optimizer/)
# --------------------------------------------------------------------------------------------


def torch_default(optimizer_class, option: str):
    """The option's default in the torch optimizer's own signature: the independent reference."""
    return inspect.signature(optimizer_class).parameters[option].default


def test_every_optimizer_specialization_belongs_to_a_preset_and_its_optimizer():
    # A file whose task or optimizer was renamed would silently never apply again.
    on_disk = {path.stem for path in (config_dir() / "task_optimizer").glob("*.yaml")}
    assert on_disk == {f"{task}_{row[3]}" for task, row in TASKS.items()}


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("optimizer, optimizer_class", [("lbfgs", torch.optim.LBFGS), ("adam", torch.optim.Adam)])
def test_swapping_the_optimizer_gives_that_optimizers_own_defaults(task, optimizer, optimizer_class, compose_config):
    cfg = compose_config([f"+task={task}", f"optimizer={optimizer}"])
    assert cfg.optimizer.name == optimizer
    assert cfg.optimizer.lr == torch_default(optimizer_class, "lr")
    # The rest of the preset stays.
    rows, model, loss, _, _, steps = TASKS[task]
    assert (cfg.loss.name, cfg.trainer.max_steps) == (loss, steps)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_an_lr_set_on_the_command_line_wins_with_any_optimizer(task, compose_config):
    assert compose_config([f"+task={task}", "optimizer.lr=0.05"]).optimizer.lr == 0.05
    assert compose_config([f"+task={task}", "optimizer=lbfgs", "optimizer.lr=0.5"]).optimizer.lr == 0.5


def test_no_task_is_no_specialization(compose_config):
    cfg = compose_config(["optimizer=nadam"])
    assert cfg.optimizer.lr == torch_default(torch.optim.NAdam, "lr")


def least_squares_quadratic(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The exact fit of y = A x^2 + B x + C, in float64, with no optimizer involved."""
    design = torch.stack([x**2, x, torch.ones_like(x)], dim=1).double()
    return torch.linalg.lstsq(design, y.double()[:, None]).solution.flatten().tolist()


def test_polyfit_with_lbfgs_recovers_the_coefficients_in_20_steps(tmp_path):
    import framework

    run = framework.train(["+task=polyfit", "optimizer=lbfgs", "trainer.max_steps=20", "logger=[console]"],
                          run_dir=tmp_path / "run")
    torch.manual_seed(0)  # the preset's data: 20 samples of x^2 + 2x + 3, x ~ N(0, 1) * 5
    x = torch.randn(20) * 5
    exact = least_squares_quadratic(x, x**2 + 2 * x + 3)
    assert exact == pytest.approx([1, 2, 3], abs=1e-5)  # float32 samples: exact up to rounding
    assert run.result["steps"] <= 20
    assert [run.result["params"][name] for name in "ABC"] == pytest.approx(exact, abs=1e-3)


def test_a_sweep_over_optimizers_gives_each_job_its_own_optimizers_settings(tmp_path):
    from tests.conftest import run_cli

    sweep_dir = tmp_path / "sweep"
    completed = run_cli("-m", "+task=polyfit", "optimizer=nadam,lbfgs", "trainer.max_steps=20", "logger=[console]",
                        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env={"FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert completed.returncode == 0, completed.stderr
    snapshots = {OmegaConf.load(path).optimizer.name: OmegaConf.load(path).optimizer
                 for path in sweep_dir.glob("*/.hydra/config.yaml")}
    assert set(snapshots) == {"nadam", "lbfgs"}
    assert snapshots["nadam"].lr == TASKS["polyfit"][4]  # the preset's own optimizer keeps its settings
    assert snapshots["lbfgs"].lr == torch_default(torch.optim.LBFGS, "lr")
