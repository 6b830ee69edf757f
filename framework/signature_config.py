"""Config dataclasses derived from a torch class's own signature, so its options stay torch's.

Used by the built-in optimizer and scheduler plugins; third-party plugins wrapping a torch class
can use it too. Annotations are narrowed to what OmegaConf can validate: ``float | Tensor``
becomes ``float``, tuples become lists, ``X | None`` becomes ``Optional[X]``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, List, Optional

import torch
from omegaconf import MISSING

from framework.ranges import RANGE_KEY, Range

_SIMPLE = (bool, int, float, str)


def _narrow(annotation: Any) -> Any:
    """The OmegaConf-friendly type for a torch annotation."""
    if annotation in _SIMPLE:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not torch.Tensor]
        optional = type(None) in members
        members = [a for a in members if a is not type(None)]
        if len(members) == 1:
            narrowed = _narrow(members[0])
            return Optional[narrowed] if optional else narrowed
        return Any
    if origin in (tuple, list):
        items = {_narrow(a) for a in typing.get_args(annotation) if a is not Ellipsis}
        return List[items.pop()] if len(items) == 1 else List[Any]
    return Any


def config_from_signature(
    target: type, *, name: str, skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
    ranges: dict[str, Range] | None = None,
) -> type:
    """A dataclass with one field per keyword of ``target.__init__`` (less ``skip``).

    Parameters without a default become mandatory (``???``); ``defaults`` replaces torch's
    default for some fields (``None`` makes the field optional). ``ranges`` declares the valid
    range of the fields it names (a name the signature lacks is ignored, so one table can serve
    several classes).
    """
    defaults = defaults or {}
    ranges = ranges or {}
    hints = typing.get_type_hints(target.__init__)
    fields = []
    for parameter in inspect.signature(target.__init__).parameters.values():
        if parameter.name in ("self", *skip) or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        kind = _narrow(hints.get(parameter.name, Any))
        default = defaults.get(parameter.name, parameter.default)
        if default is inspect.Parameter.empty:
            default = MISSING
        elif default is None and kind is not Any:
            kind = Optional[kind]
        metadata = {RANGE_KEY: ranges[parameter.name]} if parameter.name in ranges else {}
        if isinstance(default, (tuple, list)):
            field = dataclasses.field(default_factory=lambda value=list(default): list(value), metadata=metadata)
        else:
            field = dataclasses.field(default=default, metadata=metadata)
        fields.append((parameter.name, kind, field))
    return dataclasses.make_dataclass(name, fields)


def options(config: Any) -> dict[str, Any]:
    """A component config's settings as keyword arguments (without the added ``name``)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    values.pop("name", None)
    return values
