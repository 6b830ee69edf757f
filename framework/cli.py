"""``python -m framework``: plugins -> registry -> ConfigStore -> Hydra -> one run per job.

The CLI owns error reporting. It asks Hydra to let exceptions through (HYDRA_FULL_ERROR=1 for the
Hydra call only) and prints one paragraph per error; a user who sets HYDRA_FULL_ERROR=1 themselves
gets the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from framework.errors import FrameworkError
from framework.locations import config_dir
from framework.plugin_manager import build_registry, create_plugin_manager
from framework.run import run_training
from framework.schema import store_configs

log = logging.getLogger("framework")
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
CONFIG_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


def main() -> None:
    user_wants_traceback = os.environ.get(FULL_ERROR_ENV) == "1"
    os.environ[FULL_ERROR_ENV] = "1"
    try:
        manager = create_plugin_manager()
        registry = build_registry(manager)
        store_configs(registry)

        def train(cfg: DictConfig) -> float | None:
            hydra_config = HydraConfig.get()
            try:
                result = run_training(
                    cfg,
                    manager=manager,
                    registry=registry,
                    run_dir=Path(hydra_config.runtime.output_dir),
                    task=hydra_config.runtime.choices.get("task"),
                )
            except FrameworkError as error:
                # Logged here so the run folder's log file holds it too.
                log.error("%s", error)
                error.reported = True
                raise
            return result["final_loss"]  # what sweepers (Optuna) minimise

        app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(train)
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except BrokenPipeError:  # output piped into a reader that stopped early (| head)
        sys.stderr.close()
        sys.exit(1)
    except Exception as error:
        if user_wants_traceback:
            raise
        message, code = describe_error(error)
        if message:
            print(message, file=sys.stderr)
        sys.exit(code)
    finally:
        if not user_wants_traceback:
            os.environ.pop(FULL_ERROR_ENV, None)


def describe_error(error: Exception) -> tuple[str | None, int]:
    """(one-paragraph message or None if already reported, exit status) for any error."""
    if isinstance(error, FrameworkError):
        return (None if getattr(error, "reported", False) else f"error: {error}"), error.exit_code
    if isinstance(error, (hydra.errors.HydraException, OmegaConfBaseException)):
        parts = [str(error).strip()]
        if isinstance(error.__cause__, OmegaConfBaseException):
            parts.append(str(error.__cause__).strip())
        hint = available_keys_hint(error)
        if hint:
            parts.append(hint)
        return "error: " + "\n".join(parts), CONFIG_ERROR_EXIT
    return (
        f"error: unexpected {type(error).__name__}: {error}\n"
        f"Set {FULL_ERROR_ENV}=1 for the full traceback.",
        1,
    )


def available_keys_hint(error: Exception) -> str | None:
    """For a misspelt key (model.degre=3), list the keys that exist beside it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = error.__cause__ if error.__cause__ is not None else error
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or not cause.full_key:
        return None
    full_key = cause.full_key
    parent, _, leaf = full_key.rpartition(".")
    # Compose again without the offending override to see what the parent node holds.
    overrides = [
        arg for arg in sys.argv[1:]
        if not arg.startswith("-") and arg.split("=", 1)[0].lstrip("+~") != full_key
    ]
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = sorted(str(key) for key in node.keys())
    except Exception:  # the hint is a courtesy; the error itself is already clear
        return None
    where = parent or "the top level"
    return f"'{leaf}' is not a key of {where}; keys there: {', '.join(keys)}"
