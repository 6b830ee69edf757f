"""Copies of OmegaConf configs made through pickle, ≈ 2.5× faster than ``copy.deepcopy``
(issue 10 point 5, issue 12 point 7).

Every sweep job copies its config several times (from its twin, without its ``hydra`` node for
the task, the ``hydra`` node for ``HydraConfig`` and for the ``JobReturn``), and
``copy.deepcopy`` walks a config in Python through OmegaConf's ``__deepcopy__``: ≈ 9 ms for a
polyfit job's config, ≈ 25 ms a job in all. Pickle walks it in C, calling OmegaConf's own
``__getstate__``/``__setstate__`` (made for pickling configs) on each node: ≈ 3.5 ms.

The copy is the one ``deepcopy`` makes: every node, its metadata and its flags, with the
copied node keeping its original's parent (as OmegaConf's ``__deepcopy__`` does: "parent is
retained, but not copied"). Two things are not pickled as values:

- **Classes** (the ``object_type`` of structured configs) are kept by reference, as deepcopy
  keeps them. The framework's component schemas are made at run time
  (``framework.schema.named_schema``) and cannot be found by name, so a table of this process
  holds them while the copy is made.
- **The parent** of the copied node is kept by reference, not copied with it.

Where a config holds something pickle cannot take, or may hold objects (``allow_objects``, which
deepcopy shares and pickle would copy), the copy is ``copy.deepcopy``'s. A node below the
copied one's children whose parent lies outside the copy is not looked for (OmegaConf makes
none; ``HydraConfig`` re-parents only the ``hydra`` node, a child).
"""

from __future__ import annotations

import copy
import io
import pickle
import threading
from typing import Any, TypeVar

from omegaconf import DictConfig
from omegaconf.basecontainer import BaseContainer

Config = TypeVar("Config", bound=BaseContainer)

# Objects the copy being made in this thread refers to rather than copies, by id.
_copying = threading.local()


def _referred(key: int) -> Any:
    return _copying.referred[key]


# What pickle raises for a value it cannot take: the copy is then deepcopy's.
PICKLE_REFUSALS = (pickle.PicklingError, TypeError, AttributeError)


class _ConfigPickler(pickle.Pickler):
    """Pickles a config, referring to classes and to the objects in ``referred``, and pickling
    each object of ``replaced`` (by id) as its reduction there."""

    def __init__(self, file, referred: tuple[Any, ...], replaced: dict[int, tuple]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.referred = {id(item) for item in referred}
        self.replaced = replaced

    def reducer_override(self, obj: Any) -> Any:
        key = id(obj)
        if key in self.replaced:
            return self.replaced[key]
        if isinstance(obj, type) or key in self.referred:
            _copying.referred[key] = obj
            return _referred, (key,)
        return NotImplemented


def _copied(config: Config, replaced: dict[int, tuple]) -> Config:
    parent = config.__dict__["_parent"]
    content = config.__dict__.get("_content")  # a value node has none
    children = content.values() if isinstance(content, dict) else content if isinstance(content, list) else ()
    # As OmegaConf's __deepcopy__, each child's copy has the copy for parent, also a child whose
    # parent is elsewhere (HydraConfig's hydra node has the job's config for parent).
    elsewhere = [(child, child.__dict__["_parent"]) for child in children if child.__dict__["_parent"] is not config]
    buffer = io.BytesIO()
    pickler = _ConfigPickler(buffer, (parent,) if parent is not None else (), replaced)
    _copying.referred = {}
    try:
        for child, _ in elsewhere:
            child.__dict__["_parent"] = config
        pickler.dump(config)
        return pickle.loads(buffer.getvalue())
    finally:
        _copying.referred = {}
        for child, its_parent in elsewhere:
            child.__dict__["_parent"] = its_parent


def copied(config: Config) -> Config:
    """``copy.deepcopy(config)``."""
    if not config._get_flag("allow_objects"):  # deepcopy shares such objects; pickle would copy them
        try:
            return _copied(config, {})
        except PICKLE_REFUSALS:
            pass
    return copy.deepcopy(config)


def _empty_config() -> DictConfig:
    return DictConfig({})


def copied_without(config: DictConfig, key: str) -> DictConfig:
    """A copy of ``config`` whose node ``key`` was copied as an empty config (the caller deletes
    it): ``copy.deepcopy(config, memo={id(node): OmegaConf.create({})})``, without copying the
    node."""
    node = config._get_node(key) if key in config else None
    if node is None:
        return copied(config)
    if not config._get_flag("allow_objects"):
        try:
            result = _copied(config, {id(node): (_empty_config, ())})
        except PICKLE_REFUSALS:
            pass
        else:
            result._get_node(key)._set_parent(result)  # as deepcopy's memo puts it in
            return result
    return copy.deepcopy(config, memo={id(node): _empty_config()})


def masked(config: DictConfig, key: str) -> DictConfig:
    """``OmegaConf.masked_copy(config, key)``: a new config holding a copy of the node ``key``
    (OmegaConf's copies the node twice, through ``__setitem__``)."""
    node_copy = copied(config._get_node(key))
    # Set without a second copy, then with the flags masked_copy's config has (none).
    result = DictConfig(content={key: node_copy}, flags={"no_deepcopy_set_nodes": True})
    result._metadata.flags.pop("no_deepcopy_set_nodes")
    result._invalidate_flags_cache()
    return result
