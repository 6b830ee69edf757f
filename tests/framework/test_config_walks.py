"""``framework.config_walks``: the containers below a node are found without reading plain
values, and the missing keys are OmegaConf's own."""

from __future__ import annotations

import pytest
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from framework.config_walks import child_config, missing_keys

CONFIGS = {
    "flat": {"a": 1, "b": MISSING, "c": None},
    "nested": {"model": {"width": MISSING, "depth": 3, "inner": {"x": MISSING}}, "none_dict": None},
    "lists": {"items": [1, MISSING, {"deep": MISSING}, [MISSING, 2]], "empty": []},
    "interpolated": {"source": {"x": MISSING, "y": 1}, "alias": "${source}", "value": "${source.y}",
                     "missing_container": MISSING},
    "top_list": [MISSING, {"a": MISSING}],
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_missing_keys_are_omegaconfs(name):
    config = OmegaConf.create(CONFIGS[name])
    assert missing_keys(config) == OmegaConf.missing_keys(config)
    assert missing_keys(config)  # each case has some


def test_the_structured_schemas_missing_values():
    from framework.schema import FrameworkConfig

    config = OmegaConf.structured(FrameworkConfig)
    assert missing_keys(config) == OmegaConf.missing_keys(config) == {"data", "model", "loss", "optimizer",
                                                                      "scheduler"}


def test_child_config_reads_containers_and_interpolations_only(monkeypatch):
    config = OmegaConf.create(CONFIGS["interpolated"] | {"plain": 5, "listed": [1, 2]})
    assert child_config(config, "source") is config._get_node("source")
    assert isinstance(child_config(config, "listed"), ListConfig)
    assert isinstance(child_config(config, "alias"), DictConfig)  # resolved, as config["alias"] is
    assert child_config(config, "alias").y == 1
    for plain in ("plain", "value", "missing_container"):
        assert child_config(config, plain) is None
    # Of the interpolations, only containers are kept, and a broken one fails as node[key] fails.
    broken = OmegaConf.create({"a": "${oc.env:FRAMEWORK_TEST_UNSET_VARIABLE}", "b": {"c": 1}})
    monkeypatch.delenv("FRAMEWORK_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(InterpolationResolutionError):
        child_config(broken, "a")
    assert child_config(broken, "b") is broken._get_node("b")


def test_a_walk_reads_no_plain_value(monkeypatch):
    """What makes the walks cheap: ``node[key]`` is asked only for interpolations."""
    read = []
    getitem = DictConfig.__getitem__

    def counting(self, key):
        read.append(key)
        return getitem(self, key)

    config = OmegaConf.create({"model": {"width": 3, "depth": MISSING, "inner": {"x": 1.5, "y": "text"}},
                               "alias": "${model.inner}", "rate": 0.1})
    monkeypatch.setattr(DictConfig, "__getitem__", counting)
    assert missing_keys(config) == {"model.depth"}
    assert read == ["alias"]
