"""``python -m framework.doctor`` as a user runs it: the report alone, no run folder, and the CLI's
exit statuses on bad input; and the report a real ``python -m framework`` run logs before it diverges."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy

from tests.conftest import cli_env, run_cli


def run_doctor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.doctor", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)


def sine_bound() -> float:
    """2/L of the sine task's SSE, from numpy's singular values of [1, x, x², x³]."""
    x = numpy.linspace(-math.pi, math.pi, 2000)
    largest = numpy.linalg.svd(numpy.stack([x**0, x, x**2, x**3], axis=1), compute_uv=False)[0]
    return 1 / largest**2


def test_the_doctor_prints_its_report_and_the_warning_and_makes_no_run_folder(tmp_path):
    done = run_doctor("+task=sine", "optimizer.lr=1e-4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("doctor: least squares (sse), 4 parameters on 2000 rows: design-matrix condition number")
    (warning,) = [line for line in lines if line.startswith("warning: ")]
    assert f"optimizer.lr = 0.0001 exceeds the stable bound for plain SGD, 2/L = {sine_bound():.3g}" in warning
    assert list(tmp_path.iterdir()) == []  # no outputs/, no log: nothing was run


def test_the_doctor_exits_2_on_a_bad_override(tmp_path):
    misspelt = run_doctor("+task=sine", "optimizer.lrr=1e-4", cwd=tmp_path)
    assert misspelt.returncode == 2 and misspelt.stdout == ""
    assert "'lrr' is not a key of optimizer" in misspelt.stderr and "Traceback" not in misspelt.stderr
    out_of_range = run_doctor("+task=sine", "optimizer.lr=-1", cwd=tmp_path)
    assert out_of_range.returncode == 2 and "optimizer.lr=-1.0 is out of range" in out_of_range.stderr


def test_a_run_above_the_bound_warns_before_it_diverges(tmp_path):
    done = run_cli("+task=sine", "optimizer.lr=1e-4", "logger=[console]", cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    log = done.stdout + done.stderr
    warning = log.index("exceeds the stable bound for plain SGD")
    assert warning < log.index("step 1/2000") < log.index("training diverged: the loss is inf at step")
