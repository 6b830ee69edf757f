"""Learning-rate schedulers, stepped after every optimizer step: ``none``, ``step``,
``exponential``, ``cosine`` (T_max defaults to the run's step count) and ``linear``."""

from dataclasses import dataclass

from torch.optim import lr_scheduler

from framework import Component, config_from_signature, hookimpl, options


@dataclass
class ConstantConfig:
    pass


SCHEDULERS = {
    "step": (lr_scheduler.StepLR, {}),
    "exponential": (lr_scheduler.ExponentialLR, {}),
    "cosine": (lr_scheduler.CosineAnnealingLR, {"T_max": None}),
    "linear": (lr_scheduler.LinearLR, {}),
}


def scheduler_factory(scheduler_class):
    def build(config, *, optimizer, max_steps):
        settings = options(config)
        if "T_max" in settings and settings["T_max"] is None:
            settings["T_max"] = max_steps  # anneal over the whole run
        return scheduler_class(optimizer, **settings)

    return build


@hookimpl
def framework_components():
    components = [
        Component("scheduler", "none", lambda config, **context: None, ConstantConfig,
                  help="a constant learning rate"),
    ]
    for name, (scheduler_class, defaults) in SCHEDULERS.items():
        config = config_from_signature(
            scheduler_class, name=f"{scheduler_class.__name__}Config",
            skip=("optimizer", "last_epoch", "verbose"), defaults=defaults,
        )
        components.append(Component("scheduler", name, scheduler_factory(scheduler_class), config,
                                    help=f"torch.optim.lr_scheduler.{scheduler_class.__name__}, per step"))
    return components
