"""The batched fit (framework/batched_fit.py) and the vectorized launcher's grouping
(framework/vectorized.py), in process: each batched job's losses and parameters are bit for bit
those of the same job trained alone through the framework's own run path (the ``train``
fixture, which the reference-task tests check against plain PyTorch loops)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from framework import hookimpl, vectorized
from framework.batched_fit import batched_fit
from framework.errors import NonFiniteLossError
from framework.vectorized import Job, build_job, group_key, plan, task_part, why_not_batched


@pytest.fixture
def shared(manager, registry):
    """The launcher builds jobs with the CLI's registry: here the fixtures'."""
    saved = (vectorized.SHARED.manager, vectorized.SHARED.registry)
    vectorized.SHARED.manager, vectorized.SHARED.registry = manager, registry
    yield
    vectorized.SHARED.manager, vectorized.SHARED.registry = saved


def alone(train, overrides, run_dir):
    """The job trained alone: its result.json and its loss at every step that ended (read by a
    hook; a diverging run raises before the hook of its last step)."""
    losses = []

    class Recorder:
        @hookimpl
        def framework_step_end(self, state, loss):
            losses.append(loss.item())

    recorder = Recorder()
    train.manager.register(recorder)
    try:
        try:
            train(overrides, run_dir=run_dir)
        except NonFiniteLossError:
            pass
    finally:
        train.manager.unregister(recorder)
    return json.loads((run_dir / "result.json").read_text()), losses


@pytest.fixture
def train_alone(train, manager, tmp_path):
    train.manager = manager
    runs = itertools.count()
    return lambda overrides: alone(train, overrides, tmp_path / f"run{next(runs)}")


def batched(compose_config, overrides_per_job, broadcast=True):
    states = [build_job(compose_config(["trainer.device=cpu", *overrides])) for overrides in overrides_per_job]
    return batched_fit(states, vectorized.per_job_loss(states[0]) if broadcast else None)


def same_bits(expected: list[float], got: torch.Tensor) -> bool:
    expected = torch.tensor(expected, dtype=got.dtype)
    return bool(torch.equal(expected.isnan(), got.isnan())
                and torch.equal(expected.nan_to_num(), got.nan_to_num()))


def assert_jobs_match_their_own_runs(train_alone, compose_config, jobs, broadcast=True):
    trajectories = batched(compose_config, jobs, broadcast)
    for overrides, trajectory in zip(jobs, trajectories):
        result, losses = train_alone(overrides)
        assert trajectory.steps == result["steps"], overrides
        assert same_bits(losses, torch.stack(trajectory.losses[:len(losses)])), overrides
        final = torch.cat([torch.tensor(value, dtype=trajectory.params.dtype).reshape(-1)
                           for value in result["params"].values()])
        assert same_bits(final.tolist(), trajectory.params[-1]), overrides
        assert trajectory.failed == (result["status"] == "failed"), overrides


OPTIMIZER_CASES = {
    "sgd": ("optimizer=sgd", ["optimizer.lr=0.0001", "optimizer.lr=0.0003", "optimizer.lr=0.001"]),
    "sgd momentum nesterov weight decay": (
        "optimizer=sgd optimizer.nesterov=true",
        ["optimizer.lr=0.0001 optimizer.momentum=0.9 optimizer.weight_decay=0.01",
         "optimizer.lr=0.0003 optimizer.momentum=0.5 optimizer.weight_decay=0",
         "optimizer.lr=0.0002 optimizer.momentum=0.8 optimizer.weight_decay=0.1"]),
    "sgd momentum dampening": (
        "optimizer=sgd optimizer.momentum=0.9",
        ["optimizer.lr=0.0001 optimizer.dampening=0.1", "optimizer.lr=0.0003 optimizer.dampening=0.5"]),
    "adam": ("optimizer=adam", ["optimizer.lr=0.001", "optimizer.lr=0.01 optimizer.betas=[0.8,0.99]",
                                "optimizer.lr=0.1 optimizer.eps=1e-6"]),
    "adamw": ("optimizer=adamw", ["optimizer.lr=0.001 optimizer.weight_decay=0.1", "optimizer.lr=0.05"]),
    "nadam": ("optimizer=nadam", ["optimizer.lr=0.001", "optimizer.lr=0.01 optimizer.momentum_decay=0.001",
                                  "optimizer.lr=0.1 optimizer.weight_decay=0.01"]),
    "rmsprop": ("optimizer=rmsprop", ["optimizer.lr=0.001 optimizer.alpha=0.9", "optimizer.lr=0.01",
                                      "optimizer.lr=0.003 optimizer.momentum=0.5"]),
    "adagrad": ("optimizer=adagrad", ["optimizer.lr=0.1", "optimizer.lr=0.5 optimizer.lr_decay=0.01",
                                      "optimizer.lr=0.3 optimizer.initial_accumulator_value=0.1 "
                                      "optimizer.weight_decay=0.01 optimizer.eps=1e-8"]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_each_batched_job_is_bitwise_its_own_run_for_every_batched_optimizer(
        case, dtype, shared, train_alone, compose_config):
    common, varied = OPTIMIZER_CASES[case]
    jobs = [["+task=polyfit", *common.split(), *job.split(), "trainer.max_steps=60", f"trainer.dtype={dtype}",
             "logger=[]"] for job in varied]
    assert_jobs_match_their_own_runs(train_alone, compose_config, jobs)


@pytest.mark.parametrize("task, varied", [
    # sine: the seed draws the cubic's initial values only (its data are evenly spaced)
    ("+task=sine trainer.max_steps=60", ["optimizer.lr=1e-6 trainer.seed=0", "optimizer.lr=3e-6 trainer.seed=1",
                                         "optimizer.lr=1e-5 trainer.seed=2"]),
    ("+task=legendre trainer.max_steps=60", ["optimizer.lr=1e-6", "optimizer.lr=5e-6"]),
    ("+task=linear", ["optimizer.lr=0.01", "optimizer.lr=0.05"]),  # the vmap path
    # Adagrad on a flattened model of four parameters, and under vmap
    ("+task=sine optimizer=adagrad trainer.max_steps=60",
     ["optimizer.lr=0.01", "optimizer.lr=0.05 optimizer.lr_decay=0.01 optimizer.initial_accumulator_value=0.1"]),
    ("+task=linear optimizer=adagrad", ["optimizer.lr=0.1", "optimizer.lr=0.3 optimizer.weight_decay=0.01"]),
    # one parameter, flattened as its transpose (framework.flat_parameters.TRANSPOSED_WEIGHT_COLUMN)
    ("+task=puzzle trainer.max_steps=60", ["optimizer.lr=0.01", "optimizer.lr=0.05"]),
    ("+task=polyfit loss=l1 optimizer=adam trainer.max_steps=100", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
    ("+task=polyfit loss=huber optimizer=adam trainer.max_steps=100", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
    # minibatches, in order and shuffled (the jobs share the seed, so the order)
    ("+task=polyfit data.batch_size=6 trainer.max_steps=50", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
    ("+task=polyfit data.batch_size=6 data.shuffle=true trainer.max_steps=50",
     ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
    # every job clipped by its own norm; a model that is not flattened (one parameter)
    ("+task=polyfit trainer.grad_clip=10 optimizer=adam trainer.max_steps=50", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
    ("+task=polyfit model.degree=0 optimizer=adam trainer.max_steps=50", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
])
def test_models_and_losses_batched_bitwise(task, varied, shared, train_alone, compose_config):
    jobs = [[*task.split(), *job.split(), "logger=[]"] for job in varied]
    assert_jobs_match_their_own_runs(train_alone, compose_config, jobs)


@pytest.mark.parametrize("task, varied", [
    # LegendreP3, a custom autograd Function, under vmap: setup_context and generate_vmap_rule
    ("+task=legendre trainer.max_steps=40", ["optimizer.lr=1e-6", "optimizer.lr=5e-6"]),
    ("+task=polyfit model.form=terms trainer.max_steps=40", ["optimizer.lr=0.01", "optimizer.lr=0.1"]),
])
def test_the_vmap_path_that_any_model_takes_is_bitwise_too(task, varied, shared, train_alone, compose_config):
    jobs = [[*task.split(), *job.split(), "logger=[]"] for job in varied]
    assert_jobs_match_their_own_runs(train_alone, compose_config, jobs, broadcast=False)


def test_a_matmul_polynomial_is_not_batched_under_vmap(shared, compose_config):
    # vmap batches the jobs' (20, 3) @ (3, 1) products into one (20, 3) @ (3, N), whose columns
    # round differently from the jobs' own products once N reaches 16 on this machine: the fit
    # is refused (the launcher then runs the jobs one by one) rather than silently inexact.
    jobs = [["+task=polyfit", f"optimizer.lr=0.0{index + 1}", "trainer.max_steps=5", "logger=[]"] for index in range(3)]
    with pytest.raises(ValueError, match="batched exactly only by its own broadcast path"):
        batched(compose_config, jobs, broadcast=False)


def test_a_matmul_polynomial_that_torch_would_batch_inexactly_is_refused(shared, compose_config, monkeypatch):
    # The batched product is checked against each job's own mm before a step: stand in a batched
    # product that rounds one job differently, as another CPU's kernels could.
    real_bmm = torch.bmm

    def off_by_one_ulp(design, columns):
        out = real_bmm(design, columns)
        return torch.cat([out[:1], torch.nextafter(out[1:2], torch.full_like(out[1:2], math.inf)), out[2:]])

    monkeypatch.setattr(torch, "bmm", off_by_one_ulp)
    jobs = [["+task=polyfit", f"optimizer.lr=0.0{index + 1}", "trainer.max_steps=5", "logger=[]"] for index in range(3)]
    with pytest.raises(ValueError, match=r"model.form=matmul: torch's batched product rounds job 1 of 3 differently"):
        batched(compose_config, jobs)


def test_a_diverging_job_stops_alone_at_its_own_step_and_the_others_go_on(shared, train_alone, compose_config):
    jobs = [["+task=polyfit", "optimizer=sgd", f"optimizer.lr={lr}", "trainer.max_steps=100", "logger=[]"]
            for lr in ("0.0001", "0.01", "0.0003")]
    trajectories = batched(compose_config, jobs)
    assert [t.steps < 100 for t in trajectories] == [False, True, False]
    assert not math.isfinite(trajectories[1].losses[-1].item())
    assert_jobs_match_their_own_runs(train_alone, compose_config, jobs)


def test_grouping_keeps_apart_what_is_more_than_optimizer_numbers_and_the_seed(compose_config):
    def key(*overrides):
        return group_key(task_part(compose_config(["+task=polyfit", *overrides])))

    assert key("optimizer.lr=0.1") == key("optimizer.lr=0.01", "optimizer.eps=1e-6", "trainer.seed=3")
    assert key("optimizer.lr=0.1") != key("optimizer.lr=0.1", "trainer.max_steps=10")
    assert key("optimizer=adam") != key("optimizer=nadam")
    assert key("optimizer=adam") != key("optimizer=adam", "optimizer.amsgrad=true")
    assert key("optimizer=adagrad") == key("optimizer=adagrad", "optimizer.lr_decay=0.01",
                                           "optimizer.initial_accumulator_value=0.1")
    assert key("optimizer=adagrad") != key("optimizer=adagrad", "optimizer.maximize=true")
    assert key() != key("trainer.dtype=float64")
    # with shuffled minibatches the seed orders the batches: it is no longer a per-job number
    assert key("data.batch_size=5", "data.shuffle=true") != key("data.batch_size=5", "data.shuffle=true",
                                                                  "trainer.seed=1")


def test_settings_that_need_a_jobs_own_loop_say_why(compose_config):
    def why(*overrides):
        return why_not_batched(task_part(compose_config(["+task=polyfit", *overrides])))

    assert why() is None
    assert why("trainer.grad_clip=1.0", "trainer.tol.loss=0.001", "trainer.checkpoint_every=10") is None
    assert why("callback=[early_stopping]", "data.val_fraction=0.2") is None
    assert "max_time" in why("trainer.max_time=10")
    assert "scheduler" in why("scheduler=cosine")
    # the batched fit mirrors the default step in trainer.dtype: no autocast, no scaler, one process
    assert why("trainer.precision=32", "trainer.strategy=single") is None
    assert "trainer.precision=bf16" in why("trainer.precision=bf16")
    assert "trainer.precision=16-mixed" in why("trainer.precision=16-mixed")
    assert "trainer.strategy=ddp" in why("trainer.strategy=ddp")


def test_plan_batches_compatible_jobs_and_says_why_the_others_run_alone(shared, compose_config):
    overrides = [
        ["optimizer.lr=0.01"], ["optimizer.lr=0.02"],  # one batch
        ["optimizer=lbfgs"], ["optimizer=lbfgs", "optimizer.lr=0.5"],  # no batched LBFGS
        ["trainer.seed=1"],  # polyfit's data are drawn with the seed: other data, alone
        ["trainer.max_time=100"],
    ]
    jobs = [Job(index, o, _with_hydra(compose_config(["+task=polyfit", "logger=[]", "trainer.device=cpu", *o])))
            for index, o in enumerate(overrides)]
    batches = plan(jobs, max_batch_mib=1024, max_batch_jobs=None)
    assert [[job.index for job in batch] for batch in batches] == [[0, 1]]
    assert "LBFGS has no batched version" in jobs[2].alone_because
    assert "data" in jobs[4].alone_because
    assert "max_time" in jobs[5].alone_because


def test_the_memory_cap_cuts_a_group_into_batches(shared, compose_config):
    jobs = [Job(index, [], _with_hydra(compose_config(["+task=polyfit", f"optimizer.lr=0.0{index + 1}",
                                                       "trainer.device=cpu"])))
            for index in range(5)]
    per_job_mib = vectorized.batch_bytes_per_job(build_job(jobs[0].config)) / 2**20
    batches = plan(jobs, max_batch_mib=2.5 * per_job_mib, max_batch_jobs=None)
    assert [len(batch) for batch in batches] == [2, 2]
    assert "memory cap" in jobs[4].alone_because
    assert [len(batch) for batch in plan(jobs, max_batch_mib=1024, max_batch_jobs=3)] == [3, 2]


def _with_hydra(config):
    """A composed config as a launcher holds it (with Hydra's node, which the grouping drops)."""
    from omegaconf import OmegaConf, open_dict

    with open_dict(config):
        config.hydra = OmegaConf.create({"job": {"num": 0}})
    return config


def wide_rows(path, features: int = 16, rows: int = 40, zero_rows: int = 0) -> str:
    """A CSV of ``rows`` rows of ``features`` feature columns and a target y, the first
    ``zero_rows`` of them zeros; its path."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(rows, features, generator=generator)
    x[:zero_rows] = 0
    y = x @ torch.randn(features, 1, generator=generator) + 0.1 * torch.randn(rows, 1, generator=generator)
    names = [f"x{column}" for column in range(features)]
    path.write_text(",".join([*names, "y"]) + "\n" + "".join(
        ",".join(repr(value) for value in row) + "\n" for row in torch.cat([x, y], dim=1).tolist()))
    return str(path)


@pytest.mark.parametrize("batch, zero_rows, bias", [
    ("data.batch_size=null", 0, "false"), ("data.batch_size=1", 0, "false"), ("data.batch_size=7", 0, "true"),
    ("data.batch_size=8", 8, "true"), ("data.batch_size=8", 8, "false")])
def test_a_wide_linear_model_under_vmap_trains_each_job_as_its_own_run(batch, zero_rows, bias, shared, train_alone,
                                                                        compose_config, tmp_path):
    # vmap batches the jobs' F.linear into one wider product, which on the CPU rounds some jobs'
    # dot products of 16 features differently from their own: such a batch is refused (the
    # launcher then runs the jobs one by one), so whatever the launcher does, each job is its own
    # run. A first batch of zero rows rounds alike either way: the check draws features too.
    path = wide_rows(tmp_path / "wide.csv", zero_rows=zero_rows)
    data = ["data=csv", f"data.path={path}", "data.target=y", "model=linear", f"model.bias={bias}",
            "model.init=randn", "optimizer=adam", "trainer.max_steps=20", "logger=[]", batch]
    jobs = [[*data, "optimizer.lr=0.01"], [*data, "optimizer.lr=0.05"], [*data, "optimizer.lr=0.02"]]
    try:
        assert_jobs_match_their_own_runs(train_alone, compose_config, jobs, broadcast=False)
    except ValueError as refused:
        assert "rounds job" in str(refused) and "differently from its own run" in str(refused)


def test_a_model_whose_loss_is_not_finite_at_random_parameters_is_not_batched_under_vmap():
    # At parameters drawn from N(0, 1) a square root gives NaN, which would compare equal with
    # itself and check nothing: the check refuses instead (the launcher runs the jobs one by one).
    from types import SimpleNamespace

    from framework.batched_fit import per_job_loss_function

    class RootWeights(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(1, 16))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight.sqrt())

    stacked = {"weight": torch.rand(3, 1, 16, requires_grad=True)}
    run_state = SimpleNamespace(model=RootWeights(), loss_fn=torch.nn.functional.mse_loss)
    losses, _ = per_job_loss_function(run_state, lambda: stacked, None)
    features, targets = torch.randn(5, 16), torch.randn(5, 1)
    with pytest.raises(ValueError, match="could not be checked: its loss or gradients are not finite"):
        losses(features, targets)
