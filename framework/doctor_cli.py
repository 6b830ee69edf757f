"""``python -m framework.doctor +task=NAME OVERRIDES``: the conditioning report alone.

The config is composed as ``python -m framework`` composes it (the same plugins, presets and
validation) and the run is built (data, model, loss, optimizer, scheduler), but nothing is
trained, no logger is built and no run folder is made. Bad input exits as the CLI does: 2 for a
bad config, 3 for bad data, 4 for a failing plugin, with a one-paragraph message on stderr.
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: python -m framework.doctor +task=NAME [OVERRIDE ...]

Builds the run the same overrides would train (no training, no run folder) and prints the
conditioning report: the design matrix's condition number and feature scales for a
least-squares problem, and for SGD the largest stable learning rate (2/L) against optimizer.lr.
Example: python -m framework.doctor +task=sine optimizer.lr=1e-4"""


def diagnose_overrides(overrides: list[str]):
    """(the task's name, the built run's :class:`framework.doctor.Diagnosis`) for these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from framework.build import build_state
    from framework.devices import resolve_device, resolve_dtype, seed_everything
    from framework.doctor import diagnose
    from framework.errors import ConfigError
    from framework.locations import config_dir
    from framework.plugin_manager import build_registry, create_plugin_manager
    from framework.resume import warm_start
    from framework.run import checked_trainer
    from framework.schema import null_group_overrides, store_configs
    from framework.sweeps import MULTIRUN_FLAGS

    overrides = null_group_overrides(list(overrides))
    if any(item in MULTIRUN_FLAGS for item in overrides):
        raise ConfigError("python -m framework.doctor diagnoses one run; leave out -m/--multirun and give one "
                          "value per setting")
    registry = build_registry(create_plugin_manager())
    store_configs(registry)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="framework"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    task = cfg.hydra.runtime.choices.get("task")
    with open_dict(cfg):
        del cfg["hydra"]  # the run folder's settings: this command makes none
    trainer = checked_trainer(cfg)
    device, dtype = resolve_device(trainer.device), resolve_dtype(trainer.dtype)
    seed_everything(trainer.seed)
    state = build_state(cfg, registry, trainer=trainer, device=device, dtype=dtype, task=task)
    # The parameters a resumed or warm-started run would start from (only a local estimate of L
    # depends on them).
    if trainer.resume is not None or trainer.init_from is not None:
        warm_start(state, trainer.resume or trainer.init_from)
    return task, diagnose(state.run)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        task, diagnosis = diagnose_overrides(args)
    except Exception as error:
        if user_wants_traceback:
            raise
        from framework.cli import describe_error

        message, code = describe_error(error)
        print(message, file=sys.stderr)
        return code
    for line in diagnosis.lines:
        print(line)
    for warning in diagnosis.warnings:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
