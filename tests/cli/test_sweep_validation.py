"""The sweep summary shows ``final_val_loss`` when some job has one, and only then."""

from __future__ import annotations

import csv

import pytest

from framework.sweeps import SUMMARY_COLUMNS, write_summary
from tests.cli.test_sweeps import launch_sweep, table_order


def test_a_sweep_with_a_validation_set_shows_final_val_loss_beside_final_loss(tmp_path):
    sweep = launch_sweep(tmp_path, "+task=polyfit", "trainer.max_steps=30", "data.val_fraction=0,0.2")
    assert sweep.returncode == 0, sweep.describe()
    rows = sweep.summary_rows()
    # polyfit is a least-squares fit: its optimality gap is shown too, after final_val_loss.
    assert list(rows[0]) == ["job", "status", "final_loss", "final_val_loss", "optimality_gap",
                             *SUMMARY_COLUMNS[3:]], rows
    by_job = {row["job"]: row for row in rows}
    split, whole = sweep.result("data.val_fraction=0.2"), sweep.result("data.val_fraction=0")
    assert float(by_job["data.val_fraction=0.2"]["final_val_loss"]) == pytest.approx(split["final_val_loss"], rel=1e-9)
    assert whole["final_val_loss"] is None and by_job["data.val_fraction=0"]["final_val_loss"] == ""
    markdown = (sweep.sweep_dir / "summary.md").read_text()
    header = "| rank | job | final_loss | final_val_loss | optimality_gap | steps | wall_s | stop_reason | status |"
    assert header in markdown and header in sweep.stdout, sweep.describe()
    assert f"{split['final_val_loss']:.6g}" in markdown
    assert table_order(sweep.stdout) == [row["job"] for row in rows]


def row(job: str, final_loss: float, final_val_loss: float | None = None) -> dict:
    return {"job": job, "status": "completed", "final_loss": final_loss, "steps": 5, "wall_s": 0.1,
            "stop_reason": "max_steps", "device": "cpu", "overrides": job, "error": "",
            "final_val_loss": final_val_loss}


def test_a_summary_without_any_final_val_loss_has_no_such_column(tmp_path):
    markdown = write_summary(tmp_path, [row("a", 0.5), row("b", 0.7)])
    assert "final_val_loss" not in markdown
    with open(tmp_path / "summary.csv", newline="") as file:
        assert tuple(next(csv.reader(file))) == SUMMARY_COLUMNS


def test_a_summary_shows_final_val_loss_when_one_job_has_it(tmp_path):
    markdown = write_summary(tmp_path, [row("a", 0.5), row("b", 0.7, 0.75)])
    assert "| 2 | b | 0.7 | 0.75 | 5 |" in markdown and "| 1 | a | 0.5 | — | 5 |" in markdown
    with open(tmp_path / "summary.csv", newline="") as file:
        assert [line["final_val_loss"] for line in csv.DictReader(file)] == ["", "0.75"]
