"""The one paragraph (and exit status) a user is shown for an error, without importing torch.

Both ways ``python -m framework`` answers use it: the full path (framework/cli.py, after the
plugins are loaded) and the quick answers that need no plugin (framework/quick_answers.py), so a
misspelt key reads the same whichever answered it.
"""

from __future__ import annotations

import dataclasses
import errno

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from framework.errors import FrameworkError, OutputError

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
        parts = ["\n".join(line for line in text.strip().splitlines() if not line.startswith("To append to your config"))]
        if isinstance(error.__cause__, OmegaConfBaseException):
            parts.append(str(error.__cause__).strip())
        hint = available_keys_hint(error)
        if hint:
            parts.append(hint)
        return "error: " + "\n".join(parts), CONFIG_ERROR_EXIT
    if isinstance(error, OSError) and error.errno in DISK_FULL:  # Hydra writing its snapshot
        return f"error: {OutputError(error.filename or 'the run folder', error)}", OutputError.exit_code
    hint = f"Set {FULL_ERROR_ENV}=1 for the full traceback."
    if reported:
        return hint, 1
    return f"error: unexpected {type(error).__name__}: {error}\n{hint}", 1


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
