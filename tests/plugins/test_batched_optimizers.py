"""The batched optimizers (framework_plugins._batched_optimizers) give each job exactly (bit for bit) the
parameters and optimizer state that torch.optim gives that job alone, on the CPU.

The reference is plain torch: one ``torch.optim.X(params, **options)`` per job, with whatever code
path torch picks by default, fed the same gradients as the job's slice of the stack.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import _default_to_fused_or_foreach

from framework_plugins._batched_optimizers import BATCHED_OPTIMIZERS, batched_optimizer

N = 5
STEPS = 50
LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
# Shapes of the jobs' parameters; the last one ends in N, where a (N,) hyperparameter broadcast
# along the last axis (what torch does to a squeezed tensor lr) would mix the jobs up.
SHAPES = ((), (3,), (2, N))


def jobs(**varied):
    """N option mappings: ``lr`` from LRS, each varied option's list read job by job, flags as given."""
    options = []
    for job in range(N):
        job_options = {"lr": LRS[job]}
        for name, value in varied.items():
            job_options[name] = value[job] if isinstance(value, list) else value
        options.append(job_options)
    return options


BETAS = [(0.9, 0.999), (0.8, 0.99), (0.95, 0.9999), (0.9, 0.999), (0.5, 0.9)]
EPS = [1e-8, 1e-6, 1e-8, 1e-3, 1e-10]
CASES = {
    "sgd": (torch.optim.SGD, jobs()),
    "sgd maximize": (torch.optim.SGD, jobs(maximize=True)),
    "sgd momentum": (torch.optim.SGD, jobs(momentum=[0.9, 0.8, 0.5, 0.95, 0.7])),
    "sgd momentum some zero": (torch.optim.SGD, jobs(momentum=[0.9, 0.0, 0.5, 0.0, 0.7])),
    "sgd nesterov": (torch.optim.SGD, jobs(momentum=[0.9, 0.8, 0.5, 0.95, 0.7], nesterov=True)),
    "sgd weight decay": (torch.optim.SGD, jobs(momentum=0.9, weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2])),
    "sgd dampening": (torch.optim.SGD, jobs(momentum=0.9, dampening=[0.1, 0.5, 0.0, 0.3, 0.9])),
    "adam": (torch.optim.Adam, jobs(betas=BETAS, eps=EPS)),
    "adam amsgrad": (torch.optim.Adam, jobs(betas=BETAS, amsgrad=True)),
    "adam weight decay": (torch.optim.Adam, jobs(weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2])),
    "adam maximize": (torch.optim.Adam, jobs(maximize=True)),
    "adam decoupled weight decay": (torch.optim.Adam, jobs(weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2],
                                                           decoupled_weight_decay=True)),
    "adamw": (torch.optim.AdamW, jobs(betas=BETAS, weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2])),
    "adamw amsgrad": (torch.optim.AdamW, jobs(amsgrad=True, eps=EPS)),
    "nadam": (torch.optim.NAdam, jobs(betas=BETAS, eps=EPS, momentum_decay=[4e-3, 1e-3, 1e-2, 4e-3, 0.0])),
    "nadam weight decay": (torch.optim.NAdam, jobs(weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2])),
    "nadam decoupled weight decay": (torch.optim.NAdam, jobs(weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2],
                                                             decoupled_weight_decay=True)),
    "rmsprop": (torch.optim.RMSprop, jobs(alpha=[0.99, 0.9, 0.5, 0.999, 0.99], eps=EPS)),
    "rmsprop centered": (torch.optim.RMSprop, jobs(alpha=[0.99, 0.9, 0.5, 0.999, 0.99], centered=True)),
    "rmsprop momentum": (torch.optim.RMSprop, jobs(momentum=[0.9, 0.0, 0.5, 0.95, 0.0])),
    "rmsprop centered momentum weight decay": (torch.optim.RMSprop, jobs(
        centered=True, momentum=[0.9, 0.8, 0.5, 0.95, 0.7], weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2])),
    "adagrad": (torch.optim.Adagrad, jobs(lr_decay=[0.0, 1e-3, 1e-2, 0.0, 0.1],
                                          initial_accumulator_value=[0.0, 0.1, 1.0, 0.0, 0.5], eps=EPS)),
    "adagrad weight decay maximize": (torch.optim.Adagrad, jobs(weight_decay=[0.0, 1e-2, 1e-1, 0.0, 5e-2],
                                                                maximize=True)),
}


@pytest.fixture(params=["float32", "float64", "float64 params, float32 default"])
def dtype(request):
    """The parameters' dtype, and the default dtype while the optimizers run: torch keeps its step
    counters and NAdam's mu_product in float64 only when the default is float64. The framework
    sets the default only while it builds the model, so its float64 runs step with float64
    parameters and float32 counters: the third case."""
    name = request.param.split()[0]
    default = torch.float32 if "float32 default" in request.param else getattr(torch, name)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    yield getattr(torch, name)
    torch.set_default_dtype(previous)


