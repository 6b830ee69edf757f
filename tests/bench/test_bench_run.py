"""``python bench/run.py --tiny`` runs every case end to end and writes its table and JSON, so the
benchmark command never rots. Tiny sizes measure nothing: no time is asserted, only that every
case gave finite medians and ratios, that both sides of each trained alike (the command's own
checks), and that the table and the JSON hold every row."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import REPO_ROOT, cli_env

# bench/run.py's cases, by name: the test names them itself, so a case dropped from the command
# fails here.
CASES = {"w1", "w2", "w3", "w4", "tasks", "startup", "multirun", "answers", "vectorized", "cuda"}
GOALS_FROM_THE_ISSUE = {  # (case, metric, limit) of rows with a goal, at least these
    ("w1", "ratio", 1.05), ("w1", "ratio", 1.40), ("w2", "ratio", 1.05), ("w2", "ratio", 1.40),
    ("w3", "ratio", 1.01), ("w4", "speedup", 50), ("w4", "ratio", 1.10), ("tasks", "ratio", 1.03),
    ("startup", "ratio", 1.20),
    ("startup", "ratio", 1.10), ("multirun", "seconds", 0.1), ("answers", "seconds", 1.0),
    ("vectorized", "ratio", 2.0), ("vectorized", "ratio", 5.0),
}


def test_tiny_run_writes_every_case(tmp_path):
    out = tmp_path / "results"
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--tiny", "--out", str(out)],
                               cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    record = json.loads((out / "results.json").read_text())
    rows = record["cases"]
    assert {row["case"] for row in rows} == CASES
    assert record["tiny"] is True
    for key in ("cpu", "cores", "torch", "device"):
        assert record["machine"][key], key
    measured = [row for row in rows if row["skipped"] is None]
    skipped = [row for row in rows if row["skipped"] is not None]
    # Only the GPU case may be skipped, and only where torch sees no CUDA device.
    assert all(row["case"] == "cuda" for row in skipped)
    for row in measured:
        assert row["check"] == "ok", row
        for key in ("framework_median", "plain_median", "ratio"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (row["name"], key, row[key])
        assert math.isclose(row["ratio"], row["framework_median"] / row["plain_median"])
        assert row["framework"] and row["plain"] and row["machine"] == record["machine"]
        if row["goal"] is not None:
            assert isinstance(row["goal_met"], bool), row["name"]
    goals = {(row["case"], row["goal"]["metric"], row["goal"]["limit"]) for row in measured if row["goal"]}
    assert GOALS_FROM_THE_ISSUE <= goals

    table = (out / "results.md").read_text()
    assert completed.stdout.strip() == table.strip()  # what it printed is what it wrote
    for row in rows:
        assert f"| {row['name']} |" in table, row["name"]
    assert record["machine"]["cpu"] in table and record["machine"]["torch"] in table


def test_unknown_case_is_refused_naming_the_cases(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--cases", "w1,w9",
                                "--out", str(tmp_path)], cwd=tmp_path, env=cli_env(), capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 2
    assert "w9" in completed.stderr and "multirun" in completed.stderr
    assert not (tmp_path / "results.json").exists()
