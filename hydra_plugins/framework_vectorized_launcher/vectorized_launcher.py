"""A thin Hydra launcher: jobs that differ only in numbers train as one batched computation
(issue 12); the grouping, the batched fit and the jobs' outputs are ``framework.vectorized``'s."""

# No ``from __future__ import annotations``: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.framework_vectorized_launcher.vectorized_launcher.VectorizedLauncher"
    # The most memory one batch may take for its activations and its record of every step, in
    # MiB; a group that needs more is split into batches that fit.
    max_batch_mib: float = 1024.0
    # The most jobs in one batch; null: as many as fit in max_batch_mib.
    max_batch_jobs: Optional[int] = None


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="framework")


def register() -> None:
    """Make ``hydra/launcher=vectorized`` known to Hydra however the framework is installed.

    Hydra finds plugins by listing the folders of the ``hydra_plugins`` namespace package, and an
    editable install (``pip install -e``) shows it none: its import hook maps this module without
    a folder on the path. Importing this module has stored the config; Hydra's own
    ``Plugins.register`` adds the class (nothing when the scan found it). No torch is imported:
    ``--help`` calls it too (framework/quick_answers.py)."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(VectorizedLauncher)


class VectorizedLauncher(Launcher):
    def __init__(self, max_batch_mib: float = 1024.0, max_batch_jobs: Optional[int] = None) -> None:
        self.max_batch_mib = max_batch_mib
        self.max_batch_jobs = max_batch_jobs
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Each job's config comes from load_sweep_config, which the framework's CLI makes cheap
        # for every launcher (framework/sweep_configs.py).
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from framework.vectorized import launch

        return launch(self, job_overrides, initial_job_idx)
