"""``framework.job_runs.run_job`` does what Hydra's ``run_job`` does: the same Hydra app, run in
real processes once with Hydra's function and once with the framework's, writes the same
``.hydra/`` files, gives its task function the same config, ``HydraConfig``, working folder and
environment, and hands the callbacks the same ``JobReturn``: for a sweep of jobs that succeed
and fail, a run that changes its working folder, a run without ``.hydra/``, and a run that
Hydra refuses (``env_set`` interpolating a job's key, which Hydra's copy of the hydra node
cannot resolve). Hydra's own function is back in place once the block ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.job_runs import mirrors_installed_hydra

APP = '''
import contextlib, json, os, sys
import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from framework import job_runs

SEEN = []


class Record(Callback):
    def on_job_start(self, config, **kwargs):
        SEEN.append({"event": "start", "config": OmegaConf.to_yaml(config)})

    def on_job_end(self, config, job_return, **kwargs):
        SEEN.append({"event": "end", "config": OmegaConf.to_yaml(config), "cfg": OmegaConf.to_yaml(job_return.cfg),
                     "hydra_cfg": OmegaConf.to_yaml(job_return.hydra_cfg),
                     "hydra_cfg_resolved": OmegaConf.to_yaml(job_return.hydra_cfg.hydra.job, resolve=True),
                     "overrides": job_return.overrides, "working_dir": job_return.working_dir,
                     "status": str(job_return.status), "return_value": repr(job_return._return_value),
                     "task_name": job_return.task_name})


ConfigStore.instance().store(name="app", node={
    "x": 1, "fail": False, "folder": "${hydra:runtime.output_dir}",
    "hydra": {"callbacks": {"record": {"_target_": "__main__.Record"}}},
})


@hydra.main(config_path=None, config_name="app", version_base="1.3")
def task(cfg):
    import hydra._internal.core_plugins.basic_launcher as basic
    import hydra._internal.hydra as single

    SEEN.append({"event": "task", "cfg": OmegaConf.to_yaml(cfg), "folder": cfg.folder,
                 "hydra": OmegaConf.to_yaml(HydraConfig.get()), "cwd": os.getcwd(),
                 "env": os.environ.get("JOB_ENV"),
                 "framework_run_job": [basic.run_job is job_runs.run_job, single.run_job is job_runs.run_job]})
    if cfg.fail:
        raise ValueError("failed on purpose")
    return cfg.x * 2


if __name__ == "__main__":
    which, record = sys.argv.pop(1), sys.argv.pop(1)
    try:
        with job_runs.installed() if which == "framework" else contextlib.nullcontext():
            task()
    finally:
        import hydra.core.utils
        import hydra._internal.core_plugins.basic_launcher as basic

        SEEN.append({"event": "after", "cwd": os.getcwd(), "env": os.environ.get("JOB_ENV"),
                     "hydras_run_job": [module.run_job.__module__ for module in (hydra.core.utils, basic)]})
        with open(record, "w") as handle:
            json.dump(SEEN, handle)
'''

CASES = {  # name: (arguments, exit status)
    "sweep": (["-m", "x=1,2", "fail=false,true", "+hydra.job.env_set.JOB_ENV=set", "hydra.sweep.dir=sweep"], 1),
    "chdir": (["x=3", "hydra.run.dir=run", "hydra.job.chdir=true"], 0),
    "no_hydra_folder": (["x=4", "hydra.run.dir=run", "hydra.output_subdir=null"], 0),
    # Hydra reads env_set from its copy of the hydra node, where a job's own keys are not found.
    "env_set_from_a_job_key": (["x=5", "hydra.run.dir=run", "+hydra.job.env_set.JOB_ENV=${x}"], 1),
}

pytestmark = pytest.mark.skipif(not mirrors_installed_hydra(), reason="the installed Hydra runs its own run_job")


def run_app(base: Path, which: str, case: str) -> tuple[list[dict], dict[str, str], str]:
    """The app's record and every file it wrote, with ``base`` (the only difference between two
    runs' folders) written as BASE; the app's exit status is the case's (a sweep with failed
    jobs ends with Hydra's error, exit 1)."""
    args, status = CASES[case]
    base.mkdir()
    (base / "app.py").write_text(APP)
    record = base / "record.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("JOB_ENV", None)
    done = subprocess.run([sys.executable, "app.py", which, str(record), *args], cwd=base, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr

    def normalised(text: str) -> str:
        return text.replace(str(base.resolve()), "BASE").replace(str(base), "BASE")

    seen = json.loads(normalised(record.read_text()))
    files = {str(path.relative_to(base)): normalised(path.read_text())
             for path in sorted(base.rglob("*")) if path.is_file() and path.name not in ("app.py", "record.json")}
    return seen, files, normalised(done.stderr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_framework_run_job_does_what_hydras_does(tmp_path, case):
    hydra_seen, hydra_files, _ = run_app(tmp_path / "hydra", "hydra", case)
    framework_seen, framework_files, framework_stderr = run_app(tmp_path / "framework", "framework", case)

    tasks = [event for event in framework_seen if event["event"] == "task"]
    assert all(event["framework_run_job"] == [True, True] for event in tasks)
    assert bool(tasks) == (case != "env_set_from_a_job_key")
    assert framework_seen[-1]["hydras_run_job"] == ["hydra.core.utils"] * 2  # put back on leaving
    assert all(event["framework_run_job"] == [False, False] for event in hydra_seen if event["event"] == "task")
    for event in hydra_seen + framework_seen:
        event.pop("framework_run_job", None)
    assert framework_seen == hydra_seen
    assert framework_files == hydra_files
    written = [name for name in hydra_files if name.endswith(".yaml")]
    assert bool(written) == (case != "no_hydra_folder"), sorted(hydra_files)
    if case == "env_set_from_a_job_key":
        assert "Interpolation key 'x' not found" in framework_stderr


def test_the_jobs_saw_what_each_case_sets(tmp_path):
    """What the comparison above compares is there to compare (a run that changed nothing would
    pass it too)."""
    seen, files, _ = run_app(tmp_path / "sweep", "framework", "sweep")
    tasks = [event for event in seen if event["event"] == "task"]
    ends = [event for event in seen if event["event"] == "end"]
    assert len(tasks) == len(ends) == 4
    assert all(event["env"] == "set" for event in tasks) and seen[-1]["env"] is None
    assert [event["status"] for event in ends].count("JobStatus.FAILED") == 2
    assert {event["folder"] for event in tasks} == {f"BASE/sweep/{n}" for n in range(4)}
    assert sum(name.endswith(".hydra/hydra.yaml") for name in files) == 4
    chdir_seen, _, _ = run_app(tmp_path / "chdir", "framework", "chdir")
    assert [event["cwd"] for event in chdir_seen if event["event"] in ("task", "after")] == ["BASE/run", "BASE"]
