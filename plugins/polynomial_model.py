"""The ``polynomial`` model: one named scalar parameter per coefficient of a 1-D polynomial."""

from dataclasses import dataclass
from typing import List, Optional

import torch

from framework import Component, ConfigError, hookimpl, setting
from framework_plugins._initial_values import initial_values

ORDERS = ("descending", "ascending")


@dataclass
class PolynomialConfig:
    degree: int = setting(2, ge=0)
    # descending: A*x**2 + B*x + C; ascending: a + b*x + c*x**2 (the terms are summed in this order)
    order: str = "descending"
    # One name per coefficient, in term order; default A, B, C... (descending) or a, b, c... (ascending)
    names: Optional[List[str]] = None
    init: str = "randn"  # randn | zeros | uniform, drawn one coefficient at a time in term order


class Polynomial(torch.nn.Module):
    """y = sum of coefficient * x**power over the terms, added left to right as written."""

    dense_gradients = True  # every coefficient is in every forward (framework.flat_parameters)
    broadcasts_over_jobs = True  # scalars in elementwise arithmetic only (framework.batched_fit)

    def __init__(self, names: list[str], powers: list[int], init: str) -> None:
        super().__init__()
        self.names, self.powers = list(names), list(powers)
        self._powers: tuple[torch.Tensor, int, dict[int, torch.Tensor]] | None = None  # see powers_of
        for name in self.names:
            self.register_parameter(name, torch.nn.Parameter(initial_values(init, (), setting="model.init")))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        powers = self.powers_of(features)
        y = None
        for name, power in zip(self.names, self.powers):
            coefficient = getattr(self, name)
            term = coefficient if power == 0 else coefficient * x if power == 1 else coefficient * powers[power]
            y = term if y is None else y + term
        return y.expand_as(x) if y.dim() == 0 else y

    def powers_of(self, features: torch.Tensor) -> dict[int, torch.Tensor]:
        """x**power for the powers above 1, kept while the same unchanged features come back:
        a full-batch fit passes the same tensor every step, and the powers were a quarter of
        polyfit's step. They are the values computing them afresh gives, so the fit is unchanged."""
        cached = self._powers
        if cached is not None and cached[0] is features and cached[1] == features._version:
            return cached[2]
        powers = {power: features**power for power in self.powers if power > 1}
        # Plain tensors only: features that carry a graph (a derivative in x) or no version
        # counter (inference mode) are not kept.
        if type(features) is torch.Tensor and not features.requires_grad and not features.is_inference():
            self._powers = (features, features._version, powers)
        return powers

    def design_matrix(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Linear in its coefficients: each one's column is x**power (framework.least_squares)."""
        return {name: features**power for name, power in zip(self.names, self.powers)}

    def extra_repr(self) -> str:
        return " + ".join(f"{n}*x**{p}" if p else n for n, p in zip(self.names, self.powers))


def build_polynomial(config: PolynomialConfig, *, data) -> Polynomial:
    if data.features.shape[1] != 1:
        raise ConfigError(
            f"model=polynomial fits one input column, but the data have {data.features.shape[1]}; "
            "use model=linear for several"
        )
    if config.order not in ORDERS:
        raise ConfigError(f"model.order={config.order!r}; use one of {', '.join(ORDERS)}")
    count = config.degree + 1
    powers = list(range(config.degree, -1, -1)) if config.order == "descending" else list(range(count))
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if config.order == "descending" else "abcdefghijklmnopqrstuvwxyz"
    names = list(config.names) if config.names is not None else [
        letters[i] if i < len(letters) else f"c{i}" for i in range(count)
    ]
    if len(names) != count or len(set(names)) != count:
        raise ConfigError(f"model.names needs {count} different names for degree {config.degree}, got {names}")
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise ConfigError(f"model.names must be identifiers (no dots or spaces): {bad}")
    return Polynomial(names, powers, config.init)


@hookimpl
def framework_components():
    return [
        Component("model", "polynomial", build_polynomial, PolynomialConfig,
                  help="one scalar parameter per coefficient of a polynomial in x"),
    ]
