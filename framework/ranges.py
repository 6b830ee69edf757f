"""Declared valid ranges of numeric settings, checked on the composed config before any work.

A config dataclass declares each number's range where the field is defined::

    @dataclass
    class ExpConfig:
        rate: float = setting(1.0, gt=0)
        betas: List[float] = setting(default_factory=lambda: [0.9, 0.99], ge=0, lt=1)  # each item

:func:`check_ranges` walks the composed config: every node is typed by its dataclass
(``OmegaConf.get_type``), so the ranges of third-party components are checked exactly like the
built-ins'. NaN is refused unless a range says ``nan=True``; infinity unless a bound names it
(``le=math.inf`` or ``ge=-math.inf``). Null stays "off" for Optional fields (OmegaConf already
refuses null elsewhere).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from framework.config_walks import child_config
from framework.errors import ConfigError

RANGE_KEY = "range"  # the dataclass field metadata key that holds a field's Range
NUMBER_TYPES = (int, float)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: bounds ``gt``/``ge`` below, ``lt``/``le`` above.

    No bound means any finite number. For a list setting the range applies to each item.
    """

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    nan: bool = False  # NaN is a meaningful value of this setting

    def __post_init__(self) -> None:
        if self.gt is not None and self.ge is not None or self.lt is not None and self.le is not None:
            raise ValueError(f"{self!r}: give at most one lower bound (gt or ge) and one upper bound (lt or le)")

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, NUMBER_TYPES):
            return False
        if math.isnan(value):
            return self.nan
        if math.isinf(value) and value not in (self.ge, self.le):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def describe(self) -> str:
        """``> 0``, ``in [0, 1)``, ``a finite number``... as the message's "it must be ..."."""
        low = ("(", self.gt) if self.gt is not None else ("[", self.ge) if self.ge is not None else None
        high = (")", self.lt) if self.lt is not None else ("]", self.le) if self.le is not None else None
        if low and high:
            text = f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        elif low:
            text = f"{'>' if low[0] == '(' else '>='} {_number(low[1])}"
        elif high:
            text = f"{'<' if high[0] == ')' else '<='} {_number(high[1])}"
        else:
            text = "a finite number"
        return f"{text} or nan" if self.nan else text


def _number(bound: float) -> str:
    return "inf" if bound == math.inf else "-inf" if bound == -math.inf else repr(bound)


def setting(
    default: Any = MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    gt: Optional[float] = None,
    ge: Optional[float] = None,
    lt: Optional[float] = None,
    le: Optional[float] = None,
    nan: bool = False,
) -> Any:
    """A dataclass field with a declared :class:`Range` (``rate: float = setting(1.0, gt=0)``);
    with neither ``default`` nor ``default_factory`` the setting is mandatory (``???``)."""
    metadata = {RANGE_KEY: Range(gt=gt, ge=ge, lt=lt, le=le, nan=nan)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def range_of(field: dataclasses.Field) -> Range | None:
    return field.metadata.get(RANGE_KEY)


def _field_types(schema: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(schema)
    except Exception:  # an annotation that names something unimportable here: read fields as they are
        return {field.name: field.type for field in dataclasses.fields(schema)}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) < len(typing.get_args(annotation)) and len(members) == 1:
            return members[0], True
    return annotation, False


def is_numeric(annotation: Any) -> bool:
    """int or float, optional or not, or a list of them (bool is not a number here)."""
    annotation, _ = _strip_optional(annotation)
    if typing.get_origin(annotation) in (list, typing.List, tuple):
        return any(is_numeric(item) for item in typing.get_args(annotation) if item is not Ellipsis)
    return annotation in NUMBER_TYPES


def undeclared_ranges(schema: type) -> list[str]:
    """The numeric fields of a config dataclass that declare no range (for plugin tests)."""
    annotations = _field_types(schema)
    return [field.name for field in dataclasses.fields(schema)
            if is_numeric(annotations.get(field.name, Any)) and range_of(field) is None]


@functools.lru_cache(maxsize=None)
def declared_ranges(schema: type) -> dict[str, tuple[Range, bool]]:
    """{field: (its declared range, whether it may be None)} of a config dataclass; built once
    per class (reading the annotations was a third of a run's config check, which every job of a
    sweep makes)."""
    if not dataclasses.is_dataclass(schema):
        return {}
    annotations = _field_types(schema)
    return {field.name: (range_of(field), _strip_optional(annotations.get(field.name, Any))[1])
            for field in dataclasses.fields(schema) if range_of(field) is not None}


def range_errors(node: Any, path: str = "") -> list[str]:
    """One message per value out of its declared range, under ``node`` (a composed config)."""
    if isinstance(node, ListConfig):
        return [error for index in range(len(node))
                for error in range_errors(child_config(node, index), f"{path}[{index}]")]
    if not isinstance(node, DictConfig):
        return []
    ranges = declared_ranges(OmegaConf.get_type(node))
    errors = []
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            continue  # reported as missing by the run
        where = f"{path}.{key}" if path else str(key)
        declared, optional = ranges.get(key, (None, False))
        if declared is None:  # only containers below hold ranges: plain values are not read
            errors.extend(range_errors(child_config(node, key), where))
            continue
        value = node[key]
        if value is not None:
            items = enumerate(value) if isinstance(value, ListConfig) else [(None, value)]
            for index, item in items:
                if not declared.admits(item):
                    at = where if index is None else f"{where}[{index}]"
                    null = " (or null)" if optional and index is None else ""
                    errors.append(f"{at}={item!r} is out of range: it must be {declared.describe()}{null}")
    return errors


def check_ranges(cfg: DictConfig) -> None:
    """Raise ConfigError naming every setting whose value is outside its declared range."""
    errors = range_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
