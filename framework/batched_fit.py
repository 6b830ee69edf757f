"""N built runs that differ only in numbers, trained as one batched computation (issue 12).

The jobs' runs are built one by one exactly as their own fits would build them (their own seed,
so their own initial values); here their parameters are stacked along a leading job axis, the
model runs once for all jobs (``torch.func.vmap`` over ``functional_call`` of the first job's
model), and one batched optimizer (``framework_plugins._batched_optimizers``) updates every job
with its own numbers.

Each job gets the bits its own run gets on the CPU, because every operation of its step is
mirrored:
- the per-job loss is the job's loss function under vmap, which reduces every dimension but the
  job dimension; backward runs on the **sum** of the per-job losses, so each job's loss receives
  the gradient 1, as a single run's ``loss.backward()`` gives it;
- gradients are zeroed as the job's own optimizer zeroes them: in place where the run's
  parameters are flattened (``framework/flat_parameters.py``: autograd then adds the new gradient
  to zeros), set to None otherwise;
- the batched optimizer mirrors torch's single-tensor update, job by job
  (``tests/framework/test_batched_fit.py`` compares with ``framework.train``).

A job stops alone: the first step whose loss is not finite is its last, as in its own run (the
update of that step included), and the others go on. What the run of each job records (its loss,
parameters and gradients after every step, its optimizer's state at its end) is kept in a
:class:`Trajectory`, which :mod:`framework.vectorized` replays through the job's own fit so that
the job's folder gets exactly what its own fit writes.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.func import functional_call, vmap

from framework.batches import next_batch
from framework.state import LoopState, Progress


@dataclass
class Trajectory:
    """One job's record of a batched fit: what its own steps would have given.

    ``losses[i]``, ``params[i]`` and ``grads[i]`` are the loss of step ``i + 1`` (computed before
    its update), the trainable parameters after its update (flat, in ``run.trainable`` order) and
    the gradients it used. ``steps`` is how many steps the job ran: the step limit, or the step
    whose loss was not finite. ``optimizer_state`` is the state dict of the job's own optimizer
    after its last step (None when the job failed: a failed run saves no checkpoint).
    """

    losses: list[torch.Tensor]
    params: torch.Tensor
    grads: torch.Tensor
    steps: int
    initial_params: torch.Tensor
    optimizer_state: dict[str, Any] | None = None
    batch_jobs: int = 1
    batch_wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def flat_trainable(state: LoopState) -> torch.Tensor:
    """The run's trainable parameters as one flat tensor, in ``run.trainable`` order (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in state.run.trainable.values()])


def is_flattened(state: LoopState) -> bool:
    """Whether the run's optimizer steps one flat tensor instead of the parameters themselves."""
    optimized = [p for group in state.run.optimizer.param_groups for p in group["params"]]
    trainable = list(state.run.trainable.values())
    return len(optimized) != len(trainable) or any(a is not b for a, b in zip(optimized, trainable))


def job_options(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The options of an optimizer's only parameter group that its constructor takes (AdamW's
    group holds ``decoupled_weight_decay``, which its constructor sets itself)."""
    accepted = inspect.signature(type(optimizer).__init__).parameters
    return {name: value for name, value in optimizer.param_groups[0].items()
            if name in accepted and name != "params"}


def torch_state_dict(state: LoopState, batched_state: dict[str, Any]) -> dict[str, Any]:
    """A batched optimizer's ``job_state_dict`` (one entry per trainable parameter) in the layout of
    the job's own optimizer: one flat tensor when its parameters are flattened."""
    optimizer = state.run.optimizer
    own = optimizer.state_dict()
    per_param = batched_state["state"]
    if not is_flattened(state):
        own["state"] = {index: {name: value.clone() for name, value in entries.items()}
                        for index, entries in per_param.items()}
        return own
    names = list(dict.fromkeys(name for entries in per_param.values() for name in entries))
    flat: dict[str, torch.Tensor] = {}
    for name in names:
        values = [per_param[index][name] for index in sorted(per_param)]
        if values[0].dim() == 0 and all(v.dim() == 0 for v in values) and name in ("step", "mu_product"):
            flat[name] = values[0].clone()  # every parameter takes every step: one counter
        else:
            flat[name] = torch.cat([v.reshape(-1) for v in values])
    own["state"] = {0: flat} if flat else {}
    return own


