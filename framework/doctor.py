"""The conditioning doctor: how hard the built problem is for its optimizer, before the first step.

For a least-squares problem (:mod:`framework.least_squares`) it reports the condition number of
the design matrix, and features whose scales differ by an order of magnitude or more (polyfit's
x² column against its constant). For SGD it computes the largest stable learning rate from L,
the largest eigenvalue of the loss's Hessian: exactly for a least-squares problem (the Hessian
is constant), and otherwise as a local estimate at the initial parameters from Hessian-vector
products. When ``optimizer.lr`` exceeds the bound it warns, with the bound and the remedies,
before the run diverges. Adaptive optimizers (Adam, NAdam, RMSprop, Adagrad) and LBFGS choose their own
step sizes: no bound is checked for them, but the condition number and scales still apply.

The bound, for the quadratic with Hessian eigenvalue L (plus weight decay wd, which adds wd to
every eigenvalue), is where SGD's iteration stops contracting along the top eigenvector:

- plain SGD: lr < 2/L;
- heavy-ball momentum β with dampening d (torch's SGD): lr < 2(1+β) / ((1−d) L);
- Nesterov momentum β: lr < 2(1+β) / ((1+2β) L).

It checks ``optimizer.lr``, the rate before any scheduler (a decaying schedule starts there).

``python -m framework.doctor +task=NAME ...`` prints the report alone (:mod:`framework.doctor_cli`);
in a run, the built-in ``doctor`` plugin logs it before the first step (``trainer.doctor``).
The doctor changes neither the parameters, nor their gradients, nor any random stream.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field

import torch

from framework.least_squares import SQUARED_LOSS_SCALES, LeastSquares, run_problem
from framework.state import BuiltRun
from framework.vector_products import grad_with

# Columns whose RMS differ by this factor or more are reported. Gradient descent's curvature along
# a column grows with the square of its scale, so 10× in scale is 100× in curvature: the step the
# large column allows crawls along the small one (polyfit: x² at RMS ~43 against the constant's 1).
SCALE_RATIO_REPORTED = 10.0

# Up to this many trainable numbers the local Hessian is built whole, one Hessian-vector product
# per parameter (exact at that point, and no random start); above it, power iteration.
WHOLE_HESSIAN_UP_TO = 32
# Each iteration costs about two backward passes over the full data; unconverged, the Rayleigh
# quotient is below L (a bound too lenient, never a false alarm), and the report says so.
POWER_ITERATIONS = 20
POWER_TOLERANCE = 1e-6  # relative change of the Rayleigh quotient between iterations
POWER_SEED = 0  # the start vector's own generator: the run's random streams stay untouched

REMEDY_STANDARDIZE = "data.standardize=true"
REMEDY_LBFGS = "optimizer=lbfgs"


@dataclass(frozen=True)
class StepRule:
    """SGD's stable learning-rate bound for one setting of momentum, Nesterov and weight decay."""

    name: str  # "plain SGD", "SGD with momentum 0.9", ...
    lr: float  # optimizer.lr, before any scheduler
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def bound(self, largest_eigenvalue: float) -> float:
        """The largest stable rate for a Hessian whose largest eigenvalue is ``largest_eigenvalue``."""
        curvature = largest_eigenvalue + self.weight_decay
        if curvature <= 0:
            return math.inf
        beta = self.momentum
        if self.nesterov:
            return 2 * (1 + beta) / ((1 + 2 * beta) * curvature)
        if self.dampening >= 1:  # the buffer forgets every gradient after the first step
            return math.inf
        return 2 * (1 + beta) / ((1 - self.dampening) * curvature)

    @property
    def formula(self) -> str:
        curvature = "(L + wd)" if self.weight_decay else "L"
        if self.nesterov:
            return f"2(1+β)/((1+2β){curvature})"
        if self.momentum:
            return f"2(1+β)/((1−d){curvature})" if self.dampening else f"2(1+β)/{curvature}"
        return f"2/{curvature}"


@dataclass
class Diagnosis:
    """What the doctor found, as numbers (None where it does not apply) and as report lines."""

    least_squares: bool = False
    condition_number: float | None = None
    feature_scales: dict[str, float] = field(default_factory=dict)  # column RMS by column label
    scale_ratio: float | None = None  # largest over smallest nonzero column RMS
    largest_eigenvalue: float | None = None  # L, of the loss's Hessian
    curvature: str | None = None  # "exact" (least squares) or "local" (at the initial parameters)
    converged: bool = True  # False: power iteration stopped short, L may be larger
    step_rule: StepRule | None = None  # None: not SGD, no bound applies
    lr_bound: float | None = None
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def lr_exceeds_bound(self) -> bool:
        return self.lr_bound is not None and self.step_rule is not None and self.step_rule.lr > self.lr_bound


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


