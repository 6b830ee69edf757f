"""Optimizers: torch's own, with torch's own options and defaults read from their signatures."""

import torch

from framework import Component, Range, config_from_signature, hookimpl, options

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "lbfgs": torch.optim.LBFGS,
}

# The valid range of every numeric option of the optimizers above, by option name. Stricter than
# torch where torch's bound lets a run go silently wrong: lr=0 or eps=0 trains nothing or
# divides by zero, and a decay factor of 1 (momentum, betas, alpha) never forgets.
OPTION_RANGES = {
    "lr": Range(gt=0),
    "momentum": Range(ge=0, lt=1),
    "dampening": Range(ge=0, le=1),
    "weight_decay": Range(ge=0),
    "betas": Range(ge=0, lt=1),  # each of the two
    "eps": Range(gt=0),
    "alpha": Range(ge=0, lt=1),  # RMSprop's smoothing of the squared gradient
    "momentum_decay": Range(ge=0),
    "lr_decay": Range(ge=0),  # Adagrad: lr / (1 + (step - 1) * lr_decay)
    "initial_accumulator_value": Range(ge=0),  # Adagrad: the sum of squared gradients it starts from
    "max_iter": Range(ge=1),  # LBFGS: iterations per step
    "max_eval": Range(ge=1),  # LBFGS: function evaluations per step (null: max_iter * 5/4)
    "tolerance_grad": Range(ge=0),
    "tolerance_change": Range(ge=0),
    "history_size": Range(ge=1),
}


def optimizer_factory(optimizer_class):
    def build(config, *, params):
        return optimizer_class(params, **options(config))

    return build


@hookimpl
def framework_components():
    return [
        Component(
            "optimizer",
            name,
            optimizer_factory(optimizer_class),
            config_from_signature(optimizer_class, name=f"{optimizer_class.__name__}Config", skip=("params",),
                                  ranges=OPTION_RANGES),
            help=f"torch.optim.{optimizer_class.__name__}",
        )
        for name, optimizer_class in OPTIMIZERS.items()
    ]
