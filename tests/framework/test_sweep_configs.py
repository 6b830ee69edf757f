"""framework/sweep_configs.py: a sweep job's config composed from its twin, or handed over from the
sweeper's check, is exactly Hydra's own composition of that job."""

from __future__ import annotations

import os

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from framework import sweep_configs
from framework.locations import config_dir
from framework.run_folders import register_resolvers
from tests.config_facts import node_facts

HYDRA_LOAD = ConfigLoaderImpl.load_sweep_config  # Hydra's own, whatever is installed


@pytest.fixture
def sweep(registry, tmp_path, monkeypatch):
    """sweep(command_line) -> (config loader, master config) of a ``-m`` run of it."""
    monkeypatch.chdir(tmp_path)  # the folders the master claims as it resolves
    register_resolvers()
    GlobalHydra.instance().clear()
    context = initialize_config_dir(config_dir=str(config_dir()), version_base="1.3")
    context.__enter__()

    def master_of(command_line: list[str]):
        loader = GlobalHydra.instance().hydra.config_loader
        master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
        # Claimed once, as Hydra's sweeper does before any job: every job's cache holds them.
        str(master.hydra.sweep.dir), str(master.hydra.run.dir)
        return loader, master

    yield master_of
    context.__exit__(None, None, None)
    GlobalHydra.instance().clear()


def resolved(config: DictConfig):
    """The config resolved as a launched job resolves it (its number set), or the error."""
    config = config.copy()
    with open_dict(config):
        config.hydra.job.num = config.hydra.job.id = 7
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception as error:
        return type(error).__name__, str(error)


def assert_same_config(ours: DictConfig, hydras: DictConfig) -> None:
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
    assert node_facts(ours) == node_facts(hydras)
    assert resolved(ours) == resolved(hydras)
    cache_of = lambda config: dict(config._metadata.resolver_cache)  # noqa: E731
    assert cache_of(ours) == cache_of(hydras)


# (the sweep's fixed overrides, the first job's varying ones, the second job's)
TWINS = {
    "float": (["+task=polyfit"], ["optimizer.lr=0.1"], ["optimizer.lr=1e-3"]),
    "int and seed": (["+task=polyfit"], ["trainer.max_steps=5", "trainer.seed=1"],
                     ["trainer.max_steps=7", "trainer.seed=123"]),
    "nested": (["+task=linear", "optimizer=adam"], ["trainer.tol.loss=0.5"], ["trainer.tol.loss=1e-9"]),
    "int into a float": (["+task=polyfit"], ["optimizer.lr=1"], ["optimizer.lr=2"]),
    "string with spaces": (["+task=polyfit"], ["trainer.device='a b'"], ["trainer.device='c  d e'"]),
    "string with quotes": (["+task=polyfit"], ["trainer.device=cpu"], ["trainer.device=\"it's \\\"x\\\"\""]),
    "list": (["+task=polyfit", "optimizer=adam"], ["optimizer.betas=[0.8,0.9]"], ["optimizer.betas=[0.5,0.75]"]),
    "list of strings, other length": (["+task=polyfit"], ["trainer.freeze=[a,b]"], ["trainer.freeze=[c]"]),
    "list of a nullable key": (["+task=polyfit"], ["model.names=[a,b,c]"], ["model.names=[x,y,z]"]),
    "null": (["+task=polyfit"], ["trainer.grad_clip=1.5"], ["trainer.grad_clip=null"]),
    "from null": (["+task=polyfit"], ["trainer.grad_clip=null"], ["trainer.grad_clip=2.5"]),
    "interpolation": (["+task=polyfit"], ["trainer.grad_clip=0.5"], ["trainer.grad_clip=${trainer.tol.window}"]),
    "interpolation to a string": (["+task=polyfit"], ["trainer.device=cpu"], ["trainer.device=${trainer.dtype}"]),
    "from an interpolation": (["+task=polyfit"], ["trainer.seed=${trainer.log_every}"], ["trainer.seed=3"]),
    "bool": (["+task=polyfit", "optimizer=adam"], ["optimizer.amsgrad=true"], ["optimizer.amsgrad=false"]),
    "beside a group and an add": (["+task=polyfit", "optimizer=sgd", "+trainer.extra=1"],
                                  ["optimizer.momentum=0.5"], ["optimizer.momentum=0.9"]),
    "after a hydra key": (["+task=polyfit", "hydra.job.chdir=false"], ["optimizer.lr=0.5"], ["optimizer.lr=0.25"]),
    "the same values": (["+task=polyfit"], ["optimizer.lr=0.5"], ["optimizer.lr=0.5"]),
}


