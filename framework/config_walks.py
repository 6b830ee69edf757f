"""Walking a composed config for its checks (missing values, unknown keys, ranges) without
resolving the values that are not containers (issue 10 point 5, issue 12 point 7).

``node[key]`` resolves a value on every read, through OmegaConf's validation and interpolation
machinery; the run's three checks read every value of the config that way, ≈ 9 ms a run, and
every job of a vectorized sweep is checked twice (for its batch, then in its replayed run).
To find the containers below a node, only the children that are containers, or interpolations
(which may resolve to one), need reading: :func:`child_config` reads those as ``node[key]``
does and leaves plain values alone.
"""

from __future__ import annotations

from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig


def keys_of(node: DictConfig | ListConfig) -> Iterator[Any]:
    return iter(range(len(node))) if isinstance(node, ListConfig) else iter(node.keys())


def child_config(node: DictConfig | ListConfig, key: Any) -> DictConfig | ListConfig | None:
    """``node[key]`` where it is a config, else None, reading only what may be one: a
    container child as it is, an interpolation resolved (it may point to a container)."""
    child = node._get_node(key)
    if child is None:
        return None
    if child._is_interpolation():
        value = node[key]
        return value if isinstance(value, (DictConfig, ListConfig)) else None
    if isinstance(child, (DictConfig, ListConfig)) and not (child._is_none() or child._is_missing()):
        return child
    return None


def missing_keys(config: DictConfig | ListConfig) -> set[str]:
    """``OmegaConf.missing_keys(config)``: the full keys of values that are missing (``???``)."""
    found: set[str] = set()

    def gather(node: DictConfig | ListConfig) -> None:
        for key in keys_of(node):
            child = node._get_node(key)
            if child is not None and child._is_missing():
                found.add(node._get_full_key(key))
                continue
            inner = child_config(node, key)
            if inner is not None:
                gather(inner)

    gather(config)
    return found
