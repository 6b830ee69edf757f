"""Declared ranges of numeric settings: every setting declares one, every one is checked on the
composed config before any work, third-party components included."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import List, Optional

import pytest
import torch
from omegaconf import OmegaConf

import framework
from framework import Component, ConfigError, Range, hookimpl, setting, undeclared_ranges
from framework.plugin_manager import build_registry
from framework.registry import PER_FIT_KINDS
from framework.ranges import check_ranges, is_numeric, range_errors, range_of
from framework.schema import DataConfig, TolConfig, TrainerConfig, null_group_overrides, store_configs


def test_a_range_admits_what_its_bounds_say():
    assert [Range(gt=0).admits(v) for v in (-1, 0, 1e-300, 5)] == [False, False, True, True]
    assert [Range(ge=0, lt=1).admits(v) for v in (-1e-9, 0, 0.999, 1)] == [False, True, True, False]
    assert [Range(gt=0, le=1).admits(v) for v in (0, 1, 1.5)] == [False, True, False]
    assert Range(ge=0, le=2**32 - 1).admits(2**32 - 1) and not Range(ge=0, le=2**32 - 1).admits(2**32)


def test_nan_infinity_and_non_numbers_are_refused_unless_declared():
    for value in (math.nan, math.inf, -math.inf, True, "1", None):
        assert not Range().admits(value), value
    assert Range(nan=True).admits(math.nan)
    assert Range(ge=0, le=math.inf).admits(math.inf) and not Range(ge=0, le=math.inf).admits(-math.inf)
    assert Range(ge=-math.inf).admits(-math.inf) and not Range(ge=-math.inf).admits(math.inf)
    assert not Range(gt=0).admits(math.inf)  # no upper bound means finite, not unbounded


def test_a_range_describes_itself_as_the_message_says_it():
    assert Range(gt=0).describe() == "> 0"
    assert Range(ge=1).describe() == ">= 1"
    assert Range(lt=1.5).describe() == "< 1.5"
    assert Range(ge=0, lt=1).describe() == "in [0, 1)"
    assert Range(gt=0, le=1).describe() == "in (0, 1]"
    assert Range(ge=0, le=math.inf).describe() == "in [0, inf]"
    assert Range().describe() == "a finite number"
    assert Range(ge=0, nan=True).describe() == ">= 0 or nan"
    with pytest.raises(ValueError, match="at most one lower bound"):
        Range(gt=0, ge=0)


@dataclass
class Mixed:
    count: int = 1
    rate: Optional[float] = None
    items: List[float] = dataclasses.field(default_factory=list)
    flag: bool = False  # not a number
    label: str = "x"
    names: List[str] = dataclasses.field(default_factory=list)
    declared: float = setting(1.0, gt=0)


def test_undeclared_ranges_finds_every_number_but_bool():
    assert undeclared_ranges(Mixed) == ["count", "rate", "items"]


def with_nested(prefix: str, config: type):
    """(prefix, config), then the same for every field that is itself a dataclass (trainer.tol)."""
    yield prefix, config
    for f in dataclasses.fields(config):
        nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            yield from with_nested(f"{prefix}.{f.name}", nested)


def builtin_configs(registry) -> dict[str, type]:
    configs = dict(with_nested("trainer", TrainerConfig))
    configs["data (every data component)"] = DataConfig
    configs.update({f"{c.kind} {c.name}": c.config for c in registry})
    return configs


def test_nested_trainer_settings_are_covered(registry):
    assert builtin_configs(registry)["trainer.tol"] is TolConfig


def test_every_numeric_setting_declares_a_range(registry):
    """A new int or float setting without a range fails here."""
    missing = {where: undeclared_ranges(config) for where, config in builtin_configs(registry).items()}
    assert {where: fields for where, fields in missing.items() if fields} == {}


def outside(declared: Range, integer: bool):
    """A value just outside the range (or NaN where the range has no bound)."""
    if declared.gt is not None:
        return declared.gt
    if declared.ge is not None:
        return declared.ge - (1 if integer else 0.5)
    if declared.lt is not None:
        return declared.lt
    if declared.le is not None:
        return declared.le + 1
    return "nan"


def numeric_settings(registry):
    """(overrides choosing the component, dotted key, range, is an int, is a list) for every
    setting of the built-ins that declares a range."""
    sources = [(["data=polynomial"], prefix, config) for prefix, config in with_nested("trainer", TrainerConfig)]
    sources.append((["data=polynomial"], "data", DataConfig))
    for component in registry:
        if component.kind in PER_FIT_KINDS:
            sources.append(([f"{component.kind}=[{component.name}]"], f"{component.kind}.{component.name}",
                            component.config))
        else:
            sources.append(([f"{component.kind}={component.name}"], component.kind, component.config))
    for choose, prefix, config in sources:
        for f in dataclasses.fields(config):
            if range_of(f) is not None:
                kind = str(f.type)
                yield choose, f"{prefix}.{f.name}", range_of(f), "int" in kind, "List" in kind


def test_every_declared_range_is_checked_on_the_composed_config(registry, compose_config):
    checked, defaults_checked = 0, set()
    for choose, key, declared, integer, is_list in numeric_settings(registry):
        if tuple(choose) not in defaults_checked:  # once per component (a composition each)
            assert range_errors(compose_config(choose)) == [], f"a default of {choose} is out of its range"
            defaults_checked.add(tuple(choose))
        bad = outside(declared, integer)
        errors = range_errors(compose_config([*choose, f"{key}={f'[{bad}]' if is_list else bad}"]))
        where = f"{key}[0]" if is_list else key
        assert len(errors) == 1 and errors[0].startswith(f"{where}=") and declared.describe() in errors[0], (
            key, errors)
        checked += 1
    assert checked > 40  # the built-ins have dozens of numeric settings


def test_null_is_off_for_optional_settings_and_said_so(compose_config):
    cfg = compose_config(["+task=polyfit", "trainer.grad_clip=null", "trainer.tolerance=null"])
    assert range_errors(cfg) == []
    errors = range_errors(compose_config(["+task=polyfit", "trainer.grad_clip=-1", "trainer.seed=-1"]))
    assert errors == ["trainer.seed=-1 is out of range: it must be in [0, 4294967295]",
                      "trainer.grad_clip=-1.0 is out of range: it must be > 0 (or null)"]


# What the issue found: each was accepted (or ended in an unexplained ValueError).
REFUSED = [
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1.0 is out of range: it must be > 0 (or null)"),
    ("trainer.grad_clip=0", "trainer.grad_clip=0.0 is out of range: it must be > 0 (or null)"),
    ("trainer.tolerance=-1", "trainer.tolerance=-1.0 is out of range: it must be >= 0 (or null)"),
    ("trainer.tolerance=nan", "trainer.tolerance=nan is out of range: it must be >= 0 (or null)"),
    ("trainer.tol.grad_norm=0", "trainer.tol.grad_norm=0.0 is out of range: it must be > 0 (or null)"),
    ("trainer.tol.window=0", "trainer.tol.window=0 is out of range: it must be >= 1"),
    ("trainer.max_time=-1", "trainer.max_time=-1.0 is out of range: it must be > 0 (or null)"),
    ("logger.tensorboard.figure_every=-5",
     "logger.tensorboard.figure_every=-5 is out of range: it must be >= 1 (or null)"),
    ("logger.console.lines=-1", "logger.console.lines=-1 is out of range: it must be >= 0"),
    ("trainer.seed=99999999999999999999",
     "trainer.seed=99999999999999999999 is out of range: it must be in [0, 4294967295]"),
]


@pytest.mark.parametrize("override, message", REFUSED)
def test_out_of_range_values_are_refused_before_any_work(train, recorder, tmp_path, override, message):
    torch.manual_seed(12345)
    rng_before = torch.random.get_rng_state()
    with pytest.raises(ConfigError) as refused:
        train(["+task=polyfit", "trainer.max_steps=5", override], run_dir=tmp_path)
    assert str(refused.value) == message
    assert recorder.calls == []  # no fit started
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # not even seeded
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.json"]  # the refusal's record only


@pytest.mark.parametrize("scheduler", [["scheduler=step", "scheduler.step_size=5"], ["scheduler=exponential"]])
def test_a_negative_scheduler_gamma_is_refused(train, scheduler):
    with pytest.raises(ConfigError, match=r"^scheduler.gamma=-1.0 is out of range: it must be > 0$"):
        train(["+task=polyfit", *scheduler, "scheduler.gamma=-1"])


def test_every_value_out_of_range_is_named_at_once(compose_config):
    cfg = compose_config(["+task=polyfit", "optimizer=adam", "optimizer.betas=[1.0,-0.1]", "optimizer.lr=0"])
    with pytest.raises(ConfigError) as refused:
        check_ranges(cfg)
    assert str(refused.value) == (
        "optimizer.lr=0.0 is out of range: it must be > 0; "
        "optimizer.betas[0]=1.0 is out of range: it must be in [0, 1); "
        "optimizer.betas[1]=-0.1 is out of range: it must be in [0, 1)"
    )


def test_values_at_the_edges_of_their_ranges_train(train):
    result = train(["+task=polyfit", "trainer.max_steps=5", "trainer.grad_clip=1e-3", "trainer.tolerance=0",
                    "trainer.seed=4294967295", "logger.console.lines=0", "logger.tensorboard.figure_every=1"])
    assert result["steps"] == 5


# A third-party plugin: its configs declare ranges, and nothing else is needed for them to be checked.
@dataclass
class ExpConfig:
    rate: float = setting(1.0, gt=0, le=math.inf)
    clip: Optional[float] = setting(None, ge=0, lt=10)


@dataclass
class QuietConfig:
    every: int = dataclasses.field(default=1, metadata={"range": Range(ge=1)})


class Exp(torch.nn.Module):
    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * torch.exp(-x**2 / self.rate)


class AcmePlugin:
    @hookimpl
    def framework_components(self):
        return [Component("model", "exp_acme", lambda config, *, data: Exp(config.rate), ExpConfig),
                Component("logger", "quiet_acme", lambda config, **context: object(), QuietConfig)]


@pytest.fixture
def acme_registry(manager):
    manager.register_plugin(AcmePlugin(), "acme", "test")
    registry = build_registry(manager)
    store_configs(registry)
    return registry


def test_a_third_party_component_gets_its_ranges_checked(acme_registry, compose_config):
    assert undeclared_ranges(ExpConfig) == [] and undeclared_ranges(QuietConfig) == []
    base = ["+task=polyfit", "model=exp_acme", "logger=[console,quiet_acme]"]
    assert range_errors(compose_config([*base, "model.rate=inf", "model.clip=9.5"])) == []
    assert range_errors(compose_config([*base, "model.rate=0", "model.clip=10", "logger.quiet_acme.every=0"])) == [
        "model.rate=0.0 is out of range: it must be in (0, inf]",
        "model.clip=10.0 is out of range: it must be in [0, 10) (or null)",
        "logger.quiet_acme.every=0 is out of range: it must be >= 1",
    ]


def test_logger_null_chooses_no_logger_and_other_kinds_are_refused():
    assert null_group_overrides(["+task=polyfit", "logger=null", "trainer.seed=1"]) == [
        "+task=polyfit", "logger=[]", "trainer.seed=1"]
    assert null_group_overrides(["logger=NULL"]) == ["logger=[]"]
    with pytest.raises(ConfigError, match="model=null chooses no model, but a run needs one"):
        null_group_overrides(["+task=polyfit", "model=null"])
    with pytest.raises(ConfigError, match="scheduler=none keeps the learning rate constant"):
        null_group_overrides(["scheduler=null"])


def test_the_public_api_is_exported_from_the_package_root():
    assert framework.Range is Range and framework.setting is setting
    assert {"Range", "setting", "undeclared_ranges"} <= set(framework.__all__)
    assert OmegaConf.structured(ExpConfig).rate == 1.0  # a setting is an ordinary dataclass field
