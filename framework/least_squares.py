"""Least-squares problems: a model linear in its parameters, fitted with ``mse`` or ``sse``.

Such a problem has an exact answer and a known curvature, which the plain loop never uses:

- its optimum, by ``torch.linalg.lstsq`` in float64, so a run can say how far it is from the
  best possible loss (the optimality gap);
- its Hessian, ``2 * scale * AᵀA`` for the design matrix A, constant: its largest eigenvalue L
  bounds the learning rate plain gradient descent can take (2/L), and its condition number says
  how hard the problem is.

A model declares that it is linear in its parameters with a method::

    def design_matrix(self, features: torch.Tensor) -> dict[str, torch.Tensor] | None

returning, for each parameter name, the block of design-matrix columns that multiply it: shape
(N, parameter.numel()), so that ``model(features)`` (N rows, one output column) equals the sum of
``block @ parameter.reshape(-1)`` over the parameters. It returns None when, as built, it is not
linear in them (e.g. several outputs). The built-in ``linear`` and ``polynomial`` models declare
it; :func:`least_squares_problem` checks a declaration against the model's forward once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.errors import PluginError

# Losses that are a multiple of the squared residual norm, by component name: that multiple.
SQUARED_LOSS_SCALES = {"mse": "mean", "sse": "sum"}

# A declared design matrix must reproduce the model's forward to this relative precision in the
# model's dtype (float32 sums of a few terms differ from float64 ones by a few ulps).
DECLARATION_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


@dataclass(frozen=True)
class LeastSquares:
    """loss(θ) = scale · ‖design · θ − target‖², over the trainable parameters θ, in float64."""

    design: torch.Tensor  # (N, P): the trainable parameters' columns, in ``blocks`` order
    target: torch.Tensor  # (N,): the targets less the frozen parameters' contribution
    scale: float  # 1/N for the mean squared error, 1 for the sum
    blocks: tuple[tuple[str, tuple[int, ...]], ...]  # (parameter name, shape), column order

    def loss(self, theta: torch.Tensor) -> float:
        residual = self.design @ theta - self.target
        return self.scale * float(residual @ residual)

    def optimum(self) -> tuple[torch.Tensor, float]:
        """(θ*, loss(θ*)): the minimum-norm least-squares solution (exact for rank-deficient A)."""
        # gelsd (SVD) copes with rank deficiency, e.g. the puzzle's 4 equations of rank 3.
        theta = torch.linalg.lstsq(self.design, self.target.unsqueeze(1), driver="gelsd").solution.squeeze(1)
        return theta, self.loss(theta)

    def optimal_parameters(self) -> dict[str, torch.Tensor]:
        """θ* split back into the trainable parameters, by name, in their shapes (float64)."""
        theta, _ = self.optimum()
        return self.split(theta)

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        values, start = {}, 0
        for name, shape in self.blocks:
            size = int(torch.Size(shape).numel())
            values[name] = theta[start:start + size].reshape(shape)
            start += size
        return values

    def singular_values(self) -> torch.Tensor:
        return torch.linalg.svdvals(self.design)

    def largest_hessian_eigenvalue(self) -> float:
        """L = 2 · scale · σ_max(A)²: the Hessian of the loss is 2 · scale · AᵀA everywhere."""
        return 2.0 * self.scale * float(self.singular_values()[0]) ** 2

    def condition_number(self) -> float:
        """σ_max / σ_min of the design matrix (of the Hessian: its square); inf when rank deficient."""
        singular = self.singular_values()
        smallest = float(singular[-1])
        if len(singular) < self.design.shape[1] or smallest <= float(singular[0]) * torch.finfo(torch.float64).eps * max(self.design.shape):
            return float("inf")
        return float(singular[0]) / smallest


def declares_design_matrix(model: torch.nn.Module) -> bool:
    """Whether the model has a ``design_matrix`` method (it may still return None for its shape)."""
    return callable(getattr(model, "design_matrix", None))


def describe_model(model: torch.nn.Module, model_name: str | None = None) -> str:
    """``model 'polynomial' (Polynomial)`` for messages: the component name users chose, when known."""
    return f"model {model_name!r} ({type(model).__name__})" if model_name else f"model {type(model).__name__}"


def declared_blocks(model: torch.nn.Module, features: torch.Tensor,
                    model_name: str | None = None) -> dict[str, torch.Tensor] | None:
    """The model's design-matrix blocks for ``features``, or None when it declares none.

    The declaration is the model plugin's code: a failure in it is that plugin's, said so here
    rather than blamed on whichever plugin asked for the blocks."""
    if not declares_design_matrix(model):
        return None
    try:
        with torch.no_grad():
            return model.design_matrix(features)
    except Exception as error:
        raise PluginError(f"the design_matrix of {describe_model(model, model_name)} failed: "
                          f"{type(error).__name__}: {error}") from error


def squared_loss(loss_name: str | None, targets: torch.Tensor) -> bool:
    """Whether fitting ``targets`` with this loss is least squares for a model that declares a
    design matrix: ``mse`` or ``sse``, one target column."""
    return loss_name in SQUARED_LOSS_SCALES and targets.dim() == 2 and targets.shape[1] == 1


def least_squares_problem(model: torch.nn.Module, loss_name: str | None, features: torch.Tensor,
                          targets: torch.Tensor, trainable: dict[str, torch.nn.Parameter],
                          model_name: str | None = None) -> LeastSquares | None:
    """The least-squares problem of fitting ``model`` to the data, or None when it is not one
    (the loss is not ``mse``/``sse``, the model declares no design matrix, several targets).
    ``model_name`` (the chosen component's name) is for messages."""
    if not squared_loss(loss_name, targets):
        return None
    reduction = SQUARED_LOSS_SCALES[loss_name]
    blocks = declared_blocks(model, features, model_name)
    if blocks is None:
        return None
    parameters = dict(model.named_parameters())
    check_declaration(model, features, blocks, parameters, model_name)
    rows = features.shape[0]
    target = targets.detach().reshape(rows).to("cpu", torch.float64)
    columns, order = [], []
    for name, block in blocks.items():
        block = block.detach().to("cpu", torch.float64).reshape(rows, -1)
        if name in trainable:
            columns.append(block)
            order.append((name, tuple(parameters[name].shape)))
        else:  # a frozen parameter's part of the output is a constant to fit around
            target = target - block @ parameters[name].detach().to("cpu", torch.float64).reshape(-1)
    if not columns:
        return None
    scale = 1.0 / rows if reduction == "mean" else 1.0
    return LeastSquares(torch.cat(columns, dim=1), target, scale, tuple(order))


def check_declaration(model: torch.nn.Module, features: torch.Tensor, blocks: dict[str, torch.Tensor],
                      parameters: dict[str, torch.nn.Parameter], model_name: str | None = None) -> None:
    """A design matrix that does not reproduce the forward would give a wrong optimum: refuse it."""
    model_name = describe_model(model, model_name)
    if set(blocks) != set(parameters):
        raise PluginError(f"the design_matrix of {model_name} gives blocks for {sorted(blocks)}, but its "
                          f"parameters are {sorted(parameters)}")
    rows = features.shape[0]
    misshapen = [f"{name} {tuple(blocks[name].shape)}" for name, parameter in parameters.items()
                 if blocks[name].numel() != rows * parameter.numel()]
    if misshapen:
        raise PluginError(f"the design_matrix of {model_name} gives blocks of the wrong shape for {rows} rows: "
                          f"{', '.join(misshapen)} (each must be (rows, parameter.numel()))")
    # At generic parameter values, not the model's own: a declaration that is wrong can still
    # agree with the forward at particular ones (at zeros, where the linear task starts, any does).
    generator = torch.Generator().manual_seed(0)
    values = {name: torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(parameter.device, parameter.dtype)
              for name, parameter in parameters.items()}
    with torch.no_grad():
        predicted = torch.func.functional_call(model, values, (features,)).reshape(rows, -1)
        if predicted.shape[1] != 1:
            raise PluginError(f"{model_name} declares a design matrix but gives {predicted.shape[1]} "
                              "outputs per row; a declaration is for one output (return None otherwise)")
        terms = {name: blocks[name].reshape(rows, -1) @ value.reshape(-1) for name, value in values.items()}
    rebuilt = sum(terms.values())
    error = float((rebuilt - predicted.squeeze(1)).abs().max())
    # Relative to the largest term: rounding is relative to what was summed, not to the result.
    size = max([float(predicted.abs().max())] + [float(term.abs().max()) for term in terms.values()])
    if error > DECLARATION_TOLERANCE.get(predicted.dtype, 1e-4) * max(size, 1.0):
        raise PluginError(f"the design_matrix of {model_name} does not reproduce its forward: they differ by "
                          f"up to {error:.3g} on the data")


def may_be_least_squares(run) -> bool:
    """Whether :func:`run_problem` can be other than None for this built run, without building
    anything: the loss is ``mse``/``sse`` on one target and the model has ``design_matrix``."""
    return squared_loss(run.components.get("loss"), run.data.targets) and declares_design_matrix(run.model)


def run_problem(run) -> LeastSquares | None:
    """The least-squares problem of a built run (:class:`framework.BuiltRun`) on its training data."""
    return least_squares_problem(run.model, run.components.get("loss"), run.data.features, run.data.targets,
                                 run.trainable, run.components.get("model"))
