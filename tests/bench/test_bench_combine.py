"""``python bench/combine.py``: several bench runs as one table, each goal judged on the median
of the runs. The runs here are results.json files written from bench rows with known medians, so
that the medians and marks can be checked without measuring anything."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.measure import Goal, Row
from tests.conftest import REPO_ROOT, cli_env

MACHINE = {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0+cpu", "torch_threads": 2, "python": "3.11.7",
           "platform": "Linux", "device": "cpu (no CUDA device)"}


def write_run(folder, rows, *, machine=MACHINE, tiny=False, finished="2026-11-25T00:00:00"):
    folder.mkdir(parents=True)
    record = {"command": "python bench/run.py", "tiny": tiny, "finished": finished, "seconds": 1.0,
              "machine": machine, "cases": [row.as_json(machine) for row in rows]}
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def rows(step_framework, epoch_framework, job_seconds, check="ok"):
    """Three rows, one per kind of goal: a ratio (plain 100 µs), a speedup (plain 5 s) and a time."""
    return [
        Row("w1", "W1 per step", "fw", "plain", "step", step_framework, 100e-6, goal=Goal("ratio", 1.05)),
        Row("w4", "W4 vs DataLoader", "fw", "loader", "epoch", epoch_framework, 5.0, goal=Goal("speedup", 50)),
        Row("multirun", "multirun per job", "fw", "hydra", "job", job_seconds, 0.2, goal=Goal("seconds", 0.1),
            check=check),
        Row("w1", "no goal", "fw", "plain", "step", 2.0, 1.0),
    ]


def combine(*arguments, cwd):
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "combine.py"), *map(str, arguments)],
                          cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=120)


def test_each_goal_is_judged_on_the_median_of_the_runs(tmp_path):
    # W1: 1.02, 1.30 (one noisy run), 1.04 -> median 1.04, met; W4: 50×, 40×, 45× -> 45×, not met;
    # multirun: 90, 120, 95 ms -> 95 ms, met.
    folders = [write_run(tmp_path / "a", rows(102e-6, 0.1, 0.090)),
               write_run(tmp_path / "b", rows(130e-6, 0.125, 0.120)),
               write_run(tmp_path / "c", rows(104e-6, 5.0 / 45, 0.095))]
    completed = combine(*folders, "--out", tmp_path / "out", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr

    table = (tmp_path / "out" / "combined.md").read_text()
    assert completed.stdout == table
    assert "| W1 per step | step | 1.020×, 1.300×, 1.040× | 1.040× | ≤ 1.05× | ✓ |" in table
    assert "| W4 vs DataLoader | epoch | 50.0× faster, 40.0× faster, 45.0× faster | 45.0× faster | ≥ 50× faster | ✗ |" in table
    assert "| multirun per job | job | 90.0 ms, 120.0 ms, 95.0 ms | 95.0 ms | ≤ 100.0 ms | ✓ |" in table
    assert "| no goal | step | 2.000×, 2.000×, 2.000× | 2.000× | – | – |" in table
    assert "Test CPU" in table

    combined = json.loads((tmp_path / "out" / "combined.json").read_text())
    medians = {row["name"]: (row["median"], row["goal_met"]) for row in combined["rows"]}
    assert medians["W1 per step"][1] is True and abs(medians["W1 per step"][0] - 1.04) < 1e-9
    assert medians["W4 vs DataLoader"] == (45.0, False)


def test_a_failed_check_in_any_run_is_no_goal_met(tmp_path):
    folders = [write_run(tmp_path / "a", rows(100e-6, 0.1, 0.05)),
               write_run(tmp_path / "b", rows(100e-6, 0.1, 0.05, check="the framework did not train"))]
    completed = combine(*folders, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "| multirun per job | job | 50.0 ms, 50.0 ms | 50.0 ms | ≤ 100.0 ms | ✗ (check failed) |" in completed.stdout
    assert (tmp_path / "a" / "combined.md").is_file()  # --out defaults to the first run's folder


def test_runs_that_do_not_belong_in_one_table_are_refused(tmp_path):
    one = write_run(tmp_path / "one", rows(100e-6, 0.1, 0.05))
    elsewhere = write_run(tmp_path / "elsewhere", rows(100e-6, 0.1, 0.05), machine={**MACHINE, "cores": 16})
    fewer = write_run(tmp_path / "fewer", rows(100e-6, 0.1, 0.05)[:2])
    tiny = write_run(tmp_path / "tiny", rows(100e-6, 0.1, 0.05), tiny=True)
    other_goal = rows(100e-6, 0.1, 0.05)
    other_goal[0].goal = Goal("ratio", 1.10)
    regoaled = write_run(tmp_path / "regoaled", other_goal)
    no_record = tmp_path / "no_record"
    no_record.mkdir()
    (no_record / "results.json").write_text("[]")
    for other, message in ((elsewhere, "cores 2 and 16"), (fewer, "different rows"), (regoaled, "goals"),
                           (tiny, "--tiny"), (tmp_path / "missing", "not a bench/run.py result"),
                           (no_record, "no machine and cases")):
        completed = combine(one, other, cwd=tmp_path)
        assert completed.returncode == 2 and message in completed.stderr, (other, completed.stderr)
        assert not (one / "combined.md").exists()
    completed = combine(one, cwd=tmp_path)
    assert completed.returncode == 2 and "two runs or more" in completed.stderr
    completed = combine(one, tmp_path / "one", cwd=tmp_path)
    assert completed.returncode == 2 and "given twice" in completed.stderr