def column_labels(problem: LeastSquares) -> list[str]:
    """One label per design-matrix column: the parameter's name, with the index for a tensor."""
    labels = []
    for name, shape in problem.blocks:
        if math.prod(shape) == 1:
            labels.append(name)
        else:
            for index in itertools.product(*(range(size) for size in shape)):
                labels.append(f"{name}[{','.join(map(str, index))}]")
    return labels


def column_scales(problem: LeastSquares) -> dict[str, float]:
    """The root mean square of each design-matrix column, by label."""
    rms = problem.design.pow(2).mean(dim=0).sqrt().tolist()
    return dict(zip(column_labels(problem), rms))


def step_rule(optimizer: torch.optim.Optimizer) -> StepRule | None:
    """SGD's settings, or None for an optimizer that picks its own step sizes (or several groups)."""
    if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if group.get("maximize"):
        return None
    lr = float(group.get("initial_lr", group["lr"]))  # a scheduler keeps optimizer.lr as initial_lr
    momentum, dampening = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
    nesterov, weight_decay = bool(group.get("nesterov")), float(group.get("weight_decay", 0.0))
    if nesterov and momentum:
        name = f"SGD with Nesterov momentum {momentum:g}"
    elif momentum:
        name = f"SGD with momentum {momentum:g}" + (f", dampening {dampening:g}" if dampening else "")
    else:
        name, nesterov, dampening = "plain SGD", False, 0.0
    if weight_decay:
        name += f", weight decay {weight_decay:g}"
    return StepRule(name, lr, momentum, dampening, nesterov, weight_decay)


@contextlib.contextmanager
def own_random_streams(device: torch.device):
    """Whatever runs inside (a model whose forward draws, e.g. dropout) leaves the run's streams as they were."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


class CurvatureUnavailable(Exception):
    """The loss's Hessian-vector products cannot be computed (e.g. a Function with no double backward)."""


def local_largest_eigenvalue(run: BuiltRun, *, whole_up_to: int = WHOLE_HESSIAN_UP_TO) -> tuple[float, bool]:
    """(L at the current parameters, whether it converged), from Hessian-vector products of the
    full-data loss: the whole Hessian up to ``whole_up_to`` parameters, else power iteration.

    Double backward (reverse over reverse) rather than torch.func: it works through any custom
    ``autograd.Function`` whose backward is made of differentiable operations, as the built-in
    P3 is, without the ``setup_context`` form torch.func transforms require. A backward that is
    not (``once_differentiable``, or one that detaches) gives second derivatives that are
    silently wrong, so the result is checked against finite differences of the gradient along
    the eigenvector found, and refused (CurvatureUnavailable) when the two disagree.
    """
    parameters = list(run.trainable.values())
    sizes = [parameter.numel() for parameter in parameters]

    def loss_at_parameters() -> torch.Tensor:
        return run.loss_fn(run.model(run.data.features), run.data.targets)

    try:
        with torch.enable_grad():
            gradient = flat_gradient(loss_at_parameters(), parameters, create_graph=True)
    except RuntimeError as error:
        raise CurvatureUnavailable(first_line(error)) from error

    def hessian_times(vector: torch.Tensor) -> torch.Tensor:
        if not gradient.requires_grad:  # no parameter reaches the gradient's graph
            return torch.zeros_like(vector)
        try:
            products = grad_with(gradient, parameters, vector, retain_graph=True, allow_unused=True)
        except RuntimeError as error:
            raise CurvatureUnavailable(first_line(error)) from error
        return torch.cat([torch.zeros(size, dtype=gradient.dtype, device=gradient.device) if product is None
                          else product.reshape(-1) for size, product in zip(sizes, products)]).detach()

    count = gradient.numel()
    if count <= whole_up_to:
        identity = torch.eye(count, dtype=gradient.dtype, device=gradient.device)
        hessian = torch.stack([hessian_times(identity[i]) for i in range(count)]).to("cpu", torch.float64)
        values, vectors = torch.linalg.eigh((hessian + hessian.T) / 2)
        largest, direction, converged = float(values[-1]), vectors[:, -1].to(gradient.device, gradient.dtype), True
    else:
        largest, direction, converged = power_iteration(hessian_times, count, gradient)
        if largest < 0:  # the largest in magnitude is negative: shifted by it, the largest dominates
            shifted, direction, converged = power_iteration(lambda v: hessian_times(v) - largest * v, count,
                                                            gradient)
            largest += shifted
    # The same quantity both ways: the curvature along the direction found.
    check_second_derivatives(loss_at_parameters, parameters, direction, float(direction @ hessian_times(direction)))
    return largest, converged


