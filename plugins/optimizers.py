"""Optimizers: torch's own, with torch's own options and defaults read from their signatures."""

import torch

from framework import Component, config_from_signature, hookimpl, options

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "lbfgs": torch.optim.LBFGS,
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
            config_from_signature(optimizer_class, name=f"{optimizer_class.__name__}Config", skip=("params",)),
            help=f"torch.optim.{optimizer_class.__name__}",
        )
        for name, optimizer_class in OPTIMIZERS.items()
    ]
