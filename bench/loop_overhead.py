"""The framework's loop against the plain tutorial loop, side by side in one process.

    python bench/loop_overhead.py [--repeats 5] [--tasks polyfit,sine]

For each reference task: the plain PyTorch loop of tests/framework/test_reference_tasks.py, the
framework with no loggers and no run folder, the framework with no loggers writing checkpoints
into a run folder every 100 steps (and at the end, with model.safetensors), and the framework
with the console and TensorBoard loggers and its run folder, run in turn (interleaved, so
machine noise hits all alike). Prints the median seconds and the ratio to the plain loop. A
benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from framework.locations import config_dir  # noqa: E402
from framework.plugin_manager import build_registry, create_plugin_manager  # noqa: E402
from framework.run import run_training  # noqa: E402
from framework.schema import store_configs  # noqa: E402
from tests.framework.test_reference_tasks import PLAIN_LOOPS  # noqa: E402


# Variant -> its overrides. "framework": the loop alone (no run folder, so nothing is saved).
VARIANTS = {
    "framework": ["logger=[]"],
    "+checkpoints": ["logger=[]", "trainer.checkpoint_every=100"],
    "+loggers": [],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(sorted(PLAIN_LOOPS)))
    args = parser.parse_args()

    manager = create_plugin_manager(load_entry_points=False, disabled=())
    registry = build_registry(manager)
    store_configs(registry)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        configs = {
            (task, variant): compose(config_name="config", overrides=[f"+task={task}", "trainer.device=cpu", *extra])
            for task in args.tasks.split(",")
            for variant, extra in VARIANTS.items()
        }

    print(f"{'task':<10}{'plain s':>10}" + "".join(f"{label + ' s':>16}{'ratio':>7}" for label in VARIANTS))
    for task in args.tasks.split(","):
        times = {"plain": [], **{variant: [] for variant in VARIANTS}}
        for _ in range(args.repeats):
            started = time.perf_counter()
            PLAIN_LOOPS[task]()
            times["plain"].append(time.perf_counter() - started)
            for variant in VARIANTS:
                with tempfile.TemporaryDirectory() as run_dir:  # a fresh run folder, as every run has
                    started = time.perf_counter()
                    run_training(configs[(task, variant)], manager=manager, registry=registry,
                                 run_dir=None if variant == "framework" else Path(run_dir), task=task)
                    times[variant].append(time.perf_counter() - started)
        plain = statistics.median(times["plain"])
        cells = "".join(f"{statistics.median(times[v]):>16.4f}{statistics.median(times[v]) / plain:>7.3f}"
                        for v in VARIANTS)
        print(f"{task:<10}{plain:>10.4f}{cells}")


if __name__ == "__main__":
    main()
