"""``OmegaConf.to_yaml``'s text for the configs each job saves in ``.hydra/``, made cheap by
reusing the text of the parts that did not change since the last job (issue 10 point 5, issue
12 point 7).

A sweep job's ``hydra.yaml`` is ≈ 5 KB of Hydra's own settings (help texts, logging, launcher
and sweeper), and PyYAML's emitter, pure Python, took ≈ 7 of a job's ≈ 100 ms beyond its
training writing it, while from one job to the next only ``hydra.overrides``, ``hydra.job`` and
``hydra.runtime`` change. libyaml's C emitter is not an answer: it wraps long quoted strings
differently (Hydra's help header), so the files would differ from Hydra's.

In the block style Hydra's dumper uses, a mapping's text is its entries' texts one after the
other: each entry starts on a line of its own at its mapping's indentation, and how it is
written depends on nothing but its key, its value and that indentation. The emitter carries one
thing from an entry to the next, ``open_ended``, and only block scalars (``|``, ``>``) set it,
which OmegaConf's dumper never asks for. So the text of ``{k1: v1, k2: v2}`` is the text of
``{k1: v1}`` followed by that of ``{k2: v2}``, and each entry's text can be kept and reused
while its value is the same. The entries are split at the top level, and one level further in
where the top level is a single mapping (``hydra.yaml``'s ``hydra:``). A value is the same when
its ``repr`` is: for JSON's kinds of values (dicts, lists, strings, numbers, booleans, None) it
tells every type and value apart that YAML writes differently. A config holding anything else
is written whole (:func:`plain`).
tests/framework/test_config_yaml.py compares the text with ``OmegaConf.to_yaml``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf._utils import get_omega_conf_dumper

MAX_KEPT_ENTRIES = 512  # entries' texts kept; past it the memory starts again


def dumped(container: Any) -> str:
    """``OmegaConf.to_yaml``'s text of a container (``to_container``'s result)."""
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=get_omega_conf_dumper())


class ConfigYaml:
    """The text of configs, with each top-level entry's text kept while its value is the same."""

    def __init__(self) -> None:
        self.kept: dict[tuple[Any, ...], str] = {}

    def text(self, config: DictConfig | ListConfig) -> str:
        """``OmegaConf.to_yaml(config)``."""
        container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
        if not isinstance(container, dict) or not container or not plain(container):
            return dumped(container)
        if len(container) == 1:
            (key, value), = container.items()
            if isinstance(value, dict) and value:
                return self.entries_under(key, value)
        return "".join(self.entry((), key, value) for key, value in container.items())

    def entries_under(self, key: Any, mapping: dict) -> str:
        """The text of ``{key: mapping}``: its head line (``hydra:``), then each entry of
        ``mapping`` one level in."""
        texts = [self.entry((key,), inner, value) for inner, value in mapping.items()]
        head = texts[0][:texts[0].index("\n") + 1]
        if not head.endswith(":\n") or not all(text.startswith(head) for text in texts):
            return dumped({key: mapping})  # a key YAML writes otherwise (a complex key)
        return head + "".join(text[len(head):] for text in texts)

    def entry(self, outer: tuple[Any, ...], key: Any, value: Any) -> str:
        """The text of one entry, nested in the single-entry mappings ``outer`` names."""
        # reprs throughout: as dict keys 1, 1.0 and True are one key, and YAML writes them apart.
        memo = (repr(outer), repr(key), repr(value))
        text = self.kept.get(memo)
        if text is None:
            nested = {key: value}
            for name in reversed(outer):
                nested = {name: nested}
            text = dumped(nested)
            if len(self.kept) >= MAX_KEPT_ENTRIES:
                self.kept.clear()
            self.kept[memo] = text
        return text


def plain(container: Any) -> bool:
    """Whether ``container`` holds only JSON's kinds of values (checked in C, ≈ 0.03 ms for a
    ``hydra.yaml``). Anything else (a path, bytes, an object under ``allow_objects``) may be one
    object in two entries, which the whole text writes once with an anchor (``&id001``) and
    refers to after (``*id001``), and entries written apart would write twice."""
    try:
        json.dumps(container)
    except (TypeError, ValueError):
        return False
    return True


_CONFIG_YAML = ConfigYaml()


def save_config(config: DictConfig | ListConfig, filename: str, output_dir: Path) -> None:
    """``hydra.core.utils._save_config``: the file Hydra writes, with the same text."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(str(output_dir / filename), "w", encoding="utf-8") as file:
        file.write(_CONFIG_YAML.text(config))