def batched_fit(states: list[LoopState], per_job: Callable | None = None) -> list[Trajectory]:
    """Train the jobs of ``states`` (built runs of one group) as one computation; one
    :class:`Trajectory` per job, in order. ValueError when they cannot be batched.

    ``per_job(predictions, targets)``: the run's loss for each job of predictions with a leading
    job axis (:func:`per_job_loss_function`); None: the run's loss function under vmap."""
    from framework_plugins._batched_optimizers import batched_optimizer  # the optimizers are plugins'

    import time

    started = time.perf_counter()
    first = states[0].run
    n_jobs = len(states)
    trainable_names = list(first.trainable)
    named = [dict(state.run.model.named_parameters()) for state in states]
    stacked: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in named[0]:
            stacked[name] = torch.stack([parameters[name].detach() for parameters in named])
    flattened = is_flattened(states[0])
    shapes = {name: tuple(stacked[name].shape[1:]) for name in trainable_names}
    if flattened:
        # One (N, P) leaf, as the run's one flat tensor: the parameters are views of it, and the
        # run's zero_grad zeroes its gradient in place, autograd adding to the zeros.
        with torch.no_grad():
            flat = torch.cat([stacked[name].reshape(n_jobs, -1) for name in trainable_names], dim=1)
        flat.requires_grad_(True)
        flat.grad = torch.zeros_like(flat)
        leaves = [flat]
        bounds, offset = {}, 0
        for name in trainable_names:
            size = math.prod(shapes[name])
            bounds[name] = (offset, offset + size)
            offset += size

        def parameters() -> dict[str, torch.Tensor]:
            current = dict(stacked)
            for name, (start, stop) in bounds.items():
                current[name] = flat[:, start:stop].view(n_jobs, *shapes[name])
            return current
    else:
        leaves = [stacked[name].requires_grad_(True) for name in trainable_names]

        def parameters() -> dict[str, torch.Tensor]:
            return stacked

    optimizer = batched_optimizer(type(first.optimizer), leaves, [job_options(s.run.optimizer) for s in states])
    per_job_loss, restore_model = per_job_loss_function(first, parameters, per_job)
    initial_params = [flat_trainable(state) for state in states]

    max_steps = first.max_steps
    sizes = [leaf[0].numel() for leaf in leaves]  # one leaf (flattened) or one per parameter
    width = sum(sizes)
    dtype, device = leaves[0].dtype, leaves[0].device
    params_log = torch.empty(max_steps, n_jobs, width, dtype=dtype, device=device)
    grads_log = torch.empty(max_steps, n_jobs, width, dtype=dtype, device=device)
    losses_log = torch.empty(max_steps, n_jobs, dtype=dtype, device=device)
    failed_at: list[int | None] = [None] * n_jobs  # the step whose loss was not finite
    running = n_jobs
    # The first job's progress hands out the batches: the jobs share data and batch order.
    progress = Progress(shuffle_generator=states[0].progress.shuffle_generator)
    full_batch = first.steps_per_epoch == 1
    features, targets = first.data.features, first.data.targets
    steps_done = 0
    with torch.enable_grad(), restored(restore_model):
        for step in range(max_steps):
            if not full_batch:
                features, targets = next_batch(first, progress)
            if flattened:
                for leaf in leaves:
                    leaf.grad.zero_()
            else:
                for leaf in leaves:
                    leaf.grad = None
            losses = per_job_loss(features, targets)
            losses.sum().backward()
            optimizer.step()
            steps_done = step + 1
            with torch.no_grad():
                losses_log[step].copy_(losses)
                offset = 0
                for leaf, size in zip(leaves, sizes):
                    params_log[step, :, offset:offset + size].copy_(leaf.reshape(n_jobs, -1))
                    if leaf.grad is not None:
                        grads_log[step, :, offset:offset + size].copy_(leaf.grad.reshape(n_jobs, -1))
                    else:
                        grads_log[step, :, offset:offset + size].zero_()
                    offset += size
            if not bool(torch.isfinite(losses).all()):
                for job, value in enumerate(losses.tolist()):
                    if failed_at[job] is None and not math.isfinite(value):
                        failed_at[job] = step + 1
                        running -= 1
                if running == 0:
                    break
    wall_s = time.perf_counter() - started
    trajectories = []
    for job, state in enumerate(states):
        steps = failed_at[job] or steps_done
        completed = failed_at[job] is None
        trajectories.append(Trajectory(
            losses=list(losses_log[:steps, job].unbind()),
            params=params_log[:steps, job],
            grads=grads_log[:steps, job],
            steps=steps,
            initial_params=initial_params[job],
            optimizer_state=torch_state_dict(state, optimizer.job_state_dict(job)) if completed else None,
            batch_jobs=n_jobs,
            batch_wall_s=wall_s,
        ))
    return trajectories



