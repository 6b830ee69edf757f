"""What the conditioning doctor costs on each reference task, next to the plain loop's time.

    python bench/doctor.py [--repeats 20] [--tasks polyfit,sine]

For each reference task the run is built once (as a fit builds it, on the CPU), then
:func:`framework.doctor.diagnose` is timed ``--repeats`` times (the first call, which pays for
lazy imports and first-use allocations, is reported apart), and the plain tutorial loop of
tests/framework/test_reference_tasks.py is timed for scale. Prints milliseconds. A benchmark,
not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from framework.build import build_state  # noqa: E402
from framework.devices import resolve_device, resolve_dtype, seed_everything  # noqa: E402
from framework.doctor import diagnose  # noqa: E402
from framework.locations import config_dir  # noqa: E402
from framework.plugin_manager import build_registry, create_plugin_manager  # noqa: E402
from framework.run import checked_trainer  # noqa: E402
from framework.schema import store_configs  # noqa: E402
from tests.framework.test_reference_tasks import PLAIN_LOOPS  # noqa: E402


def built_run(task: str, registry):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+task={task}", "trainer.device=cpu", "logger=[]"])
    trainer = checked_trainer(cfg)
    seed_everything(trainer.seed)
    return build_state(cfg, registry, trainer=trainer, device=resolve_device(trainer.device),
                       dtype=resolve_dtype(trainer.dtype), task=task).run


def milliseconds(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tasks", default=",".join(sorted(PLAIN_LOOPS)))
    args = parser.parse_args()

    registry = build_registry(create_plugin_manager(load_entry_points=False, disabled=()))
    store_configs(registry)
    print(f"{'task':<10}{'doctor first ms':>16}{'doctor ms':>11}{'plain loop ms':>15}{'doctor/loop':>13}")
    for task in args.tasks.split(","):
        run = built_run(task, registry)
        first = milliseconds(lambda: diagnose(run))
        doctor = statistics.median(milliseconds(lambda: diagnose(run)) for _ in range(args.repeats))
        loop = statistics.median(milliseconds(PLAIN_LOOPS[task]) for _ in range(3))
        print(f"{task:<10}{first:>16.2f}{doctor:>11.2f}{loop:>15.1f}{doctor / loop:>13.4f}")


if __name__ == "__main__":
    main()