def initial_and_gradients(dtype, steps=STEPS, shapes=SHAPES, seed=0):
    """Stacked initial values (N, *shape) and, per step, stacked gradients, drawn once for both runs."""
    generator = torch.Generator().manual_seed(seed)
    initial = [torch.randn(N, *shape, generator=generator, dtype=dtype) for shape in shapes]
    gradients = [[torch.randn(N, *shape, generator=generator, dtype=dtype) for shape in shapes]
                 for _ in range(steps)]
    return initial, gradients


def bits(tensor):
    """The tensor's bits as integers: equal bits, not just equal values (-0.0 is not 0.0, NaN is NaN)."""
    integer = {torch.float32: torch.int32, torch.float64: torch.int64}[tensor.dtype]
    return tensor.detach().contiguous().view(integer)


def assert_same_bits(left, right, where):
    assert left.dtype == right.dtype and left.shape == right.shape, where
    assert torch.equal(bits(left), bits(right)), where


def assert_same_state(batched_state, torch_state, where):
    """A job's state dict equal to torch's: the same options, and state tensors with the same bits."""
    assert batched_state["param_groups"] == torch_state["param_groups"], where
    assert batched_state["state"].keys() == torch_state["state"].keys(), where
    for index, entries in torch_state["state"].items():
        assert batched_state["state"][index].keys() == entries.keys(), f"{where}, parameter {index}"
        for name, value in entries.items():
            assert_same_bits(batched_state["state"][index][name], value, f"{where}, parameter {index}, {name}")


def train_batched(optimizer, stacked, gradients):
    for step_gradients in gradients:
        for param, gradient in zip(stacked, step_gradients):
            param.grad = gradient.clone()
        optimizer.step()


def train_alone(optimizer, params, job, gradients):
    """One job with a plain torch optimizer, fed its slice of each step's gradients."""
    for step_gradients in gradients:
        for param, gradient in zip(params, step_gradients):
            param.grad = gradient[job].clone()
        optimizer.step()


def flat(tensors, job=None):
    """The jobs' parameters as one flat tensor (framework/flat_parameters.py's layout)."""
    if job is None:
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)
    return torch.cat([t[job].reshape(-1) for t in tensors])


