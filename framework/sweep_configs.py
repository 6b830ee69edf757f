"""Each sweep job's config, composed once and cheaply (issue 10 point 5, issue 12 point 7).

Hydra composes a sweep job's config twice in our process: the sweeper checks every job of a
batch (``Sweeper.validate_batch_is_legal``, "the launcher may be performing this in a different
process") and the launcher composes it again (``ConfigLoader.load_sweep_config``). Each full
composition walks the defaults list and merges every config and schema: 0.1-0.25 s for the
framework's configs, the largest part of a job's cost in a sweep. While :func:`installed` is
active (the CLI's whole Hydra call), ``load_sweep_config`` composes through :class:`SweepConfigs`:

1. **Handed over once.** A config composed for the sweeper's check is kept, and the launcher's
   identical call (same master config, same overrides) takes it: popped, so no two launches
   share (and mutate) one config. The check only composes and discards, so it never sees a
   config that a launcher changes.
2. **Composed from a twin.** A job whose overrides differ from an already composed job's only in
   the values of plain config keys (no config group, no ``+``/``++``/``~``, no ``hydra.*`` key, no
   ``@package``, no sweep) is a deep copy of that job's config, Hydra's pristine result, with the
   differing overrides applied by Hydra's own ``_apply_overrides_to_config``, and the per-job
   fields that Hydra's ``_load_configuration_impl`` and ``load_sweep_config`` set redone the same
   way (``hydra.overrides.task``, ``hydra.job.override_dirname``, ``hydra.job.env_set``,
   ``hydra.runtime.cwd``, the resolver cache). The config groups a job selects decide everything
   else Hydra composes; plain values are applied last, onto nodes that no other override of the
   job touches (:func:`override_slots` refuses overlapping keys), so applying the new values onto
   the twin gives what applying them onto the base gives. Anything else is Hydra's full
   composition.

Joblib's and submitit's workers compose their jobs in their own processes, where nothing is
installed: there, only the sweeper's check is cheaper.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.errors import ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from framework.config_copies import copied

# The configs kept from a check at once (about 150 KB each): past it, a job composed from a twin
# is composed again from it at launch (a deep copy, milliseconds) rather than held; a full
# composition is always kept.
MAX_KEPT = 256
# The twins kept at once: one per combination of config groups (and of other non-value overrides)
# that a sweep uses; past it, the least recently used is composed again when it comes back.
MAX_TWINS = 32

_SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclass
class Twin:
    """A job's config as Hydra composed it, never handed out, and what it was composed from."""

    loader: Any
    master: DictConfig
    overrides: list[Override]
    config: DictConfig


@dataclass
class SweepConfigs:
    """What one installation keeps: the checks' configs for the launchers, and the twins."""

    checking: bool = False  # inside a sweeper's check: what is composed is kept for the launcher
    kept: dict[tuple[int, tuple[str, ...]], deque] = field(default_factory=dict)
    twins: OrderedDict = field(default_factory=OrderedDict)
    composed: dict[str, int] = field(default_factory=lambda: {"full": 0, "twin": 0, "kept": 0})

    def load(self, loader, hydra_load, master: DictConfig, overrides: list[str]) -> DictConfig:
        """``loader.load_sweep_config(master, overrides)``; ``hydra_load`` is Hydra's own."""
        key = (id(master), tuple(overrides))
        if not self.checking and self.kept.get(key):
            config, kept_master = self.kept[key].popleft()
            if not self.kept[key]:
                del self.kept[key]
            if kept_master is master:
                self.composed["kept"] += 1
                # As the launcher's own composition would: the master's resolver cache as it
                # is now, with what the master resolved since the check.
                OmegaConf.copy_cache(from_config=master, to_config=config)
                return config
        config, from_a_twin = self.compose(loader, hydra_load, master, overrides)
        if self.checking and (not from_a_twin or sum(map(len, self.kept.values())) < MAX_KEPT):
            self.kept.setdefault(key, deque()).append((config, master))
        return config

    def compose(self, loader, hydra_load, master: DictConfig, overrides: list[str]) -> tuple[DictConfig, bool]:
        """The job's config, and whether it came from a twin."""
        parsed = parsed_overrides(overrides)
        slots = None if parsed is None else override_slots(loader, master, parsed)
        twin = None if slots is None else self.twins.get(slots)
        if twin is not None and twin.loader is loader and twin.master is master:
            self.twins.move_to_end(slots)
            self.composed["twin"] += 1
            return from_twin(twin, master, parsed), True
        config = hydra_load(loader, master, overrides)
        self.composed["full"] += 1
        if slots is not None:
            self.twins[slots] = Twin(loader, master, parsed, copied(config))
            self.twins.move_to_end(slots)
            while len(self.twins) > MAX_TWINS:
                self.twins.popitem(last=False)
        return config, False