def flat_gradient(loss: torch.Tensor, parameters: list[torch.nn.Parameter], *, create_graph: bool = False) -> torch.Tensor:
    grads = torch.autograd.grad(loss, parameters, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(parameters, grads)])


# Double backward and finite differences of the gradient must agree on the curvature along the
# eigenvector to this relative precision (central differences in float32 are good to ~1e-3).
SECOND_DERIVATIVES_AGREE = 0.05


def check_second_derivatives(loss_at_parameters, parameters: list[torch.nn.Parameter], direction: torch.Tensor,
                             curvature: float) -> None:
    """Refuse a curvature that finite differences of the gradient along ``direction`` contradict.

    The parameters are moved to θ ± h·v and back: restored by copying the saved values, so they
    end bit-identical.
    """
    saved = [parameter.detach().clone() for parameter in parameters]
    pieces = direction.split([parameter.numel() for parameter in parameters])
    eps = torch.finfo(direction.dtype).eps
    # Central differences: truncation grows with h², rounding with eps/h; eps^(1/3) balances them.
    step = eps ** (1 / 3) * max(1.0, float(torch.cat([value.reshape(-1) for value in saved]).norm()))
    gradients = []
    try:
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for parameter, value, piece in zip(parameters, saved, pieces):
                    parameter.copy_(value + sign * step * piece.view_as(value))
            with torch.enable_grad():
                gradients.append(flat_gradient(loss_at_parameters(), parameters).detach())
    except RuntimeError as error:
        raise CurvatureUnavailable(first_line(error)) from error
    finally:
        with torch.no_grad():
            for parameter, value in zip(parameters, saved):
                parameter.copy_(value)
    differenced = float(direction @ (gradients[0] - gradients[1])) / (2 * step)
    rounding = 10 * eps * float(gradients[0].norm() + gradients[1].norm()) / (2 * step)
    if abs(differenced - curvature) > SECOND_DERIVATIVES_AGREE * max(abs(differenced), abs(curvature)) + rounding:
        raise CurvatureUnavailable(
            f"the loss's second derivatives by double backward ({curvature:.3g} along the top eigenvector) "
            f"disagree with finite differences of its gradient ({differenced:.3g}): a custom autograd.Function "
            "whose backward is not differentiable (once_differentiable, detached tensors), or a random forward "
            "(dropout)?")


def power_iteration(multiply, count: int, like: torch.Tensor) -> tuple[float, torch.Tensor, bool]:
    """(dominant eigenvalue, its unit eigenvector, converged) of a symmetric operator, from a fixed start."""
    generator = torch.Generator().manual_seed(POWER_SEED)
    vector = torch.randn(count, generator=generator, dtype=torch.float64).to(like.device, like.dtype)
    vector = vector / vector.norm()
    estimate = 0.0
    for _ in range(POWER_ITERATIONS):
        product = multiply(vector)
        previous, estimate = estimate, float(vector @ product)  # Rayleigh quotient
        norm = product.norm()
        if norm == 0:
            return 0.0, vector, True
        vector = product / norm
        if abs(estimate - previous) <= POWER_TOLERANCE * abs(estimate):
            return estimate, vector, True
    return estimate, vector, False


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def remedies(run: BuiltRun, bound: float) -> str:
    """What to change, in words a user types: a smaller rate, scaled features, or LBFGS."""
    options = [f"optimizer.lr below {bound:.3g}"]
    if not (run.config.get("data") or {}).get("standardize"):  # not already on (data.standardize)
        options.append(f"{REMEDY_STANDARDIZE} (scaled features: a better-conditioned problem, with its own bound)")
    options.append(f"{REMEDY_LBFGS} (no learning rate to choose)")
    return ", ".join(options[:-1]) + " or " + options[-1]


def bound_applies_per_batch(run: BuiltRun) -> bool:
    """The full-data bound holds for a step on a minibatch when the loss is a mean: a minibatch's
    Hessian then averages to the full one. A sum over a minibatch curves less than over all rows,
    so there the full-data bound is only a lower limit (reported, not warned about)."""
    full_batch = run.batch_size is None or run.batch_size >= len(run.data)
    return full_batch or SQUARED_LOSS_SCALES.get(run.components.get("loss", "")) != "sum"


# --------------------------------------------------------------------------------------------
# The diagnosis
# --------------------------------------------------------------------------------------------


def diagnose(run: BuiltRun, *, whole_hessian_up_to: int = WHOLE_HESSIAN_UP_TO) -> Diagnosis:
    """The doctor's report on a built run at its current parameters."""
    with own_random_streams(run.device):
        return _diagnose(run, whole_hessian_up_to)


