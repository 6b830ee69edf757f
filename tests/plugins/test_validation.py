"""Held-out evaluation: ``data.val_fraction`` splits any data source, a data component may give its
own validation set, ``val/loss`` is logged at validation steps (``trainer.val_every``) and
``final_val_loss`` goes to result.json; each against a plain PyTorch loop that trains on the same
rows and evaluates on the held-out ones."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from framework import Component, ConfigError, DataConfig, DataError, Dataset, hookimpl, setting
from framework.data import held_out_count, prepare_dataset, split_off_validation, validation_split
from framework.plugin_manager import build_registry
from framework.run import run_training
from framework.schema import store_configs
from tests.framework.compare import events
from tests.polyfit import tutorial_quadratic

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the plain loops


def documented_split(rows: int, held_out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as the README documents it: the held-out rows are the first ⌈fraction × rows⌉
    of ``torch.randperm(rows)`` drawn by a generator seeded with ``trainer.seed + 2**32``; the
    rest train; each keeps the data's row order."""
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed + 2**32))
    return order[held_out:].sort().values, order[:held_out].sort().values


def polyfit_data():
    """Seed 0, then the polynomial data source's draws (x ~ N(0,1)*5, y = x^2 + 2x + 3)."""
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    return x[:, None], (x**2 + 2 * x + 3)[:, None]


def quadratic(params, x):
    return tutorial_quadratic(*params, x)  # as polyfit's preset computes it


