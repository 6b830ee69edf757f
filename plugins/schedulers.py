"""Learning-rate schedulers, stepped after every optimizer step: ``none``, ``step``,
``exponential``, ``cosine`` (T_max defaults to the run's step count) and ``linear``."""

from dataclasses import dataclass

from torch.optim import lr_scheduler

from framework import Component, Range, config_from_signature, hookimpl, options


@dataclass
class ConstantConfig:
    pass


SCHEDULERS = {
    "step": (lr_scheduler.StepLR, {}),
    "exponential": (lr_scheduler.ExponentialLR, {}),
    "cosine": (lr_scheduler.CosineAnnealingLR, {"T_max": None}),
    "linear": (lr_scheduler.LinearLR, {}),
}

# The valid range of every numeric option of the schedulers above, by option name (steps are
# optimizer steps; gamma and the factors multiply the optimizer's lr).
OPTION_RANGES = {
    "step_size": Range(ge=1),
    "gamma": Range(gt=0),
    "T_max": Range(ge=1),
    "eta_min": Range(ge=0),
    "start_factor": Range(gt=0, le=1),
    "end_factor": Range(ge=0, le=1),
    "total_iters": Range(ge=1),
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
            skip=("optimizer", "last_epoch", "verbose"), defaults=defaults, ranges=OPTION_RANGES,
        )
        components.append(Component("scheduler", name, scheduler_factory(scheduler_class), config,
                                    help=f"torch.optim.lr_scheduler.{scheduler_class.__name__}, per step"))
    return components
