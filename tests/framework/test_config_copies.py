"""``framework.config_copies`` makes the copies ``copy.deepcopy`` and ``OmegaConf.masked_copy``
make: node for node (classes, metadata, flags, values, parents), on the framework's composed
configs, whose component schemas are classes made at run time."""

from __future__ import annotations

import copy
import pickle

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from framework import config_copies
from framework.config_copies import copied, copied_without, masked
from framework.locations import config_dir
from tests.config_facts import node_facts


@pytest.fixture
def composed(registry):
    """The config of +task=polyfit as a job gets it, the hydra node included."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            yield compose(config_name="config", overrides=["+task=polyfit", "optimizer.lr=0.01"],
                          return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def parents(config) -> list:
    """For each node, by path: whether its parent is the container that holds it."""
    found = []

    def walk(node, path):
        if isinstance(node, DictConfig) and not (node._is_none() or node._is_missing() or node._is_interpolation()):
            for key in node.keys():
                child = node._get_node(key)
                found.append((f"{path}.{key}", child._get_parent() is node))
                walk(child, f"{path}.{key}")

    walk(config, "")
    return found


def test_the_composed_config_holds_classes_pickle_cannot_name(composed):
    """What the copies must get past: deepcopy keeps these classes by reference, plain pickle
    refuses them."""
    schema = OmegaConf.get_type(composed, "model")
    assert schema.__module__ == "types"
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(composed)


def test_copied_is_deepcopy(composed):
    ours, theirs = copied(composed), copy.deepcopy(composed)
    assert node_facts(ours) == node_facts(theirs) == node_facts(composed)
    assert parents(ours) == parents(theirs)
    assert OmegaConf.get_type(ours, "model") is OmegaConf.get_type(composed, "model")
    assert ours._get_parent() is theirs._get_parent() is composed._get_parent()
    ours.optimizer.lr = 0.5  # a copy: the original keeps its value
    assert composed.optimizer.lr == 0.01
    assert dict(ours._metadata.resolver_cache) == dict(theirs._metadata.resolver_cache)


def test_a_child_keeps_its_parent_and_a_child_of_elsewhere_is_taken_in(composed):
    """Copying a node keeps its parent by reference, as deepcopy does; a container whose child
    has another parent (HydraConfig's masked config) gets a copy whose child has the copy for
    parent, as deepcopy gives, without copying that other parent along."""
    node = composed._get_node("trainer")
    ours, theirs = copied(node), copy.deepcopy(node)
    assert ours._get_parent() is theirs._get_parent() is composed
    assert node_facts(ours) == node_facts(theirs)

    hydra_config = OmegaConf.masked_copy(composed, "hydra")
    hydra_config.hydra._set_parent(composed)  # as HydraConfig.set_config leaves it
    ours, theirs = copied(hydra_config), copy.deepcopy(hydra_config)
    assert ours.hydra._get_parent() is ours and theirs.hydra._get_parent() is theirs
    assert node_facts(ours) == node_facts(theirs)
    assert list(ours.keys()) == ["hydra"]
    assert hydra_config.hydra._get_parent() is composed  # put back


def test_masked_is_masked_copy(composed):
    ours, theirs = masked(composed, "hydra"), OmegaConf.masked_copy(composed, "hydra")
    assert node_facts(ours) == node_facts(theirs)
    assert parents(ours) == parents(theirs)
    assert ours._metadata.flags == theirs._metadata.flags == {}
    assert ours.hydra._get_parent() is ours


def test_copied_without_is_deepcopy_with_the_node_taken_as_empty(composed):
    node = composed._get_node("hydra")
    ours = copied_without(composed, "hydra")
    theirs = copy.deepcopy(composed, memo={id(node): OmegaConf.create({})})
    assert node_facts(ours) == node_facts(theirs)
    assert len(ours._get_node("hydra")) == 0
    assert len(composed.hydra) > 0


def test_what_pickle_cannot_take_is_copied_by_deepcopy(composed, monkeypatch):
    def refuse(*args, **kwargs):
        raise pickle.PicklingError("refused on purpose")

    monkeypatch.setattr(config_copies, "_copied", refuse)
    assert node_facts(copied(composed)) == node_facts(composed)
    node = composed._get_node("hydra")
    assert node_facts(copied_without(composed, "hydra")) == node_facts(
        copy.deepcopy(composed, memo={id(node): OmegaConf.create({})}))


def test_a_value_node_and_objects_are_copied_as_deepcopy_copies_them():
    node = OmegaConf.create({"x": 3})._get_node("x")
    assert copied(node)._value() == copy.deepcopy(node)._value() == 3

    class Thing:
        pass

    thing = Thing()
    config = OmegaConf.create({"o": thing, "n": {"m": 1}}, flags={"allow_objects": True})
    # deepcopy shares objects held under allow_objects; so do these copies.
    assert copied(config)._get_node("o")._value() is thing is copy.deepcopy(config)._get_node("o")._value()
    assert copied_without(config, "n")._get_node("o")._value() is thing
