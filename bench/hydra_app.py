"""A Hydra app that does nothing: the reference for what Hydra's basic launcher costs per job
(bench/run.py's multirun case).

    python bench/hydra_app.py -m 'seed=range(8)'
"""

from __future__ import annotations

from dataclasses import dataclass

import hydra
from hydra.core.config_store import ConfigStore


@dataclass
class Config:
    seed: int = 0


ConfigStore.instance().store(name="config", node=Config)


@hydra.main(version_base="1.3", config_path=None, config_name="config")
def main(cfg: Config) -> float:
    return float(cfg.seed)


if __name__ == "__main__":
    main()
