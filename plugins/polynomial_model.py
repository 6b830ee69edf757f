"""The ``polynomial`` model: one named scalar parameter per coefficient of a 1-D polynomial."""

from dataclasses import dataclass
from typing import List, Optional

import torch

from framework import Component, ConfigError, hookimpl, setting
from framework.flat_parameters import lent_column
from framework.vector_products import backward_with
from framework_plugins._initial_values import initial_values

ORDERS = ("descending", "ascending")
FORMS = ("terms", "matmul")


@dataclass
class PolynomialConfig:
    degree: int = setting(2, ge=0)
    # descending: A*x**2 + B*x + C; ascending: a + b*x + c*x**2 (the terms are summed in this order)
    order: str = "descending"
    # One name per coefficient, in term order; default A, B, C... (descending) or a, b, c... (ascending)
    names: Optional[List[str]] = None
    init: str = "randn"  # randn | zeros | uniform, drawn one coefficient at a time in term order
    # terms: coefficient * x**power added term by term (the sine tutorial's a + b*x + c*x**2 + d*x**3);
    # matmul: one matrix product of the columns [x**power, ...] with the column of coefficients
    # (the polyfit tutorial's X @ w with one (3, 1) weight). Equal up to rounding; each is bit for
    # bit its tutorial's, and matmul is the cheaper step
    form: str = "terms"


