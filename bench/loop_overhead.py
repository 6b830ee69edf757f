"""The framework's loop against the plain tutorial loop, side by side in one process.

    python bench/loop_overhead.py [--repeats 5] [--tasks polyfit,sine]

For each reference task: the plain PyTorch loop of tests/framework/test_reference_tasks.py, the
framework with no loggers, and the framework with the console and TensorBoard loggers, run in
turn (interleaved, so machine noise hits all three alike). Prints the median seconds and the
ratio to the plain loop. A benchmark, not a test: nothing here asserts a time.
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
            for variant, extra in (("bare", ["logger=[]"]), ("logged", []))
        }

    print(f"{'task':<10}{'plain s':>10}{'framework s':>13}{'ratio':>8}{'+loggers s':>12}{'ratio':>8}")
    for task in args.tasks.split(","):
        times = {"plain": [], "bare": [], "logged": []}
        with tempfile.TemporaryDirectory() as run_dir:
            for _ in range(args.repeats):
                started = time.perf_counter()
                PLAIN_LOOPS[task]()
                times["plain"].append(time.perf_counter() - started)
                for variant in ("bare", "logged"):
                    started = time.perf_counter()
                    run_training(configs[(task, variant)], manager=manager, registry=registry,
                                 run_dir=Path(run_dir) if variant == "logged" else None, task=task)
                    times[variant].append(time.perf_counter() - started)
        plain, bare, logged = (statistics.median(times[key]) for key in ("plain", "bare", "logged"))
        print(f"{task:<10}{plain:>10.4f}{bare:>13.4f}{bare / plain:>8.3f}{logged:>12.4f}{logged / plain:>8.3f}")


if __name__ == "__main__":
    main()
