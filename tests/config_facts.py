"""What tells two OmegaConf configs apart, node by node, for tests that compare a config the
framework made with the one Hydra or OmegaConf makes."""

from __future__ import annotations

from omegaconf import DictConfig
from omegaconf.nodes import ValueNode


def node_facts(node, path: str = "") -> list:
    """Everything that tells two configs apart: each node's class, metadata (types, flags, key)
    and inherited struct/readonly flags, and each value as stored (unresolved)."""
    metadata = {name: value for name, value in vars(node._metadata).items() if name != "resolver_cache"}
    facts = [(path, type(node).__name__, repr(metadata), node._get_flag("struct"), node._get_flag("readonly"))]
    if isinstance(node, ValueNode):
        value = node._value()
        return facts + [(path, type(value).__name__, repr(value))]
    if node._is_none() or node._is_missing() or node._is_interpolation():
        return facts + [(path, "content", repr(node._value()))]
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        facts += node_facts(node._get_node(key), f"{path}.{key}")
    return facts