@contextlib.contextmanager
def installed() -> Iterator[SweepConfigs]:
    """For the length of the block, every ``load_sweep_config`` and sweeper check in this process
    goes through one :class:`SweepConfigs`.

    Hydra gives the CLI no handle on its config loader or its sweeper (``hydra.main`` makes both),
    so the two methods are replaced on their classes, and put back on leaving."""
    hydra_load = ConfigLoaderImpl.load_sweep_config
    hydra_check = Sweeper.validate_batch_is_legal
    state = SweepConfigs()

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        return state.load(self, hydra_load, master_config, list(sweep_overrides))

    def validate_batch_is_legal(self, batch) -> None:
        state.kept.clear()  # a previous batch's configs, checked and never launched
        state.checking = True
        try:
            hydra_check(self, batch)
        finally:
            state.checking = False

    ConfigLoaderImpl.load_sweep_config = load_sweep_config
    Sweeper.validate_batch_is_legal = validate_batch_is_legal
    try:
        yield state
    finally:
        ConfigLoaderImpl.load_sweep_config = hydra_load
        Sweeper.validate_batch_is_legal = hydra_check


# ---------------------------------------------------------------------------------- twins


def parsed_overrides(overrides: list[str]) -> list[Override] | None:
    """Hydra's parse of the job's overrides; None where it fails (Hydra's composition then says
    why, with its own message)."""
    try:
        return OverridesParser.create().parse_overrides(overrides=overrides)
    except Exception:
        return None


def value_kind(override: Override) -> str | None:
    """``scalar`` or ``list`` for an override that only sets a plain value, else None.

    A dict is merged into what is there (so onto the twin it would keep the twin's keys); a
    scalar replaces a list's node differently from a list: such pairs are not twins."""
    if (override.is_hydra_override() or override.package is not None or override.is_sweep_override()
            or override.type != OverrideType.CHANGE or override.value_type != ValueType.ELEMENT):
        return None
    value = override.value()
    if isinstance(value, _SCALAR_TYPES):
        return "scalar"
    if isinstance(value, list):
        return "list"
    return None


def override_slots(loader, master: DictConfig, overrides: list[Override]) -> tuple | None:
    """What two jobs must share to be twins: every override's full text, but a plain value's
    (its key and kind only). None when no job can have a twin: config keys that overlap (one
    override's value would land on another's), or a search path that changes what is a group."""
    if OmegaConf.select(master, "hydra.searchpath") or any(
            item.key_or_group == "hydra.searchpath" for item in overrides):
        return None
    slots, config_keys = [], []
    for override in overrides:
        if override.is_hydra_override():
            slots.append(("line", override.input_line))
            continue
        if override.is_sweep_override():
            return None
        # As Hydra's defaults list decides (hydra/_internal/defaults_list.py): a dict value, or a
        # key that is no config group, is applied to the config; the rest selects configs.
        is_config_value = isinstance(override.value(), dict) or not loader.repository.group_exists(
            override.key_or_group)
        if is_config_value:
            config_keys.append(override.key_or_group)
        kind = value_kind(override) if is_config_value else None
        slots.append(("value", override.key_or_group, kind) if kind else ("line", override.input_line))
    if overlapping(config_keys):
        return None
    return tuple(slots)


def overlapping(keys: list[str]) -> bool:
    """Whether a key repeats or lies inside another (``trainer`` and ``trainer.seed``)."""
    ordered = sorted(keys)
    return any(later == earlier or later.startswith(earlier + ".") or later.startswith(earlier + "[")
               for earlier, later in zip(ordered, ordered[1:]))


def from_twin(twin: Twin, master: DictConfig, overrides: list[Override]) -> DictConfig:
    """The job's config: a copy of its twin's, redoing what Hydra does per job."""
    changed = [new for new, old in zip(overrides, twin.overrides) if new.input_line != old.input_line]
    config = copied(twin.config)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(changed, config)
    except OmegaConfBaseException as error:  # as Hydra's load_configuration reports it
        raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from error
    task_overrides = [item for item in overrides if not item.is_hydra_override()]
    hydra = config.hydra
    for index, item in enumerate(task_overrides):
        if hydra.overrides.task[index] != item.input_line:
            hydra.overrides.task[index] = item.input_line
    with open_dict(hydra):
        for key in hydra.job.env_copy:
            hydra.job.env_set[key] = os.environ[key]
    hydra.runtime.cwd = os.getcwd()
    dirname_settings = hydra.job.config.override_dirname
    hydra.job.override_dirname = get_overrides_dirname(
        overrides=task_overrides, kv_sep=dirname_settings.kv_sep, item_sep=dirname_settings.item_sep,
        exclude_keys=dirname_settings.exclude_keys)
    OmegaConf.copy_cache(from_config=master, to_config=config)
    return config