@contextlib.contextmanager
def restored(restore: Callable[[], None]):
    try:
        yield
    finally:
        restore()


# A model class attribute (like flat_parameters.DENSE_GRADIENTS): True when every parameter is a
# scalar that enters ``forward`` only through elementwise arithmetic with the features and with
# each other. Given its parameters with shape (N, 1, ..., 1) (one 1 per feature dimension), such a
# model's forward returns the N jobs' predictions along a new first axis, each one bit for bit
# what the job's own scalars give: elementwise operations round each element alone.
BROADCASTS_OVER_JOBS = "broadcasts_over_jobs"


def per_job_loss_function(run_state, parameters: Callable[[], dict[str, torch.Tensor]], per_job: Callable | None):
    """``(losses, restore)``: ``losses(features, targets)`` gives the (N,) per-job losses of the
    stacked parameters; ``restore()`` gives the model back its own parameters.

    The broadcast path (the model declares :data:`BROADCASTS_OVER_JOBS` and ``per_job`` is given)
    calls the first job's model with the stacked parameters in place of its own; otherwise the
    model runs under ``vmap`` over ``functional_call`` (any model vmap can trace; several times
    slower on small problems)."""
    model, loss_fn = run_state.model, run_state.loss_fn
    if per_job is not None and getattr(model, BROADCASTS_OVER_JOBS, False) and all(
            p.dim() == 0 for p in model.parameters()):
        owners = []
        for name, _ in model.named_parameters():
            module_name, _, attribute = name.rpartition(".")
            owners.append((name, model.get_submodule(module_name) if module_name else model, attribute))
        originals = [(module, attribute, module._parameters[attribute]) for _, module, attribute in owners]

        def restore() -> None:
            for module, attribute, original in originals:
                module._parameters[attribute] = original

        def losses(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            shape = (-1,) + (1,) * features.dim()
            current = parameters()
            for name, module, attribute in owners:
                # The model is the first job's build, lent to the batch: its parameters become
                # views of the stack (rebuilt every step, as the graph is), and are given back.
                module._parameters[attribute] = current[name].view(shape)
            predictions = model(features)
            if predictions.shape[1:] != targets.shape:
                predictions = predictions.expand(predictions.shape[0], *targets.shape)
            return per_job(predictions, targets)

        return losses, restore

    def one_job_loss(parameters: dict[str, torch.Tensor], features: torch.Tensor, targets: torch.Tensor):
        return loss_fn(functional_call(model, parameters, (features,)), targets)

    batched = vmap(one_job_loss, in_dims=(0, None, None))
    return (lambda features, targets: batched(parameters(), features, targets)), lambda: None
