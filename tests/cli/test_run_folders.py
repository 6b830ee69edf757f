"""Runs and sweeps started together never share a folder, and every sweep job has its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from framework.run_folders import BASIC_SWEEPER, job_folder_name
from tests.conftest import cli_env, run_cli
from tests.framework.compare import curves

# The default folder's own resolver, given one fixed name: every process asks for the same folder
# at once, as runs started in the same second do.
SAME_RUN_FOLDER = "hydra.run.dir=${framework_new_folder:outputs/same}"
SAME_SWEEP_FOLDER = "hydra.sweep.dir=${framework_new_folder:multirun/same}"


def start_together(cwd: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    processes = [subprocess.Popen([sys.executable, "-m", "framework", *args], cwd=cwd, env=cli_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for process, args in zip(processes, commands):
        stdout, stderr = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def test_runs_asking_for_the_same_folder_at_once_each_get_their_own(tmp_path):
    steps = [7, 9, 11, 13]
    commands = [["+task=linear", f"trainer.max_steps={n}", "trainer.log_every=1", "logger=[tensorboard]",
                 SAME_RUN_FOLDER] for n in steps]
    for done in start_together(tmp_path, commands):
        assert done.returncode == 0, done.stderr
    folders = sorted((tmp_path / "outputs").iterdir())
    assert [folder.name for folder in folders] == ["same", "same_2", "same_3", "same_4"]
    # Each folder holds one run: its own result and a curve of its own length, no mixed points.
    by_steps = {json.loads((folder / "result.json").read_text())["steps"]: folder for folder in folders}
    assert sorted(by_steps) == steps
    for count, folder in by_steps.items():
        assert [step for step, _ in curves(folder)["train/loss"]] == list(range(1, count + 1))


def test_sweeps_asking_for_the_same_folder_at_once_each_keep_their_own_summary(tmp_path):
    common = ["-m", "+task=linear", "trainer.max_steps=5", "logger=[]", "optimizer=adam,nadam", SAME_SWEEP_FOLDER]
    plain, faster = start_together(tmp_path, [common, [*common, "optimizer.lr=0.1"]])
    assert plain.returncode == 0 and faster.returncode == 0, plain.stderr + faster.stderr
    assert plain.stdout != faster.stdout  # each printed its own jobs' losses
    for done, lr in ((plain, None), (faster, 0.1)):
        folder = next(word for word in done.stdout.split() if word.startswith("multirun/same"))
        folder = tmp_path / folder.removesuffix("/summary.csv")
        jobs = sorted(job for job in folder.iterdir() if (job / "result.json").exists())
        assert [job.name for job in jobs] == ["optimizer=adam", "optimizer=nadam"], folder
        for job in jobs:  # the jobs in this sweep's folder are this sweep's own
            config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
            assert (config["optimizer"]["lr"] == 0.1) == (lr == 0.1), job
    assert {path.parent.name for path in (tmp_path / "multirun").glob("*/summary.md")} == {"same", "same_2"}


def test_jobs_whose_values_differ_only_in_slash_or_underscore_get_their_own_folders(tmp_path):
    for name in ("sub/a.csv", "sub_a.csv"):
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x,y\n1,2\n2,4\n3,6\n" if name == "sub/a.csv" else "x,y\n1,-2\n2,-4\n")
    done = run_cli("-m", "data=csv", "model=linear", "trainer.max_steps=3", "logger=[]",
                   "data.path=data/sub/a.csv,data/sub_a.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Sweep summary (2 jobs" in done.stdout
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    jobs = sorted(job.name for job in sweep_dir.iterdir() if job.is_dir())
    assert jobs == ["data.path=data%2Fsub%2Fa.csv", "data.path=data%2Fsub_a.csv"]


def test_job_names_that_differ_past_the_length_a_file_system_takes_stay_apart():
    prefix = "data.path=" + "d" * 250
    first = job_folder_name(0, [prefix + "1.csv"], [], BASIC_SWEEPER)
    second = job_folder_name(1, [prefix + "2.csv"], [], BASIC_SWEEPER)
    assert first != second
    assert all(len(name.encode()) <= 200 and name.startswith("data.path=ddd") for name in (first, second))


def test_a_single_run_claims_its_run_folder_and_no_sweep_folder(tmp_path):
    done = run_cli("+task=linear", "trainer.max_steps=3", "logger=[]", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("outputs/*/*/result.json"))) == 1
    assert not (tmp_path / "multirun").exists()
