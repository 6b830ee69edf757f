"""torch's optimizers for N jobs at once, each job with its own numbers (issue 12, point 3).

A sweep of jobs that differ only in numbers (learning rates, betas, ...) can train as one batched
computation: every parameter is stacked into one tensor of shape ``(N, *shape)``, job ``j`` owning
the slice ``[j]``. torch.optim cannot update such a stack: its hyperparameters are Python numbers,
one for all, and a tensor ``lr`` of shape (N,) is squeezed and then broadcast along the *last*
axis, silently wrong when a parameter's last dimension happens to be N.

The optimizers here take one option mapping per job, exactly what ``torch.optim.X(params,
**options)`` takes, and give job ``j``'s slice the very bits that ``torch.optim.X`` gives job
``j``'s parameters alone on the CPU. To get there they mirror torch 2.13's single-tensor code
(``_single_tensor_sgd``, ``_single_tensor_adam``, ...; on the CPU torch's default picks neither
foreach nor fused) line by line:

- a per-job number is a tensor of shape (N, 1, ..., 1) (broadcast along the job axis, never the
  last one) of the parameter's dtype, made from the very Python float torch computes, since torch
  casts its Python scalars to the tensor's dtype the same way;
- every expression torch evaluates in Python floats (bias corrections, NAdam's momentum cache,
  Adagrad's decayed rate) is evaluated here in Python floats too, from the step counter's value:
  ``pow`` in a tensor kernel may round differently from the C library's. When the jobs share the
  step and the options under a ``pow`` (the usual learning-rate sweep), that is done once, and
  ``lr`` enters as a float64 tensor: float64 kernels add, subtract, multiply and divide with the
  IEEE rounding of Python floats, one operation at a time. Otherwise it is done job by job;
- an operation with a Python scalar is replaced by the operation with a per-job tensor that rounds
  the same way. torch's CPU kernels (built with FMA contraction) compute
  ``a.add(b, alpha=s)`` as one fused multiply-add ``fma(b, s, a)``, which ``a.addcmul(b, s_t)``
  also is, and ``a.addcmul(b, c, value=s)`` as ``fma(s*b, c, a)``, which is
  ``a.addcmul(s_t*b, c)``; ``a.addcdiv(b, c, value=s)`` rounds ``(s*b)/c`` and then the sum, which
  is ``a.add((s_t*b)/c)``. ``tests/plugins/test_batched_optimizers.py`` holds the proof;
- step counters (and NAdam's ``mu_product``) are tensors of shape (N,) in torch's dtype for them:
  float32 unless the default dtype is float64 when the state is created;
- a branch torch takes on a number (``weight_decay != 0``, ``momentum != 0``) runs for the jobs
  that take it and is masked out for the others, so a job with no weight decay gets exactly
  nothing added, not ``0 * param``.

Flags that choose which lines run (``nesterov``, ``amsgrad``, ``centered``, ``maximize``, ...) must
be equal across the jobs of one batch. ``foreach``, ``fused``, ``capturable`` and
``differentiable`` are refused: those are other code paths. The update of each element depends on
that element alone, so the stacked tensors may be the model's parameters or one flat tensor
holding them all (``framework/flat_parameters.py``): the bits are the same.

The equalities above are facts about torch's CPU kernels as built (checked on torch 2.13's x86
wheel, AVX2 kernels, 1 and 2 threads); the tests check them wherever they run. On a GPU torch's
default is its foreach code, which is not mirrored here: there the batched jobs run, but no
bitwise claim is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.optim.optimizer import _get_scalar_dtype

# The options that may differ from job to job: numbers that enter the arithmetic. Every other
# option is a flag that decides which lines run and must be equal across the batch.
PER_JOB_OPTIONS = frozenset({
    "lr", "betas", "eps", "weight_decay", "momentum", "dampening", "alpha", "momentum_decay",
    "lr_decay", "initial_accumulator_value",
})

# Other code paths than the single-tensor one that is mirrored here.
REFUSED_FLAGS = ("foreach", "fused", "capturable", "differentiable")

# State entries that hold one number per job (shape (N,)); the others are shaped like the stack.
PER_JOB_SCALAR_STATE = frozenset({"step", "mu_product"})


def _all_equal(values: list[float]) -> bool:
    return values.count(values[0]) == len(values)


def _job_options(torch_class: type[torch.optim.Optimizer], options: Mapping[str, Any]) -> dict[str, Any]:
    """One job's options completed with torch's defaults and checked by torch's own constructor."""
    for name, value in options.items():
        if isinstance(value, torch.Tensor) or (isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value)):
            raise ValueError(f"{torch_class.__name__} option {name!r}: give a number per job, not a tensor")
    stand_in = torch.nn.Parameter(torch.zeros(1))
    group = torch_class([stand_in], **options).param_groups[0]
    return {name: value for name, value in group.items() if name != "params"}