def plain_polyfit_with_validation(steps: int, held_out: int = 4, batch_size: int | None = None,
                                  shuffle: bool = False) -> dict:
    """The polyfit preset's loop on the training rows only: every step's loss (before its update)
    and the validation loss after it, and the final losses and parameters."""
    x, y = polyfit_data()
    params = [torch.randn((), requires_grad=True) for _ in range(3)]  # drawn after the data, as the preset
    train_rows, val_rows = documented_split(20, held_out)
    x_train, y_train, x_val, y_val = x[train_rows], y[train_rows], x[val_rows], y[val_rows]
    optimizer = torch.optim.NAdam(params, lr=0.01)
    rows = len(train_rows)
    batch_size = batch_size or rows
    generator = torch.Generator().manual_seed(0)  # data.shuffle's generator: trainer.seed
    batches = []
    losses, val_losses = {}, {}
    for step in range(1, steps + 1):
        if not batches:
            order = torch.randperm(rows, generator=generator) if shuffle else torch.arange(rows)
            batches = [order[start:start + batch_size] for start in range(0, rows, batch_size)]
        batch = batches.pop(0)
        loss = torch.nn.functional.mse_loss(quadratic(params, x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = loss.item()
        with torch.no_grad():
            val_losses[step] = torch.nn.functional.mse_loss(quadratic(params, x_val), y_val).item()
    with torch.no_grad():
        final_loss = torch.nn.functional.mse_loss(quadratic(params, x_train), y_train).item()
    return {"losses": losses, "val_losses": val_losses, "final_loss": final_loss,
            "final_val_loss": val_losses[steps], "params": dict(zip("ABC", params))}


def logged_where_present(recorder, tag: str) -> dict[int, float]:
    """{step: value} of ``tag`` at the logging steps that logged it."""
    return {call[1]: call[2][tag] for call in recorder.calls if call[0] == "log" and tag in call[2]}


# ----------------------------------------------------------------------------- the split


@pytest.mark.parametrize("rows, fraction, held_out", [(20, 0.2, 4), (30, 0.1, 3), (7, 0.5, 4), (3, 0.01, 1),
                                                      (2000, 0.25, 500)])
def test_a_split_holds_out_the_fraction_rounded_up_and_its_parts_are_disjoint(rows, fraction, held_out):
    assert held_out_count(rows, fraction) == held_out
    kept, validation = validation_split(rows, fraction, seed=5)
    assert len(validation) == held_out and len(kept) == rows - held_out
    assert torch.equal(torch.cat([kept, validation]).sort().values, torch.arange(rows))  # disjoint, complete
    assert torch.equal(kept, kept.sort().values) and torch.equal(validation, validation.sort().values)


def test_a_split_depends_on_the_seed_only_and_leaves_the_global_generator_alone():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    first = validation_split(100, 0.3, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    again = validation_split(100, 0.3, seed=0)
    other = validation_split(100, 0.3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    assert all(torch.equal(a, b) for a, b in zip(first, documented_split(100, 30)))


def test_split_off_validation_moves_the_held_out_rows_into_the_validation_set():
    features = torch.arange(10.0)[:, None]
    data = Dataset(features, 2 * features, "ten rows")
    split = split_off_validation(data, 0.3, seed=0)
    kept, held_out = documented_split(10, 3)
    assert torch.equal(split.features, features[kept]) and torch.equal(split.targets, 2 * features[kept])
    assert torch.equal(split.validation.features, features[held_out])
    assert torch.equal(split.validation.targets, 2 * features[held_out])
    assert split_off_validation(data, None, seed=0) is data and split_off_validation(data, 0.0, seed=0) is data


@pytest.mark.parametrize("rows, fraction", [(4, 0.9), (1, 0.5)])
def test_a_split_that_leaves_no_training_row_is_refused(train, tmp_path, rows, fraction):
    xs = list(range(1, rows + 1))
    with pytest.raises(ConfigError, match=rf"data.val_fraction={fraction} holds out all {rows} row\(s\).*no row to train on"):
        train(["+task=linear", f"data.x={xs}", f"data.y={xs}", f"data.val_fraction={fraction}"], run_dir=tmp_path)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "failed" and "data.val_fraction" in written["error"]


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_a_fraction_out_of_range_is_refused(train, value):
    with pytest.raises(ConfigError, match=rf"data.val_fraction={value} is out of range"):
        train(["+task=polyfit", f"data.val_fraction={value}"])


# ----------------------------------------------------------------------------- the no-split run


def test_no_split_and_a_zero_fraction_leave_the_run_bit_identical(train, recorder):
    """(tests/framework/test_reference_tasks.py checks the no-split runs against the plain loops.)"""
    plain = train(["+task=polyfit", "trainer.max_steps=50"])
    plain_final = recorder.final
    zero = train(["+task=polyfit", "trainer.max_steps=50", "data.val_fraction=0"])
    assert all(torch.equal(recorder.final[name], plain_final[name]) for name in "ABC")
    assert zero["final_loss"] == plain["final_loss"] and zero["final_val_loss"] is None
    assert all("val/loss" not in call[2] for call in recorder.calls if call[0] == "log")


def test_the_split_does_not_shift_the_global_random_stream(train, recorder):
    train(["+task=polyfit", "trainer.max_steps=1"])
    initial = recorder.initial
    train(["+task=polyfit", "trainer.max_steps=1", "data.val_fraction=0.5"])
    assert all(torch.equal(recorder.initial[name], initial[name]) for name in "ABC")


# ----------------------------------------------------------------------------- val/loss and final_val_loss


@pytest.mark.parametrize("batching", [[], ["data.batch_size=5", "data.shuffle=true"]], ids=["full batch", "shuffled minibatches"])
def test_val_loss_and_final_val_loss_equal_a_plain_loop_on_the_same_rows(train, recorder, tmp_path, batching):
    steps = 300
    result = train(["+task=polyfit", f"trainer.max_steps={steps}", "trainer.log_every=10",
                    "data.val_fraction=0.2", *batching], run_dir=tmp_path)
    plain = plain_polyfit_with_validation(steps, batch_size=5 if batching else None, shuffle=bool(batching))
    log_steps = [1, *range(10, steps + 1, 10)]
    assert recorder.logged("train/loss") == {step: plain["losses"][step] for step in log_steps}
    # val/loss at a step: the validation rows' loss with the parameters after that step's update.
    assert recorder.logged("val/loss") == {step: plain["val_losses"][step] for step in log_steps}
    assert (result["final_loss"], result["final_val_loss"]) == (plain["final_loss"], plain["final_val_loss"])
    assert all(torch.equal(recorder.final[name], plain["params"][name].detach()) for name in "ABC")
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["final_val_loss"] == plain["final_val_loss"]
    # TensorBoard logs val/loss as a scalar at the same steps.
    assert [(event.step, event.value) for event in events(tmp_path).Scalars("val/loss")] == [
        (step, pytest.approx(plain["val_losses"][step], rel=1e-6)) for step in log_steps]


def test_val_every_adds_logging_steps_and_validates_there_only(train, recorder):
    steps = 110
    train(["+task=polyfit", f"trainer.max_steps={steps}", "trainer.log_every=20", "data.val_fraction=0.2",
           "trainer.val_every=25", "logger=[]"])
    plain = plain_polyfit_with_validation(steps)
    val_steps = [1, 25, 50, 75, 100, 110]  # step 1, every 25, the last
    assert sorted(recorder.logged("train/loss")) == sorted({1, 20, 25, 40, 50, 60, 75, 80, 100, 110})
    assert recorder.logged("train/loss") == {step: plain["losses"][step] for step in recorder.logged("train/loss")}
    assert logged_where_present(recorder, "val/loss") == {step: plain["val_losses"][step] for step in val_steps}


def test_val_loss_puts_the_model_in_eval_mode_and_back(train, manager, recorder):
    seen = []

    class ModeWatch:
        @hookimpl
        def framework_fit_start(self, state):
            model = state.run.model
            original = model.forward
            model.forward = lambda x: (seen.append(model.training), original(x))[1]

    manager.register_plugin(ModeWatch(), "mode_watch", "test")
    # The doctor's forward at fit start would be one more call in training mode.
    train(["+task=polyfit", "trainer.max_steps=2", "trainer.log_every=2", "data.val_fraction=0.2", "logger=[]",
           "trainer.doctor=false"])
    # Per step: the training forward, then (steps 1 and 2 are logging steps) the validation one;
    # then the final loss (training data) and the final validation loss.
    assert seen == [True, False, True, False, True, False]


def test_val_every_without_a_validation_set_is_refused(train):
    with pytest.raises(ConfigError, match="trainer.val_every=5 sets how often val/loss is logged, but this run has "
                                          "no validation set; hold out rows with data.val_fraction"):
        train(["+task=polyfit", "trainer.val_every=5"])


# ----------------------------------------------------------------------------- a data component's own validation set


@dataclass
class LineConfig(DataConfig):
    val_columns: int = setting(1, ge=1)  # feature columns of the validation set (1: like the training set)
    val_rows: int = setting(3, ge=0)


def line_data(config: LineConfig, *, dtype) -> Dataset:
    """y = 2x + 1 on x = 1..6 to train on, and its own validation rows at x = 10, 11, ..."""
    x = torch.arange(1.0, 7.0, dtype=dtype)
    x_val = torch.arange(10.0, 10.0 + config.val_rows, dtype=dtype)[:, None].repeat(1, config.val_columns)
    return Dataset(x, 2 * x + 1, "line", validation=Dataset(x_val, 2 * x_val[:, :1] + 1, "line, far"))


class LineDataPlugin:
    @hookimpl
    def framework_components(self):
        return [Component("data", "line_with_validation", line_data, LineConfig)]


@pytest.fixture
def train_line(manager, compose_config, tmp_path):
    manager.register_plugin(LineDataPlugin(), "line_data", "test")
    registry = build_registry(manager)
    store_configs(registry)

    def train_with(overrides: list[str]):
        cfg = compose_config(["+task=linear", "data=line_with_validation", "trainer.device=cpu", *overrides])
        return run_training(cfg, manager=manager, registry=registry, run_dir=tmp_path)

    return train_with


def test_a_data_components_own_validation_set_is_used(train_line, manager, recorder):
    result = train_line(["trainer.max_steps=50", "trainer.log_every=10", "logger=[]"])
    x = torch.arange(1.0, 7.0)[:, None]
    x_val = torch.arange(10.0, 13.0)[:, None]
    model = torch.nn.Linear(1, 1)  # the linear preset: W and b start at 0, SGD lr 0.001
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    val_losses = {}
    for step in range(1, 51):
        loss = torch.nn.functional.mse_loss(model(x), 2 * x + 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            val_losses[step] = torch.nn.functional.mse_loss(model(x_val), 2 * x_val + 1).item()
    assert recorder.logged("val/loss") == {step: val_losses[step] for step in (1, 10, 20, 30, 40, 50)}
    assert result["final_val_loss"] == val_losses[50]


def test_val_fraction_with_a_data_components_own_validation_set_is_refused(train_line):
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.5 asks to hold out rows, but the data component "
                                          r"gives its own validation set \(line\) \(3 rows\)"):
        train_line(["data.val_fraction=0.5"])


@pytest.mark.parametrize("override, message", [
    ("data.val_columns=2", r"the validation data \(line\) have 2 features column\(s\) but the training data have 1"),
    ("data.val_rows=0", r"the validation data \(line, far\) have no rows"),
])
def test_a_validation_set_unlike_the_training_data_is_refused(train_line, override, message):
    with pytest.raises(DataError, match=message):
        train_line([override])


def test_prepare_dataset_checks_and_converts_the_validation_set():
    data = Dataset(torch.tensor([1, 2, 3]), torch.tensor([2, 4, 6]),
                   validation=Dataset(torch.tensor([4, 5]), torch.tensor([8, 10])))
    prepared = prepare_dataset(data, dtype=torch.float64, device=CPU)
    assert prepared.validation.features.dtype == torch.float64 and prepared.validation.features.shape == (2, 1)
    with pytest.raises(DataError, match="validation data targets hold 1 value"):
        prepare_dataset(Dataset(torch.ones(2), torch.ones(2), validation=Dataset(torch.ones(1), torch.tensor([float("nan")]))),
                        dtype=torch.float32, device=CPU)
    with pytest.raises(DataError, match="validation set is list, not framework.Dataset"):
        prepare_dataset(Dataset(torch.ones(2), torch.ones(2), validation=[1, 2]), dtype=torch.float32, device=CPU)


def test_a_resumed_run_may_validate_at_other_steps(train, recorder, tmp_path):
    # val_every is how often a run logs, as log_every is: a resume may change it.
    overrides = ["+task=polyfit", "data.val_fraction=0.2", "logger=[]"]
    train([*overrides, "trainer.max_steps=20", "trainer.val_every=5"], run_dir=tmp_path)
    recorder.calls.clear()
    resumed = train([*overrides, "trainer.max_steps=40", "trainer.val_every=8", f"trainer.resume={tmp_path}"],
                    run_dir=tmp_path)
    assert (resumed["status"], resumed["steps"]) == ("completed", 40)
    assert sorted(logged_where_present(recorder, "val/loss")) == [24, 32, 40]
