"""Which command lines framework/quick_answers.py vouches for without composing them: only those
whose every override the cached schemas show to be valid (a wrong True would cost a slow error,
a wrong False a composition; exactness never depends on it)."""

from __future__ import annotations

import pytest

from framework.quick_answers import surely_composes
from framework.schema_cache import describe_registry


@pytest.fixture
def stored(registry):
    return describe_registry(registry)


@pytest.mark.parametrize("args", [
    ["+task=linear"],
    ["+task=polyfit", "trainer.max_steps=10", "trainer.tol.loss=1e-3", "trainer.grad_clip=null"],
    ["+task=polyfit", "model.degree=3", "optimizer=adam", "optimizer.lr=0.01", "optimizer.amsgrad=true"],
    ["+task=sine", "model.degree=4"],  # the task's model is a YAML variant of polynomial
    ["+task=linear", "logger=[console]", "logger.console.lines=2", "callback=[early_stopping]",
     "callback.early_stopping.patience=3"],
    ["+task=linear", "trainer.device=cpu", "hydra.job.name=probe", "--help"],
])
def test_valid_overrides_are_vouched_for(stored, args):
    assert surely_composes(args, stored)


@pytest.mark.parametrize("args", [
    ["+task=linear", "trainer.max_stepz=3"],
    ["+task=linear", "trainer.max_steps=abc"],
    ["model.degre=3"],
    ["model.degree=3"],  # no model chosen: Hydra refuses the key
    ["+task=polyfit", "model.degre=3"],
    ["+task=linear", "model=nope"],
    ["+task=nope"],
    ["task=linear"],
    ["+task=linear", "logger=[console,nope]"],
    ["+task=linear", "logger=[console]", "logger.tensorboard.figures=false"],
    ["+task=linear", "model=null"],
    ["+task=linear", "+trainer.max_steps=3"],
    ["+task=linear", "trainer.freeze=[a]"],
    ["+task=linear", "optimizer.lr=${oc.env:LR}"],
    ["+task=linear", "trainer"],
])
def test_anything_else_is_composed(stored, args):
    assert not surely_composes(args, stored)