class BatchedOptimizer:
    """N jobs' copies of one torch optimizer over stacked parameters of shape (N, *shape)."""

    torch_class: type[torch.optim.Optimizer]
    # State entries that exist for a job only when its option is non-zero: {entry: option}.
    state_needs_option: dict[str, str] = {}

    def __init__(self, params: Iterable[torch.Tensor], job_options: Sequence[Mapping[str, Any]]) -> None:
        self.params = list(params)
        self.n_jobs = len(job_options)
        if self.n_jobs == 0 or not self.params:
            raise ValueError(f"Batched{self.torch_class.__name__} needs at least one job and one parameter")
        for index, param in enumerate(self.params):
            if param.dim() == 0 or param.shape[0] != self.n_jobs:
                raise ValueError(f"parameter {index} has shape {tuple(param.shape)}: the first axis must be "
                                 f"the job axis, of length {self.n_jobs}")
            if not torch.is_floating_point(param):
                raise ValueError(f"parameter {index} is {param.dtype}: only real floating-point parameters are batched")
        self._set_jobs([_job_options(self.torch_class, options) for options in job_options])
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _set_jobs(self, groups: list[dict[str, Any]]) -> None:
        """Every job's options (torch's param group, less ``params``), checked and read into columns."""
        self.flags = self._common_flags(groups)
        self.job_groups = groups
        # Columns are read at every step: made once here, not from the groups each time.
        self.columns: dict[str, list[float]] = {}
        for name in groups[0]:
            if name == "betas":
                self.columns["beta1"] = [group["betas"][0] for group in groups]
                self.columns["beta2"] = [group["betas"][1] for group in groups]
            elif name in PER_JOB_OPTIONS:
                self.columns[name] = [group[name] for group in groups]
        self._nonzero = {name: (any(v != 0 for v in values), all(v != 0 for v in values))
                         for name, values in self.columns.items()}
        self._shared = {name: values.count(values[0]) == len(values) for name, values in self.columns.items()}
        self._along_jobs_cache: dict[tuple, torch.Tensor] = {}

    def _common_flags(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        flags = {name: value for name, value in groups[0].items() if name not in PER_JOB_OPTIONS}
        for job, group in enumerate(groups):
            for name, value in flags.items():
                if group[name] != value:
                    raise ValueError(
                        f"job {job} has {name}={group[name]!r} but job 0 has {name}={value!r}: only the numeric "
                        f"options ({', '.join(sorted(PER_JOB_OPTIONS))}) may differ within one batch")
        for name in REFUSED_FLAGS:
            if flags.get(name):
                raise ValueError(f"{self.torch_class.__name__} with {name}=True is not batched: only torch's "
                                 f"single-tensor code path is mirrored")
        return flags

    def set_job_options(self, name: str, values: Sequence[Any]) -> None:
        """Give each job a new value of one numeric option, as ``group[name] = value`` does in torch
        (a learning-rate schedule, job by job); the next step uses them."""
        if name not in PER_JOB_OPTIONS or name not in self.job_groups[0]:
            raise ValueError(f"{name!r} is not a numeric option of {self.torch_class.__name__}")
        if len(values) != self.n_jobs:
            raise ValueError(f"{len(values)} values of {name!r} for {self.n_jobs} jobs")
        self._set_jobs([{**group, name: value} for group, value in zip(self.job_groups, values)])

    # -- per-job numbers ---------------------------------------------------------------------

    def column(self, name: str) -> list[float]:
        """Every job's value of one option (``beta1`` and ``beta2`` name the two ``betas``)."""
        return self.columns[name]

    def shared(self, *names: str) -> bool:
        """Whether every job has the same value of each option named."""
        return all(self._shared[name] for name in names)

    def float64_column(self, name: str) -> torch.Tensor:
        """One option's values as a float64 tensor of shape (N,), on the CPU.

        For arithmetic that torch does in Python floats: float64 tensor kernels add, subtract,
        multiply and divide with the same IEEE rounding (one operation at a time), so a Python
        expression of per-job numbers can run as tensor operations, in the same order, for all
        jobs at once. ``pow`` is not among them: it stays in Python.
        """
        key = (name, "float64")
        tensor = self._along_jobs_cache.get(key)
        if tensor is None:
            tensor = self._along_jobs_cache[key] = torch.tensor(self.columns[name], dtype=torch.float64)
        return tensor

    def along_jobs_of(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A (N,) tensor of per-job numbers, cast to ``like``'s dtype and shaped to broadcast along its job axis."""
        return values.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))

    def along_jobs(self, values: Sequence[float], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``values`` (one Python number per job) as a tensor that broadcasts along ``like``'s job axis.

        The tensor has ``like``'s dtype: torch casts a Python scalar operand to the tensor's dtype
        before the arithmetic, and so does this (the same round-to-nearest of each double).
        """
        return torch.tensor(values, dtype=dtype or like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))

    def _fixed_along_jobs(self, key: str, values: Callable[[], Sequence[float]], like: torch.Tensor,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
        """:meth:`along_jobs` for numbers that do not change between steps, made once per dtype and shape."""
        cache_key = (key, dtype or like.dtype, like.device, like.dim())
        tensor = self._along_jobs_cache.get(cache_key)
        if tensor is None:
            tensor = self._along_jobs_cache[cache_key] = self.along_jobs(values(), like, dtype)
        return tensor

    def _branch(self, option: str, taken: torch.Tensor, not_taken: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``taken`` for the jobs that take torch's ``if option != 0`` branch, ``not_taken`` for the others."""
        if self._nonzero[option][1]:
            return taken
        takes = self._fixed_along_jobs(f"{option} != 0", lambda: [v != 0 for v in self.columns[option]], like, torch.bool)
        return torch.where(takes, taken, not_taken)

    def any_nonzero(self, option: str) -> bool:
        """Whether some job takes torch's ``if option != 0`` branch."""
        return self._nonzero[option][0]

    def _scalar_state(self, value: float) -> torch.Tensor:
        """A per-job counter, in the dtype torch gives its 0-dim counters (see ``_get_scalar_dtype``)."""
        return torch.full((self.n_jobs,), value, dtype=_get_scalar_dtype())

    def _grad(self, param: torch.Tensor) -> torch.Tensor:
        return param.grad if not self.flags["maximize"] else -param.grad

    def _with_weight_decay(self, grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """torch's ``grad = grad.add(param, alpha=weight_decay)`` where ``weight_decay != 0``."""
        if not self.any_nonzero("weight_decay"):
            return grad
        decay = self._fixed_along_jobs("weight_decay", lambda: self.column("weight_decay"), param)
        return self._branch("weight_decay", torch.addcmul(grad, param, decay), grad, param)

    # -- the update ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every job, like ``torch.optim.X.step`` for each job alone."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for param in self.params:
            if param.grad is None:
                continue
            state = self.state.get(param)
            if state is None:
                state = self.state[param] = self._initial_state(param)
            self._update(param, self._grad(param), state)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_()
                param.grad.requires_grad_(False)
                param.grad.zero_()

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole batch: every job's options, and the stacked state per parameter index."""
        return {
            "jobs": [dict(group) for group in self.job_groups],
            "state": {index: {name: value.clone() for name, value in self.state[param].items()}
                      for index, param in enumerate(self.params) if param in self.state},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """The inverse of :meth:`state_dict`, for the same number of jobs and the same parameter shapes."""
        groups = [dict(group) for group in state_dict["jobs"]]
        if len(groups) != self.n_jobs:
            raise ValueError(f"the state dict holds {len(groups)} jobs, this optimizer {self.n_jobs}")
        self._set_jobs(groups)
        self.state = {}
        for index, entries in state_dict["state"].items():
            param = self.params[int(index)]
            self.state[param] = {name: self._checked_entry(name, value, param) for name, value in entries.items()}

    def _checked_entry(self, name: str, value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """A copy of one loaded state entry, placed as torch's ``load_state_dict`` places it.

        Counters keep their dtype and stay on the CPU; the rest takes the parameter's dtype and
        device (torch's ``_process_value_according_to_param_policy`` without capturable or fused).
        """
        expected = (self.n_jobs,) if name in PER_JOB_SCALAR_STATE else tuple(param.shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"state entry {name!r} has shape {tuple(value.shape)}, expected {expected}")
        if name in PER_JOB_SCALAR_STATE:
            return value.to(device="cpu", copy=True)
        return value.to(dtype=param.dtype, device=param.device, copy=True)

    def _job_keeps(self, job: int, name: str, groups: list[dict[str, Any]] | None = None) -> bool:
        """Whether torch keeps state entry ``name`` for this job (no momentum buffer when momentum is 0)."""
        option = self.state_needs_option.get(name)
        return option is None or (groups or self.job_groups)[job][option] != 0

    def job_state_dict(self, job: int) -> dict[str, Any]:
        """Job ``job``'s state in the format of ``torch.optim.X.state_dict()`` over its own parameters.

        The parameters are numbered 0, 1, ... in the order of the stack, each being the slice
        ``param[job]``; load it into ``torch.optim.X([p[job] for p in params], **options)``.
        """
        group = dict(self.job_groups[job])
        group["params"] = list(range(len(self.params)))
        state = {}
        for index, param in enumerate(self.params):
            if param not in self.state:
                continue
            entries = {name: value[job].clone() for name, value in self.state[param].items()
                       if self._job_keeps(job, name)}
            if entries:
                state[index] = entries
        return {"state": state, "param_groups": [group]}

    def load_job_state_dicts(self, job_state_dicts: Sequence[Mapping[str, Any]]) -> None:
        """Every job's state from a torch ``state_dict()`` each (the inverse of :meth:`job_state_dict`).

        The jobs' options come from the state dicts, as ``torch.optim.X.load_state_dict`` takes
        them; a parameter's state must be there for every job or for none.
        """
        if len(job_state_dicts) != self.n_jobs:
            raise ValueError(f"{len(job_state_dicts)} state dicts for {self.n_jobs} jobs")
        groups = []
        for job, job_state in enumerate(job_state_dicts):
            if len(job_state["param_groups"]) != 1:
                raise ValueError(f"job {job}'s state dict has {len(job_state['param_groups'])} parameter groups, not 1")
            group = {name: value for name, value in job_state["param_groups"][0].items()
                     if name not in ("params", "param_names")}
            groups.append(group)
        self._common_flags(groups)  # refused before any state is touched
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for index, param in enumerate(self.params):
            per_job = [job_state["state"].get(index, {}) for job_state in job_state_dicts]
            names = list(dict.fromkeys(name for entries in per_job for name in entries))
            if not names:
                continue
            stacked = {}
            for name in names:
                present = next(entries[name] for entries in per_job if name in entries)
                values = []
                for job, entries in enumerate(per_job):
                    if name in entries:
                        values.append(torch.as_tensor(entries[name]))
                    elif not self._job_keeps(job, name, groups):
                        # torch keeps no such entry for this job (its option is 0): the batch's is unused
                        values.append(torch.zeros_like(present))
                    else:
                        raise ValueError(f"job {job}'s state dict has no {name!r} for parameter {index}, "
                                         f"which other jobs have")
                stacked[name] = self._checked_entry(name, torch.stack(values), param)
            state[param] = stacked
        self._set_jobs(groups)
        self.state = state


class BatchedSGD(BatchedOptimizer):
    """``torch.optim.SGD`` (``_single_tensor_sgd``) per job."""

    torch_class = torch.optim.SGD
    state_needs_option = {"momentum_buffer": "momentum"}

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        grad = self._with_weight_decay(grad, param)

        if self.any_nonzero("momentum"):
            momentum = self._fixed_along_jobs("momentum", lambda: self.column("momentum"), param)
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = grad.detach().clone()
                state["momentum_buffer"] = buf
            else:
                # buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                keep = self._fixed_along_jobs("1 - dampening", lambda: [1 - d for d in self.column("dampening")], param)
                buf.mul_(momentum).addcmul_(grad, keep)
            if self.flags["nesterov"]:
                moved = torch.addcmul(grad, buf, momentum)  # grad.add(buf, alpha=momentum)
            else:
                moved = buf
            grad = self._branch("momentum", moved, grad, param)

        # param.add_(grad, alpha=-lr)
        param.addcmul_(grad, self._fixed_along_jobs("-lr", lambda: [-lr for lr in self.column("lr")], param))


class BatchedAdam(BatchedOptimizer):
    """``torch.optim.Adam`` (``_single_tensor_adam``) per job; AdamW is it with decoupled weight decay."""

    torch_class = torch.optim.Adam

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = {
            "step": self._scalar_state(0.0),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if self.flags["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_t += 1

        if self.any_nonzero("weight_decay"):
            if self.flags["decoupled_weight_decay"]:
                # param.mul_(1 - lr * weight_decay); for weight_decay == 0 a multiplication by 1 is exact
                param.mul_(self._fixed_along_jobs("1 - lr * weight_decay", lambda: [
                    1 - lr * wd for lr, wd in zip(self.column("lr"), self.column("weight_decay"))], param))
            else:
                grad = self._with_weight_decay(grad, param)

        fixed = self._fixed_along_jobs
        exp_avg.lerp_(grad, fixed("1 - beta1", lambda: [1 - b for b in self.column("beta1")], param))
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq.mul_(fixed("beta2", lambda: self.column("beta2"), param)).addcmul_(
            fixed("1 - beta2", lambda: [1 - b for b in self.column("beta2")], param) * grad, grad)

        steps = step_t.tolist()
        if _all_equal(steps) and self.shared("beta1", "beta2"):
            # torch's Python lines once, for all jobs; lr is a float64 tensor (see float64_column)
            step, beta1, beta2 = steps[0], self.columns["beta1"][0], self.columns["beta2"][0]
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = self.float64_column("lr") / bias_correction1
            bias_correction2_sqrt: float | torch.Tensor = bias_correction2**0.5
            negative_step_size = self.along_jobs_of(step_size.neg(), param)
        else:  # the same lines job by job
            negative_step_sizes, bias_corrections2_sqrt = [], []
            for step, lr, beta1, beta2 in zip(steps, self.columns["lr"], self.columns["beta1"], self.columns["beta2"]):
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5
                negative_step_sizes.append(-step_size)
                bias_corrections2_sqrt.append(bias_correction2_sqrt)
            negative_step_size = self.along_jobs(negative_step_sizes, param)
            bias_correction2_sqrt = self.along_jobs(bias_corrections2_sqrt, param)

        if self.flags["amsgrad"]:
            max_exp_avg_sq = state["max_exp_avg_sq"]
            torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq
        else:
            second_moment = exp_avg_sq
        denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(fixed("eps", lambda: self.column("eps"), param))
        # param.addcdiv_(exp_avg, denom, value=-step_size)
        param.add_((negative_step_size * exp_avg) / denom)


class BatchedAdamW(BatchedAdam):
    """``torch.optim.AdamW``: in torch 2.13 it is Adam with ``decoupled_weight_decay=True``."""

    torch_class = torch.optim.AdamW


class BatchedNAdam(BatchedOptimizer):
    """``torch.optim.NAdam`` (``_single_tensor_nadam``) per job, with its ``mu_product`` per job."""

    torch_class = torch.optim.NAdam

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "step": self._scalar_state(0.0),
            "mu_product": self._scalar_state(1.0),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        exp_avg, exp_avg_sq, mu_product, step_t = state["exp_avg"], state["exp_avg_sq"], state["mu_product"], state["step"]
        fixed = self._fixed_along_jobs
        step_t += 1
        steps = step_t.tolist()
        # torch's Python lines once for all jobs when they can be (lr a float64 tensor), else job by job
        together = _all_equal(steps) and self.shared("beta1", "beta2", "momentum_decay")

        if together:
            step, beta1, beta2, momentum_decay = (
                steps[0], self.columns["beta1"][0], self.columns["beta2"][0], self.columns["momentum_decay"][0])
            bias_correction2: float | torch.Tensor = 1 - beta2**step
        else:
            bias_correction2 = self.along_jobs(
                [1 - beta2**step for step, beta2 in zip(steps, self.columns["beta2"])], param)

        if self.any_nonzero("weight_decay"):
            if self.flags["decoupled_weight_decay"]:
                param.mul_(fixed("1 - lr * weight_decay", lambda: [
                    1 - lr * wd for lr, wd in zip(self.column("lr"), self.column("weight_decay"))], param))
            else:
                grad = self._with_weight_decay(grad, param)

        # calculate the momentum cache mu^{t} and mu^{t+1}, and update mu_product
        if together:
            mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
            mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
            mu_product *= mu
        else:
            mus, mu_nexts = [], []
            for step, beta1, momentum_decay in zip(steps, self.columns["beta1"], self.columns["momentum_decay"]):
                mus.append(beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay))))
                mu_nexts.append(beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay))))
            mu_product.mul_(torch.tensor(mus, dtype=mu_product.dtype))

        exp_avg.lerp_(grad, fixed("1 - beta1", lambda: [1 - b for b in self.column("beta1")], param))
        exp_avg_sq.mul_(fixed("beta2", lambda: self.column("beta2"), param)).addcmul_(
            fixed("1 - beta2", lambda: [1 - b for b in self.column("beta2")], param) * grad, grad)
        denom = exp_avg_sq.div(bias_correction2).sqrt()

        if together:
            lr = self.float64_column("lr")
            mu_product_value = mu_product.to(torch.float64)  # exact, as _get_value's Python float is
            mu_product_next = mu_product_value * mu_next
            grad_value = self.along_jobs_of(-lr * (1.0 - mu) / (1.0 - mu_product_value), param)
            exp_avg_value = self.along_jobs_of((-lr * mu_next) / (1.0 - mu_product_next), param)
        else:
            grad_values, exp_avg_values = [], []
            for lr, mu, mu_next, mu_product_value in zip(self.columns["lr"], mus, mu_nexts, mu_product.tolist()):
                mu_product_next = mu_product_value * mu_next
                grad_values.append(-lr * (1.0 - mu) / (1.0 - mu_product_value))
                exp_avg_values.append((-lr * mu_next) / (1.0 - mu_product_next))
            grad_value, exp_avg_value = self.along_jobs(grad_values, param), self.along_jobs(exp_avg_values, param)
        denom.add_(fixed("eps", lambda: self.column("eps"), param))
        # param.addcdiv_(grad, denom, value=...); param.addcdiv_(exp_avg, denom, value=...)
        param.add_((grad_value * grad) / denom)
        param.add_((exp_avg_value * exp_avg) / denom)