@pytest.mark.parametrize("case", TWINS)
def test_a_twin_gives_hydras_own_config(case, sweep):
    fixed, first, second = TWINS[case]
    loader, master = sweep([*fixed, "trainer.max_steps=1"])
    with sweep_configs.installed() as state:
        loader.load_sweep_config(master, [*fixed, *first])
        ours = loader.load_sweep_config(master, [*fixed, *second])
    assert state.composed == {"full": 1, "twin": 1, "kept": 0}  # the fast path made it
    assert_same_config(ours, HYDRA_LOAD(loader, master, [*fixed, *second]))


# Jobs that are not twins: Hydra composes the second one in full.
NOT_TWINS = {
    "a group": (["+task=polyfit"], ["optimizer=adam"], ["optimizer=sgd"]),
    "a group added": ([], ["+task=polyfit"], ["+task=linear"]),
    "a key added": (["+task=polyfit"], ["+trainer.extra=1"], ["+trainer.extra=2"]),
    "a key forced": (["+task=polyfit"], ["++trainer.seed=1"], ["++trainer.seed=2"]),
    "a key deleted": (["+task=polyfit", "+extra={a: 1, b: 2}"], ["~extra.a"], ["~extra.b"]),
    "a hydra key": (["+task=polyfit"], ["hydra.job.chdir=false"], ["hydra.job.chdir=true"]),
    "a list then null": (["+task=polyfit"], ["model.names=[a,b,c]"], ["model.names=null"]),
    "null then a list": (["+task=polyfit"], ["model.names=null"], ["model.names=[a,b,c]"]),
    "a dict": (["+task=polyfit"], ["trainer.tol={loss: 1.0}"], ["trainer.tol={window: 3}"]),
    "overlapping keys": (["+task=polyfit", "trainer.tol={loss: 1.0}"], ["trainer.tol.window=2"],
                         ["trainer.tol.window=5"]),
    "a key twice": (["+task=polyfit"], ["trainer.seed=1", "trainer.seed=2"], ["trainer.seed=3", "trainer.seed=4"]),
    "other keys": (["+task=polyfit"], ["trainer.seed=1"], ["trainer.max_steps=4"]),
}


@pytest.mark.parametrize("case", NOT_TWINS)
def test_jobs_that_are_not_twins_get_hydras_composition(case, sweep):
    fixed, first, second = NOT_TWINS[case]
    loader, master = sweep(["+task=polyfit", "trainer.max_steps=1"] if not fixed else [*fixed])
    with sweep_configs.installed() as state:
        loader.load_sweep_config(master, [*fixed, *first])
        ours = loader.load_sweep_config(master, [*fixed, *second])
    assert state.composed == {"full": 2, "twin": 0, "kept": 0}
    assert_same_config(ours, HYDRA_LOAD(loader, master, [*fixed, *second]))


@pytest.mark.parametrize("override, kind", [
    ("optimizer.lr=0.1", "scalar"), ("x='a b'", "scalar"), ("x=null", "scalar"), ("x=${y}", "scalar"),
    ("x=[1,2]", "list"), ("x={a: 1}", None), ("+x=1", None), ("++x=1", None), ("~x", None), ("~x=1", None),
    ("x@pkg=1", None), ("hydra.job.chdir=true", None), ("x=1,2", None), ("x=range(3)", None),
])
def test_only_plain_values_make_twins(override, kind):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert sweep_configs.value_kind(OverridesParser.create().parse_override(override)) == kind


@pytest.mark.parametrize("bad", ["optimizer.lr=abc", "trainer.max_steps=1.5", "trainer.freeze=3",
                                 "optimizer.lrr=0.1", "trainer.seed=[1]"])
