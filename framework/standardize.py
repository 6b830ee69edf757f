"""``data.standardize=true``: train on standardized feature columns, report in the data's units.

Badly scaled features (polyfit's x² beside 1) make gradient descent slow; scaling every feature
column to zero mean and unit variance fixes that without changing what is fitted, provided the
fitted parameters are turned back into the data's units at the end. Here:

- the model is wrapped in :class:`StandardizedInput`: ``model(x) = standardized((x - mean) / scale)``,
  with ``mean`` and ``scale`` buffers (the training rows' mean and standard deviation, computed
  in float64). The wrapped model's parameters, ``standardized.<name>``, are what is trained,
  checkpointed (so a resumed run goes on bit-identically) and logged to TensorBoard;
- the wrapper declares its design matrix (the wrapped model's, at the standardized features), so
  the optimality gap and everything else reading :func:`framework.least_squares.run_problem` see
  the standardized problem;
- :func:`in_original_units` gives the wrapped model with the parameters that compute the same
  function of the raw features: what result.json's ``params``, the console, ``model.safetensors``
  (so ``framework.load_run(dir).model(x)`` takes raw ``x``) and ``framework.train`` report.

The conversion needs to know the model's function space, so only a model that declares its
design matrix (framework.least_squares: ``linear`` with one output, ``polynomial``) can be
standardized, and only when that space is closed under the change of variables: with ``D`` the
design matrix and ``z = (x - mean) / scale``, every column of ``D(z)`` must be a combination of
the columns of ``D(x)``, ``D(z) = D(x) T``; then ``θ_original = T θ_standardized`` is the same
function everywhere. ``T`` is found with ``torch.linalg.lstsq`` in float64 on generic probe
points around the data (not on the data themselves, which may be rank deficient, so that the
converted model is the same function off the data too), and the closure is checked on them.
A polynomial of full degree and ``linear`` with a bias are closed. ``linear`` without a bias (the
puzzle) is not closed under centering, which would add an intercept it does not have: its
columns are then only divided by their root mean square. A model closed under neither is refused.

A constant feature column (standard deviation 0) cannot be scaled to unit variance: it is left
as it is.
"""

from __future__ import annotations

import copy
import logging

import torch

from framework.errors import ConfigError
from framework.least_squares import check_declaration, declared_blocks, describe_model

log = logging.getLogger(__name__)

SETTING = "data.standardize"
PREFIX = "standardized"  # the wrapped model's attribute: its parameters are standardized.<name>

# D(z) = D(x) T must hold to this relative precision on the probe points (float64 throughout);
# a model whose space is not closed misses by far more (the missing intercept's whole size).
CLOSURE_TOLERANCE = 1e-8
# A standard deviation this small relative to the column's mean is rounding: the column is constant.
CONSTANT_COLUMN = 1e-12
# T is P × P and found from (P + EXTRA_PROBES) probe points: beyond this many parameters the
# conversion would cost more than the fit is worth.
MAX_PARAMETERS = 4096
EXTRA_PROBES = 16
PROBE_SEED = 0  # a private generator: the run's random streams are left alone