class BatchedRMSprop(BatchedOptimizer):
    """``torch.optim.RMSprop`` (``_single_tensor_rmsprop``) per job."""

    torch_class = torch.optim.RMSprop
    state_needs_option = {"momentum_buffer": "momentum"}

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = {
            "step": self._scalar_state(0.0),
            "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if any(m > 0 for m in self.column("momentum")):
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if self.flags["centered"]:
            state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        fixed = self._fixed_along_jobs
        square_avg = state["square_avg"]
        state["step"] += 1
        grad = self._with_weight_decay(grad, param)

        one_minus_alpha = fixed("1 - alpha", lambda: [1 - a for a in self.column("alpha")], param)
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        square_avg.mul_(fixed("alpha", lambda: self.column("alpha"), param)).addcmul_(one_minus_alpha * grad, grad)

        if self.flags["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, one_minus_alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(fixed("eps", lambda: self.column("eps"), param))

        negative_lr = fixed("-lr", lambda: [-lr for lr in self.column("lr")], param)
        momenta = self.column("momentum")
        if not any(m > 0 for m in momenta):
            param.add_((negative_lr * grad) / avg)  # param.addcdiv_(grad, avg, value=-lr)
            return
        buf = state["momentum_buffer"]
        # buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
        buf.mul_(fixed("momentum", lambda: momenta, param)).add_(grad / avg)
        if all(m > 0 for m in momenta):
            param.addcmul_(buf, negative_lr)
        else:  # (torch validates momentum >= 0, so its ``momentum > 0`` is ``momentum != 0``)
            param.copy_(self._branch("momentum", torch.addcmul(param, buf, negative_lr),
                                     param + (negative_lr * grad) / avg, param))


class BatchedAdagrad(BatchedOptimizer):
    """``torch.optim.Adagrad`` (``_single_tensor_adagrad``, dense gradients) per job."""

    torch_class = torch.optim.Adagrad

    def __init__(self, params: Iterable[torch.Tensor], job_options: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, job_options)
        # torch.optim.Adagrad creates its state in its constructor, not at the first step.
        for param in self.params:
            self.state[param] = self._initial_state(param)

    def _initial_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        initial = self.along_jobs(self.column("initial_accumulator_value"), param)
        return {"step": self._scalar_state(0.0), "sum": initial.expand_as(param).clone(memory_format=torch.preserve_format)}

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        if grad.is_sparse:
            raise ValueError("BatchedAdagrad takes dense gradients only")
        state_sum, step_t = state["sum"], state["step"]
        step_t += 1
        grad = self._with_weight_decay(grad, param)
        steps = step_t.tolist()
        if _all_equal(steps) and self.shared("lr_decay"):
            clr = self.float64_column("lr") / (1 + (steps[0] - 1) * self.columns["lr_decay"][0])
            negative_clr = self.along_jobs_of(clr.neg(), param)
        else:
            negative_clr = self.along_jobs([-(lr / (1 + (step - 1) * lr_decay)) for step, lr, lr_decay
                                            in zip(steps, self.columns["lr"], self.columns["lr_decay"])], param)
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(self._fixed_along_jobs("eps", lambda: self.column("eps"), param))
        # param.addcdiv_(grad, std, value=-clr)
        param.add_((negative_clr * grad) / std)


# torch's optimizer class -> its batched version. Exact types: a subclass may change the update.
BATCHED_OPTIMIZERS: dict[type[torch.optim.Optimizer], type[BatchedOptimizer]] = {
    torch.optim.SGD: BatchedSGD,
    torch.optim.Adam: BatchedAdam,
    torch.optim.AdamW: BatchedAdamW,
    torch.optim.NAdam: BatchedNAdam,
    torch.optim.RMSprop: BatchedRMSprop,
    torch.optim.Adagrad: BatchedAdagrad,
}


def batched_optimizer(torch_class: type[torch.optim.Optimizer], params: Iterable[torch.Tensor],
                      job_options: Sequence[Mapping[str, Any]]) -> BatchedOptimizer:
    """The batched version of ``torch_class``; ValueError naming the class when there is none."""
    batched = BATCHED_OPTIMIZERS.get(torch_class)
    if batched is None:
        raise ValueError(f"{torch_class.__name__} has no batched version; batched: "
                         f"{', '.join(c.__name__ for c in BATCHED_OPTIMIZERS)}")
    return batched(params, job_options)
