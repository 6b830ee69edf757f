"""The csv data source against plain ``pandas.read_csv``, side by side on one generated file.

    python bench/csv_load.py [--rows 2000000] [--repeats 5]

Writes a CSV of ``--rows`` rows and 4 columns (a header, then numbers such as 3.14: 40 MB for
2 million rows, the size of the file issue 8 measured) into a temporary folder, then loads it in turn (interleaved, so machine noise
hits both alike) with ``pandas.read_csv(path)`` and with the csv component's factory, as a run
builds it (through the plugin registry, float32). Each load runs in a fresh subprocess that has
imported the same modules first, so neither inherits the other's memory: it reports the seconds
of the load call and its peak memory above what the process held before it (VmHWM reset just
before the load; ru_maxrss where that is not possible). Prints the medians and the ratios
framework / pandas. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOADERS = ("pandas", "framework")


def write_table(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(0).uniform(0, 10, size=(rows, 4))
    pd.DataFrame(values, columns=["a", "b", "c", "y"]).to_csv(path, index=False, float_format="%.2f")


def status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Set VmHWM back to the current RSS (Linux), so the peak measured is the load's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_one(loader: str, path: str) -> dict:
    """In a child process: import everything, then time one load and take its peak memory."""
    import pandas as pd
    import torch

    from framework.plugin_manager import build_registry, create_plugin_manager

    registry = build_registry(create_plugin_manager(load_entry_points=False, disabled=()))
    component = registry.get("data", "csv")

    def load_with_framework():
        return component.factory(component.config(path=path), dtype=torch.float32)

    load = {"pandas": lambda: pd.read_csv(path), "framework": load_with_framework}[loader]
    before_kib = status_kib("VmRSS") or 0
    exact = reset_peak()
    start = time.perf_counter()
    loaded = load()
    seconds = time.perf_counter() - start
    peak_kib = status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = len(loaded)
    return {"seconds": seconds, "peak_mib": (peak_kib - before_kib) / 1024, "rows": rows, "exact_peak": exact}


def run_child(loader: str, path: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", loader, str(path)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_one(*args.child)))
        return

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        write_table(path, args.rows)
        print(f"{path.name}: {args.rows} rows x 4 columns, {path.stat().st_size / 1e6:.1f} MB; "
              f"{args.repeats} loads each, interleaved, one subprocess per load")
        runs = {loader: [] for loader in LOADERS}
        for _ in range(args.repeats):
            for loader in LOADERS:
                runs[loader].append(run_child(loader, path))
    for loader in LOADERS:
        assert {run["rows"] for run in runs[loader]} == {args.rows}, f"{loader} did not load every row"
    medians = {loader: {key: statistics.median(run[key] for run in runs[loader]) for key in ("seconds", "peak_mib")}
               for loader in LOADERS}
    if not all(run["exact_peak"] for loader in LOADERS for run in runs[loader]):
        print("(peak memory from ru_maxrss: it includes what the imports took)")
    print(f"{'loader':<12}{'median s':>10}{'peak MiB':>10}")
    for loader in LOADERS:
        print(f"{loader:<12}{medians[loader]['seconds']:>10.3f}{medians[loader]['peak_mib']:>10.1f}")
    pandas_run, framework_run = medians["pandas"], medians["framework"]
    print(f"{'ratio':<12}{framework_run['seconds'] / pandas_run['seconds']:>10.2f}"
          f"{framework_run['peak_mib'] / pandas_run['peak_mib']:>10.2f}   (framework / pandas)")


if __name__ == "__main__":
    main()