def test_a_bad_value_fails_as_in_hydra(bad, sweep):
    """The same exception, message and cause as Hydra's own composition: the CLI reports it alike."""
    loader, master = sweep(["+task=polyfit"])
    key = bad.split("=")[0]
    good = {"optimizer.lr": "0.1", "trainer.max_steps": "2", "trainer.freeze": "[a]", "optimizer.lrr": "0.1",
            "trainer.seed": "1"}[key]
    with pytest.raises(Exception) as hydras:
        HYDRA_LOAD(loader, master, ["+task=polyfit", bad])
    with sweep_configs.installed() as state:
        loader.load_sweep_config(master, ["+task=polyfit", f"{key}={good}"] if key != "optimizer.lrr" else
                                 ["+task=polyfit"])
        with pytest.raises(Exception) as ours:
            loader.load_sweep_config(master, ["+task=polyfit", bad])
    assert type(ours.value) is type(hydras.value)
    assert str(ours.value) == str(hydras.value)
    assert type(ours.value.__cause__) is type(hydras.value.__cause__)
    assert str(ours.value.__cause__) == str(hydras.value.__cause__)
    # The first two go through the twin; the others are no plain-value twin of it (a scalar for
    # a list, a list for a scalar, a key it does not set).
    assert state.composed["twin"] == (1 if key in ("optimizer.lr", "trainer.max_steps") else 0)


def test_hydra_override_dirname_and_task_overrides_follow_the_job(sweep):
    loader, master = sweep(["+task=polyfit"])
    with sweep_configs.installed():
        loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.1", "trainer.seed=1"])
        ours = loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.02", "trainer.seed=1"])
    assert list(ours.hydra.overrides.task) == ["+task=polyfit", "optimizer.lr=0.02", "trainer.seed=1"]
    assert ours.hydra.job.override_dirname == "+task=polyfit,optimizer.lr=0.02,trainer.seed=1"
    assert ours.optimizer.lr == 0.02


def test_env_and_cwd_are_the_jobs_own(sweep, monkeypatch, tmp_path):
    monkeypatch.setenv("FRAMEWORK_TEST_VAR", "first")
    loader, master = sweep(["+task=polyfit", "hydra.job.env_copy=[FRAMEWORK_TEST_VAR]"])
    fixed = ["+task=polyfit", "hydra.job.env_copy=[FRAMEWORK_TEST_VAR]"]
    monkeypatch.setenv("FRAMEWORK_TEST_VAR", "first")
    with sweep_configs.installed() as state:
        loader.load_sweep_config(master, [*fixed, "optimizer.lr=0.1"])
        monkeypatch.setenv("FRAMEWORK_TEST_VAR", "second")
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        ours = loader.load_sweep_config(master, [*fixed, "optimizer.lr=0.2"])
    assert state.composed["twin"] == 1
    assert ours.hydra.job.env_set.FRAMEWORK_TEST_VAR == "second"
    assert ours.hydra.runtime.cwd == os.getcwd()
    assert_same_config(ours, HYDRA_LOAD(loader, master, [*fixed, "optimizer.lr=0.2"]))


def test_twins_are_never_handed_out(sweep):
    """A launcher changes the config it gets (hydra.job.num); the next twin starts from Hydra's."""
    loader, master = sweep(["+task=polyfit"])
    with sweep_configs.installed():
        first = loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.1"])
        with open_dict(first):
            first.hydra.job.num = 0
        first.optimizer.lr = 99.0
        second = loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.3"])
        third = loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.3"])
    assert second is not third
    assert_same_config(second, HYDRA_LOAD(loader, master, ["+task=polyfit", "optimizer.lr=0.3"]))


