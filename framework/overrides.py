"""Command-line overrides as text, before Hydra reads them (no torch here: the quick answers
use it too): an override's key, a value quoted for Hydra's grammar, where the overrides end."""

from __future__ import annotations

import re


def override_key(override: str) -> str:
    """``optimizer.lr`` of ``optimizer.lr=0.1``, ``task`` of ``+task=polyfit``."""
    return override.partition("=")[0].lstrip("+~")


def hydra_value(value: str) -> str:
    """A string as one Hydra override value: quoted when it holds Hydra syntax (job folders
    hold '=' and ',')."""
    if re.fullmatch(r"[\w./:+@~-]+", value):
        return value
    return '"' + value.replace('"', '\\"') + '"'


def last_override_index(args: list[str]) -> int:
    """Where the last override is in ``args`` (-1: none): an argument that is neither an option
    nor an option's value, as Hydra's own argument parser defines its options."""
    from hydra._internal.utils import get_args_parser

    options = {option: action for action in get_args_parser()._actions for option in action.option_strings}
    last, previous = -1, None
    for index, arg in enumerate(args):
        action = options.get(previous)
        # An option with nargs None takes the next argument; one with "?" (--info) only a choice.
        is_value = action is not None and (action.nargs is None or (action.nargs == "?" and arg in action.choices))
        if not arg.startswith("-") and not is_value:
            last = index
        previous = arg
    return last