class Polynomial(torch.nn.Module):
    """y = sum of coefficient * x**power over the terms: added left to right as written (form
    ``terms``), or as one matrix product of the design matrix with the coefficients (``matmul``)."""

    dense_gradients = True  # every coefficient is in every forward (framework.flat_parameters)
    # Given coefficients of shape (N, 1, 1) (framework.batched_fit), forward gives each of N jobs'
    # predictions bit for bit: terms by elementwise arithmetic, matmul by a batched product that
    # is checked to round as the job's own product does (matmul_over_jobs).
    broadcasts_over_jobs = True

    def __init__(self, names: list[str], powers: list[int], init: str, form: str = "terms") -> None:
        super().__init__()
        self.names, self.powers, self.form = list(names), list(powers), form
        self._powers: tuple[torch.Tensor, int, dict[int, torch.Tensor]] | None = None  # see powers_of
        self._design: tuple[torch.Tensor, int, torch.Tensor] | None = None  # see design_of
        self._checked_over_jobs: set[tuple] = set()  # see matmul_over_jobs
        # Under vmap a matmul is batched by torch's rule, which rounds some jobs differently;
        # the broadcast path above is exact (framework.batched_fit reads this).
        self.exact_under_vmap = form == "terms"
        for name in self.names:
            self.register_parameter(name, torch.nn.Parameter(initial_values(init, (), setting="model.init")))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.form == "matmul":
            return self.matmul_forward(features)
        x = features
        powers = self.powers_of(features)
        y = None
        for coefficient, power in zip(self.coefficients(), self.powers):
            term = coefficient if power == 0 else coefficient * x if power == 1 else coefficient * powers[power]
            y = term if y is None else y + term
        return y.expand_as(x) if y.dim() == 0 else y

    def coefficients(self) -> list[torch.Tensor]:
        """The coefficients in term order: from ``_parameters`` (nn.Module's ``__getattr__`` costs
        ≈ 0.5 µs a name), or as attributes where one is no longer a parameter there (a
        parametrization, pruning: the name is then a property or a plain attribute)."""
        parameters = self._parameters
        try:
            return [parameters[name] for name in self.names]
        except KeyError:
            return [getattr(self, name) for name in self.names]

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

    def matmul_forward(self, features: torch.Tensor) -> torch.Tensor:
        """design (rows, terms) @ coefficients (terms, 1): the tutorial's ``X @ w``."""
        design = self.design_of(features)
        coefficients = self.coefficients()
        if design.dtype != coefficients[0].dtype:
            # Other data (float64 or integers from numpy): the dtype the terms form computes in,
            # as type promotion gives it, where torch.mm would refuse the mix.
            dtype = torch.result_type(features, coefficients[0])
            design, coefficients = design.to(dtype), [c.to(dtype) for c in coefficients]
        if coefficients[0].dim() == 0:
            # The optimizer's flat tensor when it holds exactly these coefficients: one gradient
            # for autograd to add instead of one per coefficient, the tutorial's one (terms, 1)
            # weight, a column already (no view for autograd to go back through).
            flat = lent_column(coefficients)
            column = flat if flat is not None else torch.stack(coefficients).view(-1, 1)
            predictions = torch.mm(design, column)
        else:
            predictions = self.matmul_over_jobs(design, coefficients)
        if features.dim() == 2 and features.shape[1] == 1:  # (rows, 1): predictions are (..., rows, 1)
            return predictions
        return predictions.view(predictions.shape[:-2] + features.shape)  # a 0-dim x gives a 0-dim y

    def matmul_over_jobs(self, design: torch.Tensor, coefficients: list[torch.Tensor]) -> torch.Tensor:
        """Each job's ``design @ column`` for coefficients of shape (N, 1, ...): one batched product
        (N, rows, terms) @ (N, terms, 1). On the CPU it rounds as the job's own ``mm`` does (a
        product this small is a plain loop per job in both; a larger one is torch's ``mm`` per
        job), so the jobs' results are bit for bit their own runs'. That rests on torch's kernels,
        not on a promise, so it is checked once per shape, gradients included: a difference makes
        the batch fail (ValueError), and the launcher then runs the jobs one by one. Not on a GPU,
        where batched kernels round differently from one job's whatever the model (README)."""
        jobs = coefficients[0].shape[0]
        columns = torch.cat([c.reshape(jobs, 1) for c in coefficients], dim=1).unsqueeze(-1)
        key = (tuple(design.shape), jobs, design.dtype, design.device)
        if design.device.type == "cpu" and key not in self._checked_over_jobs:
            check_matmul_over_jobs(design, jobs)
            self._checked_over_jobs.add(key)
        return torch.bmm(design.expand(jobs, *design.shape), columns)

    def design_of(self, features: torch.Tensor) -> torch.Tensor:
        """The columns x**power in term order, kept like :meth:`powers_of`: the tutorial builds
        them once, before its loop. x**0 is a column of ones and x**1 is x, exactly."""
        cached = self._design
        if cached is not None and cached[0] is features and cached[1] == features._version:
            return cached[2]
        x = features.reshape(-1, 1)
        design = torch.cat([torch.ones_like(x) if power == 0 else x if power == 1 else x**power
                            for power in self.powers], dim=1)
        if type(features) is torch.Tensor and not features.requires_grad and not features.is_inference():
            self._design = (features, features._version, design)
        return design

    def design_matrix(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Linear in its coefficients: each one's column is x**power (framework.least_squares)."""
        return {name: features**power for name, power in zip(self.names, self.powers)}

    def extra_repr(self) -> str:
        terms = " + ".join(f"{n}*x**{p}" if p else n for n, p in zip(self.names, self.powers))
        return terms if self.form == "terms" else f"{terms} (as one matmul)"


def check_matmul_over_jobs(design: torch.Tensor, jobs: int) -> None:
    """ValueError unless the batched product and its gradient give each job, bit for bit, what
    ``mm`` gives it alone (at random coefficients and output gradients of the real shapes)."""
    generator = torch.Generator(device=design.device).manual_seed(0)
    columns = torch.randn(jobs, design.shape[1], 1, generator=generator, dtype=design.dtype,
                          device=design.device, requires_grad=True)
    upstream = torch.randn(jobs, design.shape[0], 1, generator=generator, dtype=design.dtype, device=design.device)
    with torch.enable_grad():
        batched = torch.bmm(design.detach().expand(jobs, *design.shape), columns)
        backward_with(batched, upstream)
        for job in range(jobs):
            column = columns[job].detach().clone().requires_grad_(True)
            alone = torch.mm(design.detach(), column)
            backward_with(alone, upstream[job])
            if not (torch.equal(alone, batched[job]) and torch.equal(column.grad, columns.grad[job])):
                raise ValueError(
                    f"model.form=matmul: torch's batched product rounds job {job} of {jobs} differently "
                    f"from its own product on {design.device.type} ({tuple(design.shape)} design, "
                    f"{str(design.dtype).removeprefix('torch.')}), so batched jobs would not be their own runs")


def build_polynomial(config: PolynomialConfig, *, data) -> Polynomial:
    if data.features.shape[1] != 1:
        raise ConfigError(
            f"model=polynomial fits one input column, but the data have {data.features.shape[1]}; "
            "use model=linear for several"
        )
    if config.order not in ORDERS:
        raise ConfigError(f"model.order={config.order!r}; use one of {', '.join(ORDERS)}")
    if config.form not in FORMS:
        raise ConfigError(f"model.form={config.form!r}; use one of {', '.join(FORMS)}")
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
    return Polynomial(names, powers, config.init, config.form)


@hookimpl
def framework_components():
    return [
        Component("model", "polynomial", build_polynomial, PolynomialConfig,
                  help="one scalar parameter per coefficient of a polynomial in x"),
    ]