def _diagnose(run: BuiltRun, whole_hessian_up_to: int) -> Diagnosis:
    found = Diagnosis(step_rule=step_rule(run.optimizer))
    problem = run_problem(run)
    model_name, loss_name = run.components.get("model", "?"), run.components.get("loss", "?")
    optimizer_name = run.components.get("optimizer", type(run.optimizer).__name__.lower())
    if problem is not None:
        describe_least_squares(found, problem, loss_name)
        if found.step_rule is None:
            found.lines.append(f"doctor: no learning-rate bound for {optimizer_name} "
                               "(it picks its own step sizes; the 2/L bound is SGD's)")
            return found
    elif found.step_rule is None:  # only SGD needs L: the others are spared the Hessian products
        found.lines.append(f"doctor: not a least-squares problem (model {model_name}, loss {loss_name}): "
                           f"nothing to check for {optimizer_name}")
        return found
    else:
        found.lines.append(f"doctor: not a least-squares problem (model {model_name}, loss {loss_name}): "
                           "L is estimated at the initial parameters")
        try:
            found.largest_eigenvalue, found.converged = local_largest_eigenvalue(run, whole_up_to=whole_hessian_up_to)
        except CurvatureUnavailable as error:
            found.lines.append(f"doctor: cannot estimate L for {found.step_rule.name}, so no learning-rate bound: "
                               f"{error}")
            return found
        found.curvature = "local"
    check_rate(found, run)
    return found


def describe_least_squares(found: Diagnosis, problem: LeastSquares, loss_name: str) -> None:
    """The exact L, the condition number and the feature scales of a least-squares problem."""
    found.least_squares = True
    found.condition_number = problem.condition_number()
    found.feature_scales = column_scales(problem)
    found.largest_eigenvalue, found.curvature = problem.largest_hessian_eigenvalue(), "exact"
    rows, columns = problem.design.shape
    # SGD's speed depends on the Hessian's condition number, the design matrix's squared.
    condition = ("inf (rank deficient: the optimum is not unique)" if math.isinf(found.condition_number)
                 else f"{found.condition_number:.3g} (the Hessian's: {found.condition_number ** 2:.3g})")
    found.lines.append(f"doctor: least squares ({loss_name}), {columns} parameters on {rows} rows: "
                       f"design-matrix condition number {condition}")
    scaled = sorted(((rms, label) for label, rms in found.feature_scales.items() if rms > 0), reverse=True)
    if not scaled:
        return
    (large_rms, large), (small_rms, small) = scaled[0], scaled[-1]
    found.scale_ratio = large_rms / small_rms
    if found.scale_ratio >= SCALE_RATIO_REPORTED:
        found.lines.append(f"doctor: feature scales differ by {found.scale_ratio:.3g}×: column RMS "
                           f"{large} {large_rms:.3g}, {small} {small_rms:.3g} ({REMEDY_STANDARDIZE} scales them)")


def check_rate(found: Diagnosis, run: BuiltRun) -> None:
    """SGD's bound from L, against optimizer.lr: a line when within it, a warning when above."""
    rule, L = found.step_rule, found.largest_eigenvalue
    bound = rule.bound(L)
    if math.isinf(bound):
        here = " here" if found.curvature == "local" else ""
        found.lines.append(f"doctor: the loss has no positive curvature{here} (L = {L:.3g}): "
                           f"no learning-rate bound for {rule.name}")
        return
    found.lr_bound = bound
    exact = found.curvature == "exact"
    per_batch = bound_applies_per_batch(run)
    if found.lr_exceeds_bound and per_batch:  # the warning says it all, with the remedies
        found.warnings.append(
            f"doctor: optimizer.lr = {rule.lr:.3g} exceeds the stable bound for {rule.name}, {rule.formula} = "
            f"{bound:.3g} (L = {L:.3g}, the largest eigenvalue of the loss's Hessian"
            f"{'' if exact else ' at the initial parameters'}): "
            f"{'the run will diverge' if exact else 'the run is likely to diverge'}. Use {remedies(run, bound)}."
        )
        return
    where = "exact" if exact else "local estimate at the initial parameters"
    if not found.converged:
        where += f"; power iteration unconverged after {POWER_ITERATIONS} steps, L may be larger"
    batch_note = "" if per_batch else " (full batch; a sum over minibatches curves less)"
    verdict = "exceeds it" if found.lr_exceeds_bound else "is within it"
    found.lines.append(f"doctor: {rule.name} is stable for lr < {rule.formula} = {bound:.3g}{batch_note} "
                       f"(L = {L:.3g}, {where}); optimizer.lr = {rule.lr:.3g} {verdict}")

if __name__ == "__main__":  # python -m framework.doctor +task=NAME ...
    import sys

    from framework.doctor_cli import main

    sys.exit(main())