@pytest.mark.parametrize("layout", ["separate", "flat"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_job_gets_the_bits_of_its_own_torch_optimizer(case, layout, dtype):
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(dtype)
    if layout == "flat":
        initial, gradients = [flat(initial)], [[flat(step)] for step in gradients]

    stacked = [torch.nn.Parameter(value.clone()) for value in initial]
    batched = batched_optimizer(torch_class, stacked, job_options)
    train_batched(batched, stacked, gradients)

    for job in range(N):
        alone = [torch.nn.Parameter(value[job].clone()) for value in initial]
        reference = torch_class(alone, **job_options[job])
        train_alone(reference, alone, job, gradients)
        for index, (param, param_alone) in enumerate(zip(stacked, alone)):
            assert_same_bits(param[job], param_alone, f"{case}: job {job}, parameter {index}")
        # state tensors (step and mu_product in torch's dtype for them) and options, in torch's format
        assert_same_state(batched.job_state_dict(job), reference.state_dict(), f"{case}: job {job}'s state")


@pytest.mark.parametrize("case", list(CASES))
def test_torch_gives_a_flat_tensor_the_bits_of_the_separate_parameters(case, dtype):
    """Why a single job's reference may be either layout: each element's update is its own."""
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(dtype)
    separate = [torch.nn.Parameter(value[0].clone()) for value in initial]
    train_alone(torch_class(separate, **job_options[0]), separate, 0, gradients)
    one = [torch.nn.Parameter(flat(initial, 0))]
    train_alone(torch_class(one, **job_options[0]), one, 0, [[flat(step)] for step in gradients])
    assert torch.equal(one[0].detach(), flat([p.detach().unsqueeze(0) for p in separate], 0))


def test_a_last_dimension_equal_to_the_number_of_jobs_keeps_the_jobs_apart():
    """(N, N) parameters: job j's slice is moved by job j's lr only, like torch alone; a (N,) lr
    broadcast along the last axis (torch's own squeeze of a tensor lr) would give another answer."""
    initial, gradients = initial_and_gradients(torch.float32, shapes=((N,), (N, N)))
    job_options = jobs(momentum=0.9)
    stacked = [torch.nn.Parameter(value.clone()) for value in initial]
    train_batched(batched_optimizer(torch.optim.SGD, stacked, job_options), stacked, gradients)

    wrong_axis = [value.clone() for value in initial]
    lrs = torch.tensor(LRS)
    buffers = [None, None]
    for step_gradients in gradients:
        for index, gradient in enumerate(step_gradients):
            buffers[index] = gradient.clone() if buffers[index] is None else buffers[index].mul(0.9).add(gradient)
            wrong_axis[index] -= lrs * buffers[index]  # (N,) against (..., N): the last axis
    for job in range(N):
        alone = [torch.nn.Parameter(value[job].clone()) for value in initial]
        train_alone(torch.optim.SGD(alone, **job_options[job]), alone, job, gradients)
        for param, param_alone in zip(stacked, alone):
            assert torch.equal(param.detach()[job], param_alone.detach())
    assert not torch.allclose(wrong_axis[1], stacked[1].detach())


@pytest.mark.parametrize("case", ["sgd momentum some zero", "adam amsgrad", "nadam", "rmsprop centered momentum weight decay",
                                  "adagrad"])
def test_state_dict_round_trip_continues_bit_for_bit(case):
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(torch.float32)
    half = STEPS // 2

    straight = [torch.nn.Parameter(value.clone()) for value in initial]
    train_batched(batched_optimizer(torch_class, straight, job_options), straight, gradients)

    first = [torch.nn.Parameter(value.clone()) for value in initial]
    optimizer = batched_optimizer(torch_class, first, job_options)
    train_batched(optimizer, first, gradients[:half])
    saved = optimizer.state_dict()
    resumed = [torch.nn.Parameter(value.detach().clone()) for value in first]
    train_batched(optimizer, first, gradients[half:half + 3])  # the saved copy must not move with it

    reloaded = batched_optimizer(torch_class, resumed, [{"lr": 1.0}] * N)
    reloaded.load_state_dict(saved)
    train_batched(reloaded, resumed, gradients[half:])
    for param, param_straight in zip(resumed, straight):
        assert torch.equal(param.detach(), param_straight.detach())


@pytest.mark.parametrize("case", ["sgd momentum some zero", "adamw", "nadam decoupled weight decay", "rmsprop momentum",
                                  "adagrad"])
def test_a_jobs_state_moves_to_torch_and_back(case):
    """job_state_dict loads into each job's own torch optimizer, which then continues as the batch
    does; and the torch optimizers' state dicts load back into a fresh batch, which continues too."""
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(torch.float32)
    half = STEPS // 2

    stacked = [torch.nn.Parameter(value.clone()) for value in initial]
    batched = batched_optimizer(torch_class, stacked, job_options)
    train_batched(batched, stacked, gradients[:half])
    torch_jobs = []
    for job in range(N):
        alone = [torch.nn.Parameter(value.detach()[job].clone()) for value in stacked]
        optimizer = torch_class(alone, lr=123.0)  # every option comes from the state dict
        optimizer.load_state_dict(batched.job_state_dict(job))
        torch_jobs.append((alone, optimizer))
    back = [torch.nn.Parameter(value.detach().clone()) for value in stacked]
    reloaded = batched_optimizer(torch_class, back, [{"lr": 1.0}] * N)
    reloaded.load_job_state_dicts([optimizer.state_dict() for _, optimizer in torch_jobs])

    train_batched(batched, stacked, gradients[half:])
    train_batched(reloaded, back, gradients[half:])
    for job, (alone, optimizer) in enumerate(torch_jobs):
        train_alone(optimizer, alone, job, gradients[half:])
        for param, param_back, param_alone in zip(stacked, back, alone):
            assert torch.equal(param.detach()[job], param_alone.detach())
            assert torch.equal(param_back.detach()[job], param_alone.detach())


def test_torch_takes_its_single_tensor_path_on_the_cpu_by_default():
    """What the batched optimizers mirror: neither foreach nor fused for CPU parameters. Should a
    later torch pick foreach on the CPU, the bitwise tests above fail, and this says why."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert _default_to_fused_or_foreach(params, differentiable=False, use_fused=False) == (False, False)


def test_flags_must_be_equal_across_the_batch():
    params = [torch.nn.Parameter(torch.zeros(2, 3))]
    with pytest.raises(ValueError, match="job 1 has amsgrad=True but job 0 has amsgrad=False"):
        batched_optimizer(torch.optim.Adam, params, [{"lr": 0.1}, {"lr": 0.1, "amsgrad": True}])


def test_torch_validates_each_jobs_options():
    params = [torch.nn.Parameter(torch.zeros(2, 3))]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        batched_optimizer(torch.optim.SGD, params, [{"lr": 0.1}, {"lr": -0.1}])


@pytest.mark.parametrize("flag", ["foreach", "differentiable"])
def test_other_code_paths_are_refused(flag):
    params = [torch.nn.Parameter(torch.zeros(2, 3))]
    with pytest.raises(ValueError, match=f"{flag}=True is not batched"):
        batched_optimizer(torch.optim.Adam, params, [{"lr": 0.1, flag: True}] * 2)


def test_the_job_axis_is_checked_and_unbatched_optimizers_are_named():
    with pytest.raises(ValueError, match="first axis must be the job axis, of length 2"):
        batched_optimizer(torch.optim.SGD, [torch.nn.Parameter(torch.zeros(3, 2))], [{"lr": 0.1}] * 2)
    with pytest.raises(ValueError, match="LBFGS has no batched version"):
        batched_optimizer(torch.optim.LBFGS, [torch.nn.Parameter(torch.zeros(2, 2))], [{"lr": 0.1}] * 2)
    assert set(BATCHED_OPTIMIZERS) == {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam,
                                       torch.optim.RMSprop, torch.optim.Adagrad}


@pytest.mark.parametrize("case", ["sgd momentum some zero", "sgd weight decay", "adam weight decay", "nadam weight decay",
                                  "rmsprop momentum", "rmsprop centered momentum weight decay"])
def test_a_job_whose_option_is_zero_skips_torchs_branch(case):
    """torch runs ``grad.add(param, alpha=weight_decay)`` only when weight_decay != 0 (and the
    momentum lines only when momentum != 0): an infinite parameter or gradient shows the difference
    from adding ``0 * inf``, which is NaN."""
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(torch.float32)
    initial[1][:, 0] = float("inf")
    gradients[3][2][:, 1, 2] = float("-inf")
    stacked = [torch.nn.Parameter(value.clone()) for value in initial]
    train_batched(batched_optimizer(torch_class, stacked, job_options), stacked, gradients)
    for job in range(N):
        alone = [torch.nn.Parameter(value[job].clone()) for value in initial]
        train_alone(torch_class(alone, **job_options[job]), alone, job, gradients)
        for index, (param, param_alone) in enumerate(zip(stacked, alone)):
            assert_same_bits(param[job], param_alone, f"{case}: job {job}, parameter {index}")


@pytest.mark.parametrize("case", ["adam weight decay", "nadam weight decay", "adagrad"])
def test_jobs_at_different_steps_continue_as_they_would_alone(case, dtype):
    """Jobs resumed from their own torch checkpoints, each at another step: the step counters,
    and with them the bias corrections, differ from job to job."""
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(dtype)
    alone_runs = []
    for job in range(N):
        alone = [torch.nn.Parameter(value[job].clone()) for value in initial]
        optimizer = torch_class(alone, **job_options[job])
        train_alone(optimizer, alone, job, gradients[:3 + 4 * job])
        alone_runs.append((alone, optimizer))
    stacked = [torch.nn.Parameter(torch.stack([alone[index].detach() for alone, _ in alone_runs]))
               for index in range(len(initial))]
    batched = batched_optimizer(torch_class, stacked, [{"lr": 1.0}] * N)
    batched.load_job_state_dicts([optimizer.state_dict() for _, optimizer in alone_runs])

    train_batched(batched, stacked, gradients[30:])
    for job, (alone, optimizer) in enumerate(alone_runs):
        train_alone(optimizer, alone, job, gradients[30:])
        for index, (param, param_alone) in enumerate(zip(stacked, alone)):
            assert_same_bits(param[job], param_alone, f"{case}: job {job}, parameter {index}")
        assert_same_state(batched.job_state_dict(job), optimizer.state_dict(), f"{case}: job {job}'s state")


@pytest.mark.parametrize("case", ["sgd nesterov", "adam", "nadam", "rmsprop centered", "adagrad"])
def test_new_learning_rates_mid_run_act_as_torchs_group_lr(case):
    """A schedule sets torch's ``param_groups[0]["lr"]``; set_job_options does it job by job."""
    torch_class, job_options = CASES[case]
    initial, gradients = initial_and_gradients(torch.float32)
    half = STEPS // 2
    new_lrs = [lr * 0.37 for lr in LRS]
    stacked = [torch.nn.Parameter(value.clone()) for value in initial]
    batched = batched_optimizer(torch_class, stacked, job_options)
    train_batched(batched, stacked, gradients[:half])
    batched.set_job_options("lr", new_lrs)
    train_batched(batched, stacked, gradients[half:])
    for job in range(N):
        alone = [torch.nn.Parameter(value[job].clone()) for value in initial]
        optimizer = torch_class(alone, **job_options[job])
        train_alone(optimizer, alone, job, gradients[:half])
        optimizer.param_groups[0]["lr"] = new_lrs[job]
        train_alone(optimizer, alone, job, gradients[half:])
        for index, (param, param_alone) in enumerate(zip(stacked, alone)):
            assert_same_bits(param[job], param_alone, f"{case}: job {job}, parameter {index}")
