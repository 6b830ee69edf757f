"""Hydra's ``run_job`` for the jobs this process runs, with its copies made cheap (issue 10
point 5, issue 12 point 7).

Every job Hydra runs in this process (a single run, the basic launcher's and the vectorized
launcher's sweep jobs) goes through ``hydra.core.utils.run_job``, which copies the job's config
four times. The ``hydra`` node is most of a config (150 KB, Hydra's own settings), and two of
the copies exist only to be thrown away; they were a quarter of a sweep job's cost beyond its
training (measured on a polyfit job: ≈ 20 of 76 ms). :func:`run_job` is Hydra 1.3's, statement
for statement, except for those two copies, how the others are made, and how the ``.hydra/``
files' text is made:

- **The job's config without its ``hydra`` node** (what the task function gets, and
  ``.hydra/config.yaml``): Hydra copies the whole config, then deletes the node from the copy.
  Here the copy takes an empty node in its place (:func:`config_without_hydra`), then deletes it.
- **The Hydra config after the job's folder is known**: Hydra makes a second masked copy of the
  ``hydra`` node (``HydraConfig.set_config``) to take the folder it has just set. Here the first
  copy takes the same value in place.
- **The copies that remain** (``HydraConfig``'s masked copy of the ``hydra`` node and
  ``JobReturn.hydra_cfg``) are made through pickle (:mod:`framework.config_copies`), ≈ 2.5×
  faster than ``copy.deepcopy``, and the masked copy copies the node once where OmegaConf's
  ``masked_copy`` copies it twice.
- **The ``.hydra/`` files**: the same text, written by :func:`framework.config_yaml.save_config`,
  which reuses the text of what did not change since the last job (≈ 7 ms a job).

``JobReturn.hydra_cfg`` stays Hydra's deep copy of ``HydraConfig``'s config: the copy's ``hydra``
node has the copy for parent, where ``HydraConfig``'s has the job's config, so an interpolation
of a job's key in ``hydra.job.env_set`` or ``hydra.job.chdir`` fails there as with Hydra.

Everything written (``.hydra/*.yaml``), the task function's argument, ``HydraConfig`` during
the job, the working folder, the environment, logging, the callbacks and the ``JobReturn`` are
those of Hydra's function (tests/framework/test_job_runs.py runs both and compares). It is
used only with the Hydra release it mirrors (:data:`MIRRORED_HYDRA`); with another, Hydra's
own runs the job.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from textwrap import dedent
from typing import Any, Iterator

import hydra
from hydra.core import utils as hydra_utils
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from framework.config_copies import copied, copied_without, masked
from framework.config_yaml import save_config

MIRRORED_HYDRA = "1.3."  # the releases whose run_job this one mirrors
# The modules that call run_job by the name they imported: a single run, the basic launcher.
HYDRA_RUN_JOB = hydra_utils.run_job  # taken before installed() replaces the name
CALLERS = ("hydra._internal.hydra", "hydra._internal.core_plugins.basic_launcher")


def mirrors_installed_hydra() -> bool:
    return hydra.__version__.startswith(MIRRORED_HYDRA)


def config_without_hydra(config: DictConfig) -> DictConfig:
    """A copy of ``config`` without its ``hydra`` node, as a task function receives it."""
    # The node is copied as an empty config, which is then deleted (1.5 against 7-13 ms a job
    # for a deep copy of the whole config).
    task = copied_without(config, "hydra")
    with read_write(task), open_dict(task):
        if "hydra" in task:
            del task["hydra"]
    return task


def set_hydra_config(config: DictConfig) -> None:
    """``HydraConfig.instance().set_config(config)``, its masked copy of the ``hydra`` node made
    once (OmegaConf's ``masked_copy`` copies it twice)."""
    OmegaConf.set_readonly(config.hydra, True)
    hydra_node_type = OmegaConf.get_type(config, "hydra")
    assert hydra_node_type is not None and issubclass(hydra_node_type, HydraConf)
    instance = HydraConfig.instance()
    instance.cfg = masked(config, "hydra")
    instance.cfg.hydra._set_parent(config)


def run_job(
    task_function,
    config: DictConfig,
    job_dir_key: str,
    job_subdir_key: str | None,
    hydra_context,
    configure_logging: bool = True,
) -> JobReturn:
    """``hydra.core.utils.run_job``, with the copies described above made cheap."""
    if not mirrors_installed_hydra():
        return HYDRA_RUN_JOB(task_function, config, job_dir_key, job_subdir_key, hydra_context, configure_logging)
    hydra_utils._check_hydra_context(hydra_context)
    callbacks = hydra_context.callbacks

    old_cwd = os.getcwd()
    orig_hydra_cfg = HydraConfig.instance().cfg

    # init Hydra config for config evaluation
    set_hydra_config(config)

    output_dir = str(OmegaConf.select(config, job_dir_key))
    if job_subdir_key is not None:
        subdir = str(OmegaConf.select(config, job_subdir_key))
        output_dir = os.path.join(output_dir, subdir)

    # The job's folder, in its config and in HydraConfig's copy of its hydra node (where Hydra
    # makes that copy again).
    for holder in (config, HydraConfig.instance().cfg):
        with read_write(holder.hydra.runtime):
            with open_dict(holder.hydra.runtime):
                holder.hydra.runtime.output_dir = os.path.abspath(output_dir)

    _chdir = None
    try:
        ret = JobReturn()
        task_cfg = config_without_hydra(config)

        ret.cfg = task_cfg
        hydra_cfg = copied(HydraConfig.instance().cfg)
        assert isinstance(hydra_cfg, DictConfig)
        ret.hydra_cfg = hydra_cfg
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        assert isinstance(overrides, list)
        ret.overrides = overrides
        # handle output directories here
        Path(str(output_dir)).mkdir(parents=True, exist_ok=True)

        _chdir = hydra_cfg.hydra.job.chdir

        if _chdir is None:
            if hydra_utils.version.base_at_least("1.2"):
                _chdir = False

        if _chdir is None:
            url = "https://hydra.cc/docs/1.2/upgrades/1.1_to_1.2/changes_to_job_working_dir/"
            hydra_utils.deprecation_warning(
                message=dedent(
                    f"""\
                    Future Hydra versions will no longer change working directory at job runtime by default.
                    See {url} for more information."""
                ),
                stacklevel=2,
            )
            _chdir = True

        if _chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()

        if configure_logging:
            hydra_utils.configure_log(config.hydra.job_logging, config.hydra.verbose)

        if config.hydra.output_subdir is not None:
            hydra_output = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
            save_config(task_cfg, "config.yaml", hydra_output)
            save_config(hydra_cfg, "hydra.yaml", hydra_output)
            save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)

        with hydra_utils.env_override(hydra_cfg.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as e:
                ret.return_value = e
                ret.status = JobStatus.FAILED

        ret.task_name = JobRuntime.instance().get("name")

        hydra_utils._flush_loggers()

        callbacks.on_job_end(config=config, job_return=ret)

        return ret
    finally:
        HydraConfig.instance().cfg = orig_hydra_cfg
        if _chdir:
            os.chdir(old_cwd)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """For the length of the block, Hydra runs the jobs of this process through :func:`run_job`:
    a single run, the basic launcher's, and those of any launcher whose module binds the name
    meanwhile (joblib's runs its jobs here with ``n_jobs=1``). Worker processes (joblib's,
    submitit's) import Hydra's own.

    Hydra's own name is replaced too: its plugin scan executes the launchers' modules again,
    which then import ``run_job`` from ``hydra.core.utils`` anew. On leaving, every Hydra module
    that took :func:`run_job` gets Hydra's back."""
    import importlib

    modules: list[Any] = [hydra_utils, *(importlib.import_module(name) for name in CALLERS)]
    if mirrors_installed_hydra():
        for module in modules:
            module.run_job = run_job
    try:
        yield
    finally:
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in ("hydra", "hydra_plugins") and getattr(module, "run_job", None) is run_job:
                module.run_job = HYDRA_RUN_JOB
