"""The one paragraph (and exit status) a user is shown for an error, without importing torch.

Both ways ``python -m framework`` answers use it: the full path (framework/cli.py, after the
plugins are loaded) and the quick answers that need no plugin (framework/quick_answers.py), so a
misspelt key reads the same whichever answered it.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shlex

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from framework.errors import FrameworkError, OutputError
from framework.overrides import hydra_value

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
CONFIG_ERROR_EXIT = 2
# Write failures no one can fix but by freeing space: reported as such wherever they come from.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def describe_error(error: Exception) -> tuple[str | None, int]:
    """(one-paragraph message, or None where the job already logged it; exit status)."""
    reported = getattr(error, "reported", False)
    if isinstance(error, FrameworkError):
        return (None if reported else f"error: {error}"), error.exit_code
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        # Hydra's list of config search paths says nothing a user can act on.
        # Nor does its advice to append a misspelt key with +, which would only hide the typo.
        text = str(error).split("Config search path:")[0]
        parts = [without_details(line for line in text.strip().splitlines()
                                 if not line.startswith("To append to your config"))]
        keys_hint = available_keys_hint(error)
        if isinstance(error.__cause__, OmegaConfBaseException) and keys_hint is None:
            # (A misspelt key's cause says it in OmegaConf's terms: "Key 'x' not in 'TrainerConfig'".)
            parts.append(without_details(str(error.__cause__).strip().splitlines()))
        for hint in (keys_hint, whole_number_hint(error), group_options_hint(error), quoting_hint(error)):
            if hint:
                parts.append(hint)
        return "error: " + "\n".join(parts), CONFIG_ERROR_EXIT
    if isinstance(error, OSError) and error.errno in DISK_FULL:  # Hydra writing its snapshot
        return f"error: {OutputError(error.filename or 'the run folder', error)}", OutputError.exit_code
    hint = f"Set {FULL_ERROR_ENV}=1 for the full traceback."
    if reported:
        return hint, 1
    return f"error: unexpected {type(error).__name__}: {error}\n{hint}", 1


# OmegaConf's account of where an error happened, under its message: the key is named there or
# in a hint below, and the types are internal names (TrainerConfig, NAdamConfig).
DETAIL_LINES = ("full_key:", "reference_type=", "object_type=")


def without_details(lines) -> str:
    return "\n".join(line for line in lines if not line.strip().startswith(DETAIL_LINES))


def whole_number_hint(error: Exception) -> str | None:
    """For a number where a whole one is expected (trainer.max_steps=1e3: YAML reads a float)."""
    cause = error.__cause__ if error.__cause__ is not None else error
    match = re.match(r"Value '([^']*)' of type '\w+' could not be converted to Integer", str(cause))
    if match is None or not getattr(cause, "full_key", None):
        return None
    try:
        value = float(match.group(1))
    except ValueError:
        return f"{cause.full_key} takes a whole number"
    if value.is_integer():
        return f"{cause.full_key} takes a whole number: write {int(value)}"
    return f"{cause.full_key} takes a whole number, not {match.group(1)}"


def group_options_hint(error: Exception) -> str | None:
    """For an unknown name in a list of components (``logger=[tensorbord]``), where Hydra names
    the missing config alone: the names there are."""
    group, _, name = (getattr(error, "missing_cfg_file", None) or "").rpartition("/")
    if not group or getattr(error, "options", None):  # Hydra lists a single choice's options itself
        return None
    options = group_names(group)
    if not options:
        return None
    return f"'{name}' is not a {group}; the {group} names are: {', '.join(options)}"


def group_names(group: str) -> list[str]:
    """The names a config group offers: the components stored in Hydra's ConfigStore, and the
    presets among the framework's config files (where Hydra looks for the group)."""
    from hydra.core.config_store import ConfigStore

    from framework.locations import config_dir

    node: object = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    names = {key.removesuffix(".yaml") for key in node if key.endswith(".yaml")} if isinstance(node, dict) else set()
    names.update(path.stem for path in (config_dir() / group).glob("*.yaml"))
    return sorted(names)


def quoting_hint(error: Exception) -> str | None:
    """For an override Hydra's grammar cannot read, where the value holds Hydra's syntax."""
    override = getattr(error, "override", None)
    key, equals, value = (override if isinstance(override, str) else "").partition("=")
    # A folder of a sweep's job is named after its overrides: it holds '=' (and ','). A list,
    # dict or function call is Hydra's syntax, left as it is.
    if not equals or not re.search(r"[=\s]", value) or value[:1] in "'\"[{(":
        return None
    return (f"in {override!r}, a value holding '=' or spaces (a sweep job's folder) goes in quotes: "
            f"{shlex.quote(f'{key}={hydra_value(value)}')}")


def available_keys_hint(error: Exception) -> str | None:
    """For a misspelt key (model.degre=3), list the keys that exist beside it."""
    cause = error.__cause__ if error.__cause__ is not None else error
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or not cause.full_key:
        return None
    parent, _, leaf = cause.full_key.rpartition(".")
    if dataclasses.is_dataclass(cause.object_type):
        keys = [field.name for field in dataclasses.fields(cause.object_type)]
    elif cause.parent_node is not None:
        keys = [str(key) for key in cause.parent_node.keys()]
    else:
        return None
    return f"'{leaf}' is not a key of {parent or 'the top level'}; keys there: {', '.join(sorted(keys))}"