def checking_sweeper(loader, master):
    """Hydra's basic sweeper, ready for its check. Imported here: Hydra's plugin scan re-runs its
    module, and the class must be the one its methods name."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    sweeper = BasicSweeper(max_batch_size=None, params=None)
    sweeper.hydra_context = HydraContext(config_loader=loader, callbacks=None)
    sweeper.config = master
    return sweeper


def test_the_launcher_takes_the_checks_config_once(sweep):
    loader, master = sweep(["+task=polyfit"])
    batch = [["+task=polyfit", "optimizer=adam"], ["+task=polyfit", "optimizer=sgd"],
             ["+task=polyfit", "optimizer=sgd"]]  # a job repeated: each launch gets its own config
    with sweep_configs.installed() as state:
        checking_sweeper(loader, master).validate_batch_is_legal(batch)
        checked = [config for queue in state.kept.values() for config, _ in queue]
        launched = [loader.load_sweep_config(master, overrides) for overrides in batch]
        again = loader.load_sweep_config(master, batch[0])
    assert state.composed == {"full": 2, "twin": 2, "kept": 3}  # the repeated job and `again`: twins
    assert sorted(map(id, launched)) == sorted(map(id, checked))
    assert launched[1] is not launched[2]
    assert again is not launched[0]  # handed over once
    for overrides, config in zip(batch, launched):
        assert_same_config(config, HYDRA_LOAD(loader, master, overrides))


def test_a_kept_config_takes_the_masters_cache_as_it_is_at_launch(sweep):
    """Hydra's launcher composes after resolving values of the master (hydra.sweep.dir): a config
    kept from the check carries the master's cache as the launch finds it."""
    loader, master = sweep(["+task=polyfit"])
    with sweep_configs.installed():
        checking_sweeper(loader, master).validate_batch_is_legal([["+task=polyfit"]])
        master._metadata.resolver_cache["now"]["%Y"] = "resolved after the check"
        launched = loader.load_sweep_config(master, ["+task=polyfit"])
    assert launched._metadata.resolver_cache["now"]["%Y"] == "resolved after the check"


def test_installed_restores_hydra_on_leaving(sweep):
    from hydra.plugins.sweeper import Sweeper

    check = Sweeper.validate_batch_is_legal
    with pytest.raises(RuntimeError):
        with sweep_configs.installed():
            assert ConfigLoaderImpl.load_sweep_config is not HYDRA_LOAD
            raise RuntimeError
    assert ConfigLoaderImpl.load_sweep_config is HYDRA_LOAD
    assert Sweeper.validate_batch_is_legal is check


def test_a_full_batch_of_twins_is_composed_once_each(sweep):
    """A sweep of 8 values: one full composition, 7 from the twin, the launcher takes all 8."""
    loader, master = sweep(["+task=polyfit"])
    batch = [["+task=polyfit", f"optimizer.lr={0.01 * (index + 1)}"] for index in range(8)]
    with sweep_configs.installed() as state:
        checking_sweeper(loader, master).validate_batch_is_legal(batch)
        launched = [loader.load_sweep_config(master, overrides) for overrides in batch]
    assert state.composed == {"full": 1, "twin": 7, "kept": 8}
    for overrides, config in zip(batch, launched):
        assert_same_config(config, HYDRA_LOAD(loader, master, overrides))


def test_a_twins_copy_takes_the_masters_cache_as_it_is_now(sweep):
    """Hydra copies the master's resolver cache into each job as it composes it; a value the
    master resolved since the twin was composed is in the job's cache too."""
    loader, master = sweep(["+task=polyfit"])
    with sweep_configs.installed() as state:
        loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.1"])
        master._metadata.resolver_cache["now"]["%Y"] = "resolved after the twin"
        ours = loader.load_sweep_config(master, ["+task=polyfit", "optimizer.lr=0.2"])
    assert state.composed["twin"] == 1
    assert ours._metadata.resolver_cache["now"]["%Y"] == "resolved after the twin"
    assert_same_config(ours, HYDRA_LOAD(loader, master, ["+task=polyfit", "optimizer.lr=0.2"]))


def test_past_the_cap_the_launcher_composes_from_the_twin(sweep, monkeypatch):
    """A check of a large batch keeps at most MAX_KEPT configs (memory); the launcher composes the
    others from their twin, as exactly."""
    monkeypatch.setattr(sweep_configs, "MAX_KEPT", 3)
    loader, master = sweep(["+task=polyfit"])
    batch = [["+task=polyfit", f"optimizer.lr={0.01 * (index + 1)}"] for index in range(8)]
    with sweep_configs.installed() as state:
        checking_sweeper(loader, master).validate_batch_is_legal(batch)
        assert sum(map(len, state.kept.values())) == 3
        launched = [loader.load_sweep_config(master, overrides) for overrides in batch]
    assert state.composed == {"full": 1, "twin": 7 + 5, "kept": 3}
    for overrides, config in zip(batch, launched):
        assert_same_config(config, HYDRA_LOAD(loader, master, overrides))
