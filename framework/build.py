"""Build a fit from the composed config: data -> model -> loss -> optimizer -> scheduler -> loggers."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from framework.data import Dataset, prepare_dataset, split_off_validation
from framework.devices import default_dtype
from framework.errors import ConfigError, FrameworkError, PluginError
from framework.flat_parameters import can_flatten, flatten, transposed_weight_column
from framework.precision import mixed_precision
from framework.registry import Component, Registry
from framework.schema import TrainerConfig
from framework.standardize import standardize_inputs
from framework.state import BuiltRun, LoopState, Progress
from framework.zero_grad import lean_zero_grad


def component_config(node: DictConfig, kind: str, registry: Registry) -> tuple[Component, Any]:
    """The registered component chosen for ``kind`` and its config as a dataclass instance."""
    name = node.get("name") if isinstance(node, DictConfig) else None
    if name is None:
        raise ConfigError(f"no {kind} is chosen; pick one with {kind}=NAME ({', '.join(registry.names(kind))})")
    component = registry.get(kind, name)
    config = OmegaConf.to_object(node)
    if not isinstance(config, component.config):
        raise ConfigError(
            f"{kind}.name={name} does not match the {kind} settings chosen; change components "
            f"with {kind}={name}, not {kind}.name"
        )
    return component, config


def call_factory(component: Component, config: Any, **context: Any) -> Any:
    """Call a component's factory; failures other than our own errors name the plugin."""
    try:
        return component.factory(config, **context)
    except FrameworkError:
        raise
    except Exception as error:
        raise PluginError(
            f"{component.kind} {component.name!r} from plugin {component.provider} failed to build: "
            f"{type(error).__name__}: {error}"
        ) from error


def shape_checked(loss_fn: Callable) -> Callable:
    """Refuse predictions and targets of different shapes instead of broadcasting them.

    (N,) predictions against (N, 1) targets broadcast to (N, N) and give a wrong loss with only
    a warning; here it is an error.
    """

    def checked_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if predictions.shape != targets.shape:
            raise ConfigError(
                f"the model's predictions have shape {tuple(predictions.shape)} but the targets have "
                f"shape {tuple(targets.shape)}; they must match exactly (broadcasting them would "
                "compute a wrong loss). Check the model's output size and the data's target columns."
            )
        return loss_fn(predictions, targets)

    return checked_loss


def freeze_parameters(model: torch.nn.Module, patterns: list[str]) -> dict[str, torch.nn.Parameter]:
    """Freeze parameters whose names match any pattern; return the trainable ones by name."""
    named = dict(model.named_parameters())
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in named):
            raise ConfigError(
                f"trainer.freeze pattern {pattern!r} matches no parameter; parameters: {', '.join(named)}"
            )
    trainable = {}
    for name, parameter in named.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            parameter.requires_grad_(False)
        elif parameter.requires_grad:
            trainable[name] = parameter
    if not trainable:
        raise ConfigError(f"no parameter is left to train (frozen: {', '.join(named)})")
    return trainable