class StandardizedInput(torch.nn.Module):
    """``model(x) = standardized((x - mean) / scale)``: the wrapped model sees standardized features.

    Its parameters (``standardized.<name>``) are in standardized units; :meth:`in_original_units`
    gives the wrapped model with the parameters of the same function of the raw features.
    """

    def __init__(self, model: torch.nn.Module, mean: torch.Tensor, scale: torch.Tensor,
                 model_name: str | None = None) -> None:
        super().__init__()
        self.standardized = model
        # Buffers: saved in checkpoints with the parameters they give a meaning to.
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.model_name = model_name
        self._transform: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (mean, scale, T)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.standardized((features - self.mean) / self.scale)

    @property
    def dense_gradients(self) -> bool:
        """The wrapped model's (framework.flat_parameters): the wrapper adds no parameter."""
        return getattr(self.standardized, "dense_gradients", False)

    @property
    def transposed_weight_column(self) -> bool:
        """The wrapped model's too (framework.flat_parameters): its forward gets the standardized
        features, and computes with the lent column as it would with raw ones."""
        return getattr(self.standardized, "transposed_weight_column", False)

    def design_matrix(self, features: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The wrapped model's blocks at the standardized features (framework.least_squares)."""
        blocks = declared_blocks(self.standardized, (features - self.mean) / self.scale, self.model_name)
        return None if blocks is None else {f"{PREFIX}.{name}": block for name, block in blocks.items()}

    def transform(self) -> torch.Tensor:
        """T (float64, CPU): θ_original = T θ_standardized, for the current mean and scale (a
        resumed run loads them from its checkpoint, so T is found again when they change)."""
        cached = self._transform
        if cached is None or not (torch.equal(cached[0], self.mean) and torch.equal(cached[1], self.scale)):
            matrix, _ = change_of_variables(self.standardized, self.mean, self.scale, self.model_name)
            cached = self._transform = (self.mean.clone(), self.scale.clone(), matrix)
        return cached[2]

    def in_original_units(self) -> torch.nn.Module:
        """A copy of the wrapped model whose parameters compute, from raw features, what this
        model computes: the fit in the data's units."""
        original = copy.deepcopy(self.standardized)
        parameters = dict(original.named_parameters())
        theta = torch.cat([p.detach().to("cpu", torch.float64).reshape(-1) for p in parameters.values()])
        converted, start = self.transform() @ theta, 0
        with torch.no_grad():
            for parameter in parameters.values():
                size = parameter.numel()
                parameter.copy_(converted[start:start + size].reshape(parameter.shape))
                start += size
        return original


def in_original_units(model: torch.nn.Module) -> torch.nn.Module:
    """The model as results report it: a :class:`StandardizedInput` in the data's units, any
    other model as it is."""
    return model.in_original_units() if isinstance(model, StandardizedInput) else model


def column_statistics(features: torch.Tensor, centered: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(mean, scale, constant columns) in float64: the mean and standard deviation of each
    column, or, not ``centered``, 0 and the root mean square. A constant column (or, not
    centered, a zero one) gets mean 0 and scale 1: it is left as it is."""
    values = features.detach().to(torch.float64)
    mean = values.mean(dim=0)
    if centered:
        scale = values.std(dim=0, correction=0)
        constant = scale <= CONSTANT_COLUMN * mean.abs()
    else:
        scale = values.pow(2).mean(dim=0).sqrt()
        mean = torch.zeros_like(mean)
        constant = scale == 0
    mean = torch.where(constant, torch.zeros_like(mean), mean)
    scale = torch.where(constant, torch.ones_like(scale), scale)
    return mean, scale, [int(index) for index in torch.nonzero(constant).flatten()]


def design_columns(model: torch.nn.Module, features: torch.Tensor, model_name: str | None) -> torch.Tensor | None:
    """(rows, P) float64 on the CPU: the model's declared blocks in its parameters' order, or None."""
    blocks = declared_blocks(model, features, model_name)
    if blocks is None:
        return None
    rows = features.shape[0]
    return torch.cat([blocks[name].detach().to("cpu", torch.float64).reshape(rows, -1)
                      for name, _ in model.named_parameters()], dim=1)


def change_of_variables(model: torch.nn.Module, mean: torch.Tensor, scale: torch.Tensor,
                        model_name: str | None) -> tuple[torch.Tensor, float]:
    """(T, relative residual): the least-squares T with D((x - mean) / scale) ≈ D(x) T on probe
    points x around the data, and how far from equal the two sides are (0 for a closed space)."""
    mean64, scale64 = mean.detach().to(torch.float64), scale.detach().to(torch.float64)
    count = sum(parameter.numel() for parameter in model.parameters())
    generator = torch.Generator().manual_seed(PROBE_SEED)
    normal = torch.randn(count + EXTRA_PROBES, mean.numel(), generator=generator, dtype=torch.float64)
    # Generic points where the data are; float64, for a T exact to rounding in any run dtype.
    probes = (mean64.cpu() + scale64.cpu() * normal).to(mean.device)
    raw = design_columns(model, probes, model_name)
    moved = design_columns(model, (probes - mean64) / scale64, model_name)
    if raw is None or moved is None:
        raise ConfigError(f"{SETTING}=true: {describe_model(model, model_name)} gives no design matrix for "
                          "these data, so its parameters could not be turned back into the data's units")
    matrix = torch.linalg.lstsq(raw, moved, driver="gelsd").solution
    # Relative to the terms summed, as rounding is.
    size = max(float(moved.abs().max()), float((raw.abs() @ matrix.abs()).max()), 1e-300)
    return matrix, float((raw @ matrix - moved).abs().max()) / size


def standardize_inputs(model: torch.nn.Module, features: torch.Tensor, model_name: str | None = None) -> StandardizedInput:
    """Wrap ``model`` (built for ``features``, the training rows) to train on standardized
    features; refuse, naming the setting and the model, a model whose parameters could not be
    turned back into the data's units."""
    described = describe_model(model, model_name)
    blocks = declared_blocks(model, features, model_name)
    if blocks is None:
        reason = ("declares no design matrix" if not callable(getattr(model, "design_matrix", None))
                  else "gives no design matrix for these data (e.g. several outputs)")
        raise ConfigError(
            f"{SETTING}=true needs a model that is linear in its parameters and declares its design "
            f"matrix (linear with one output, polynomial), to give the fitted parameters in the data's "
            f"units; {described} {reason}. Leave {SETTING}=false, or scale the data yourself"
        )
    # A wrong declaration would convert the parameters wrongly: the same check as the optimum's.
    check_declaration(model, features, blocks, dict(model.named_parameters()), model_name)
    count = sum(parameter.numel() for parameter in model.parameters())
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{SETTING}=true converts the parameters back with a {count} × {count} matrix; "
                          f"{described} has more than {MAX_PARAMETERS} parameters. Leave {SETTING}=false")
    dtype, device = features.dtype, features.device
    for centered in (True, False):
        mean, scale, constant = column_statistics(features, centered)
        # The buffers in the run's dtype are what the forward uses: T is found for those values.
        mean, scale = mean.to(device, dtype), scale.to(device, dtype)
        matrix, residual = change_of_variables(model, mean, scale, model_name)
        if residual <= CLOSURE_TOLERANCE:
            break
    else:
        raise ConfigError(
            f"{SETTING}=true: the functions {described} can fit are not the same for standardized "
            f"features (a change of variables leaves its parameters' span, by {residual:.3g} relative), "
            f"so its fit could not be given in the data's units. Leave {SETTING}=false"
        )
    if not centered:
        log.info("%s: %s has no intercept to absorb the columns' means, so the feature columns are only "
                 "divided by their root mean square, not centered", SETTING, described)
    if constant:
        log.info("%s: feature column(s) %s are constant and left as they are", SETTING,
                 ", ".join(map(str, constant)))
    wrapped = StandardizedInput(model, mean, scale, model_name)
    wrapped._transform = (mean.clone(), scale.clone(), matrix)
    return wrapped
