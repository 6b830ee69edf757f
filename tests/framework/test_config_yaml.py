"""``framework.config_yaml`` writes the text ``OmegaConf.to_yaml`` writes, for one config and
for a run of configs where only some entries change (its kept texts reused), on the configs
Hydra composes for the framework and on values YAML writes in unusual ways."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from framework.config_yaml import ConfigYaml, save_config
from framework.locations import config_dir

AWKWARD_VALUES = {
    "int_vs_string": [1, "1", 1.0, True, "true", "null", None, "", " ", "~", "yes", "1e3", ".inf"],
    "floats": [float("inf"), float("-inf"), float("nan"), 1e-300, 0.1 + 0.2],
    "long_quoted": "a line:\n" + "word " * 60 + "\n\ttabbed # not a comment: {braces} [brackets]\n",
    "long_plain": "word " * 40,
    "unicode": "naïve ∑ 日本 \u2028 emoji 🙂",
    "empty": {"dict": {}, "list": [], "nested": [[], {}, [[]]]},
    "int_keys": {1: "one", "1": "string one"},
    "colons": {"a: b": "c: d", "- dash": "- item", "#": "#"},
    "deep": {"a": {"b": {"c": {"d": [1, {"e": [2, 3]}]}}}},
    "key" * 50: "a key too long for a simple key",
}


def expected(config) -> str:
    return OmegaConf.to_yaml(config)


@pytest.mark.parametrize("shape", ["flat", "under_one_key", "single_value"])
def test_awkward_values_are_written_as_omegaconf_writes_them(shape):
    config = {"flat": AWKWARD_VALUES, "under_one_key": {"hydra": AWKWARD_VALUES},
              "single_value": {"only": 3}}[shape]
    config = OmegaConf.create(config)
    writer = ConfigYaml()
    assert writer.text(config) == expected(config)
    assert writer.text(config) == expected(config)  # from the kept texts
    assert writer.kept  # they were kept


def test_a_run_of_configs_where_some_entries_change():
    writer = ConfigYaml()
    base = {"hydra": {"help": {"header": "long " * 50}, "job": {"id": 0, "name": "x"},
                      "overrides": {"task": ["a=1"]}, "empty": {}},
            "model": {"n": 3}}
    single = {"hydra": dict(base["hydra"])}
    for job in range(6):
        for config in (base, single):
            config["hydra"]["job"] = {"id": job, "name": "x" if job % 2 else "y"}
            config["hydra"]["overrides"] = {"task": [f"a={job}"] * (job % 3)}
            composed = OmegaConf.create(config)
            assert writer.text(composed) == expected(composed)


def test_lists_and_empty_configs():
    writer = ConfigYaml()
    for config in (OmegaConf.create([]), OmegaConf.create({}), OmegaConf.create(["x=1", "y=${z}"]),
                   OmegaConf.create({"hydra": {}}), OmegaConf.create({"hydra": []})):
        assert writer.text(config) == expected(config)


@pytest.mark.parametrize("task", ["polyfit", "legendre", "linear"])
def test_the_framework_configs_hydra_composes(task, tmp_path, registry):
    GlobalHydra.instance().clear()
    writer = ConfigYaml()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            for rate in ("0.1", "0.01", "0.1"):
                config = compose(config_name="config", overrides=[f"+task={task}", f"optimizer.lr={rate}"],
                                 return_hydra_config=True)
                for part in (config, config.hydra.overrides.task):
                    assert writer.text(part) == expected(part)
                hydra_only = OmegaConf.masked_copy(config, "hydra")
                assert writer.text(hydra_only) == expected(hydra_only)
                save_config(hydra_only, "hydra.yaml", tmp_path / rate)
                assert (tmp_path / rate / "hydra.yaml").read_text(encoding="utf-8") == expected(hydra_only)
    finally:
        GlobalHydra.instance().clear()


def test_top_level_keys_python_takes_for_one_are_written_apart():
    """1, 1.0 and True are one dict key to Python and three keys to YAML."""
    writer = ConfigYaml()
    for key in (1, True, 1.0, "1", 1):
        config = OmegaConf.create({key: {"a": 1}})
        assert writer.text(config) == expected(config)


def test_values_beyond_jsons_kinds_are_written_whole():
    writer = ConfigYaml()
    config = OmegaConf.create({"bytes": b"\x00\x01binary", "text": "x"})
    assert writer.text(config) == expected(config)
    assert not writer.kept


def test_one_object_in_two_entries_keeps_its_anchor():
    """YAML writes an object met twice once, with an anchor; entries written apart would not."""
    from pathlib import Path

    shared = Path("/tmp/shared")
    config = OmegaConf.create({"a": shared, "b": shared})
    assert "*id001" in expected(config)
    assert ConfigYaml().text(config) == expected(config)