def build_model(component: Component, config: Any, data: Dataset, dtype: torch.dtype, device) -> torch.nn.Module:
    with default_dtype(dtype):
        model = call_factory(component, config, data=data)
    if not isinstance(model, torch.nn.Module):
        raise PluginError(
            f"model {component.name!r} from plugin {component.provider} returned "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    for name, parameter in model.named_parameters():
        if not parameter.is_floating_point():
            raise ConfigError(
                f"model parameter {name!r} is {parameter.dtype}: integer tensors cannot require "
                "gradients, so parameters must be floating point"
            )
    return model.to(device=device, dtype=dtype)


def steps_per_epoch(rows: int, batch_size: int | None) -> int:
    if batch_size is None or batch_size >= rows:
        return 1
    return -(-rows // batch_size)


def resolve_max_steps(trainer: TrainerConfig, per_epoch: int) -> tuple[int, str]:
    """(step limit, 'max_steps' or 'max_epochs'): whichever limit comes first, as in Lightning."""
    limits = []
    if trainer.max_steps is not None:
        limits.append((trainer.max_steps, "max_steps"))
    if trainer.max_epochs is not None:
        limits.append((trainer.max_epochs * per_epoch, "max_epochs"))
    if not limits:
        raise ConfigError("set trainer.max_steps or trainer.max_epochs (both are null)")
    return min(limits)


def check_val_every(trainer: TrainerConfig, data: Dataset) -> None:
    """``trainer.val_every`` without a validation set would do nothing; say so instead."""
    if trainer.val_every is not None and data.validation is None:
        raise ConfigError(
            f"trainer.val_every={trainer.val_every} sets how often val/loss is logged, but this run has no "
            "validation set; hold out rows with data.val_fraction=FRACTION (e.g. 0.2), or use a data "
            "component that gives its own validation set"
        )


def build_state(
    cfg: DictConfig,
    registry: Registry,
    *,
    trainer: TrainerConfig,
    device: torch.device,
    dtype: torch.dtype,
    task: str | None = None,
    run_dir: Path | None = None,
) -> LoopState:
    """Build every component in order, with progress at step 0; the caller has already checked
    the config's ranges (framework.ranges) and seeded the random generators."""
    data_component, data_config = component_config(cfg.data, "data", registry)
    batch_size = getattr(data_config, "batch_size", None)
    data = prepare_dataset(call_factory(data_component, data_config, dtype=dtype), dtype=dtype, device=device)
    data = split_off_validation(data, getattr(data_config, "val_fraction", None), seed=trainer.seed)
    check_val_every(trainer, data)
    per_epoch = steps_per_epoch(len(data), batch_size)
    max_steps, limit_reason = resolve_max_steps(trainer, per_epoch)

    model_component, model_config = component_config(cfg.model, "model", registry)
    model = build_model(model_component, model_config, data, dtype, device)
    if getattr(data_config, "standardize", False):
        # Standardized from the training rows; trainer.freeze then names standardized.<name>.
        model = standardize_inputs(model, data.features, model_component.name)
    trainable = freeze_parameters(model, list(trainer.freeze))

    loss_component, loss_config = component_config(cfg.loss, "loss", registry)
    loss_fn = shape_checked(call_factory(loss_component, loss_config))

    optimizer_component, optimizer_config = component_config(cfg.optimizer, "optimizer", registry)

    def build_optimizer(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return call_factory(optimizer_component, optimizer_config, params=params)

    parameters = list(trainable.values())
    optimizer = build_optimizer(parameters)
    if can_flatten(model, parameters, optimizer):  # the same updates, cheaper
        optimizer = flatten(build_optimizer, parameters, transposed_weight_column(model, parameters))
    lean_zero_grad(optimizer)  # a flattened one has its own
    precision = mixed_precision(trainer.precision, device, dtype, optimizer)

    scheduler_component, scheduler_config = component_config(cfg.scheduler, "scheduler", registry)
    scheduler = call_factory(scheduler_component, scheduler_config, optimizer=optimizer, max_steps=max_steps)

    shuffle = bool(getattr(data_config, "shuffle", False))
    shuffle_generator = None
    if shuffle:
        shuffle_generator = torch.Generator(device=device)
        shuffle_generator.manual_seed(trainer.seed)
    chosen = (data_component, model_component, loss_component, optimizer_component, scheduler_component)
    run = BuiltRun(
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        data=data,
        trainable=trainable,
        trainer=trainer,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        steps_per_epoch=per_epoch,
        shuffle=shuffle,
        components={component.kind: component.name for component in chosen},
        task=task,
        run_dir=run_dir,
        max_steps=max_steps,
        limit_reason=limit_reason,
        config=OmegaConf.to_container(cfg, resolve=True),
        precision=precision,
    )
    return LoopState(run=run, progress=Progress(shuffle_generator=shuffle_generator))


def build_per_fit(
    kind: str, cfg: DictConfig, registry: Registry, *, run_dir: Path | None, overrides: list[str]
) -> dict[str, Any]:
    """One object per entry under ``logger`` (or ``callback``); each is a plugin for the length
    of a fit."""
    built = {}
    for name, node in (cfg.get(kind) or {}).items():
        component, config = component_config(node, kind, registry)
        built[name] = call_factory(
            component, config, run_dir=run_dir, run_config=cfg, run_overrides=overrides
        )
    return built
