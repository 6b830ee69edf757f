"""The ``linear`` model: y = x W^T + b, with in/out sizes inferred from the data."""

from dataclasses import dataclass
from typing import Optional

import torch

from framework import Component, ConfigError, hookimpl, setting
from framework.flat_parameters import lent_column
from framework_plugins._initial_values import INITS, initial_values


@dataclass
class LinearConfig:
    bias: bool = True
    # default: torch.nn.Linear's own initialisation; zeros | randn | uniform draw weight then bias
    init: str = "default"
    in_features: Optional[int] = setting(None, ge=1)  # null: the number of feature columns (the only accepted value)
    out_features: Optional[int] = setting(None, ge=1)  # null: the number of target columns


class Linear(torch.nn.Linear):
    """torch.nn.Linear whose parameters are drawn once, by the chosen initialisation only."""

    dense_gradients = True  # weight and bias are in every forward (framework.flat_parameters)

    def __init__(self, in_features: int, out_features: int, bias: bool, init: str) -> None:
        torch.nn.Module.__init__(self)  # skip nn.Linear's own draw: it would shift the RNG stream
        self.in_features, self.out_features = in_features, out_features
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        if init == "default":
            self.reset_parameters()
            return
        with torch.no_grad():
            self.weight.copy_(initial_values(init, (out_features, in_features), setting="model.init"))
            if self.bias is not None:
                self.bias.copy_(initial_values(init, (out_features,), setting="model.init"))

    @property
    def transposed_weight_column(self) -> bool:
        """One output and no bias (the puzzle's A, B, C, D): the optimizer's flat tensor is the
        weight's transpose, which a training step's forward computes with (framework.flat_parameters).
        Read when the optimizer is built, so a bias assigned after construction counts."""
        return self.out_features == 1 and self.bias is None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if bias is None and input.dim() == 2:
            # F.linear's product is torch.mm(input, weight.t()), and the lent column is laid out
            # as weight.t() (strides (1, in)): the same kernel on the same operands, so the same
            # bits, without the transpose's node in the graph. Any other layout of the column
            # could round differently (a one-row batch of 12 features, or non-contiguous ones).
            column = lent_column((weight,))
            if column is not None and column.stride() == (1, weight.shape[1]):
                return torch.mm(input, column)
        return torch.nn.functional.linear(input, weight, bias)


    def design_matrix(self, features: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Linear in W and b for one output: the features are W's columns, ones are b's
        (framework.least_squares). Several outputs are several problems: not declared."""
        if self.out_features != 1:
            return None
        blocks = {"weight": features}
        if self.bias is not None:
            blocks["bias"] = torch.ones_like(features[:, :1])
        return blocks


def build_linear(config: LinearConfig, *, data) -> Linear:
    columns = data.features.shape[1]
    if config.in_features is not None and config.in_features != columns:
        raise ConfigError(f"model.in_features={config.in_features} but the data have {columns} feature "
                          "columns; leave it null to take the data's")
    if config.init not in ("default", *INITS):
        raise ConfigError(f"model.init={config.init!r} is not an initialisation; use one of default, {', '.join(INITS)}")
    out_features = config.out_features or data.targets.shape[1]
    return Linear(columns, out_features, config.bias, config.init)


@hookimpl
def framework_components():
    return [Component("model", "linear", build_linear, LinearConfig, help="y = x W^T + b")]
