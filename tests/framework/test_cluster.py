"""The requeue after the scheduler's warning, piece by piece, in a process that submitit's
variables make a local job's task. tests/cli/test_submitit.py runs the whole of it: a real
submitit_local sweep, a real SIGUSR2, a requeued job that resumes."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf
from submitit.core.utils import UncompletedJobError

from framework import cluster
from framework.checkpoints import CHECKPOINT_DIR

JOB_ID = "4242"


@pytest.fixture
def job_folder(tmp_path, monkeypatch):
    """This process as rank 0 of local submitit job JOB_ID; its submitit folder."""
    for name, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": JOB_ID, "SUBMITIT_LOCAL_NTASKS": "1",
                        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0",
                        "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0",
                        "SUBMITIT_FOLDER": str(tmp_path / ".submitit" / "%j")}.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / ".submitit" / JOB_ID
    folder.mkdir(parents=True)
    monkeypatch.setattr(cluster, "_warning", cluster.SchedulersWarning())
    return folder


def run_folder(tmp_path, *, checkpoint: bool):
    run_dir = tmp_path / "sweep" / "0"
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)
    if checkpoint:
        (run_dir / CHECKPOINT_DIR / "step_0000000718.pt").write_bytes(b"")
    return run_dir


def config():
    return OmegaConf.create({"trainer": {"resume": None, "max_steps": 10}})


def test_the_task_that_requeues_leaves_the_run_folder_for_the_requeued_job(job_folder, tmp_path):
    calls = []
    cluster._warning.signum, cluster._warning.requeue = 12, lambda signum, frame: calls.append(signum)
    run_dir = run_folder(tmp_path, checkpoint=True)
    cluster.requeue_job(run_dir)
    assert calls == [12]  # submitit's own handler, with the warning's signal
    assert (job_folder / f"{JOB_ID}_requeued_run").read_text() == str(run_dir)

    cfg = config()
    cluster.resume_if_requeued(cfg)  # the requeued job's task
    assert cfg.trainer.resume == str(run_dir)


def test_a_job_that_was_not_requeued_starts_afresh(job_folder):
    cfg = config()
    cluster.resume_if_requeued(cfg)
    assert cfg.trainer.resume is None


def test_a_job_requeued_before_its_first_checkpoint_starts_again(job_folder, tmp_path, caplog):
    run_dir = run_folder(tmp_path, checkpoint=False)
    (job_folder / f"{JOB_ID}_requeued_run").write_text(str(run_dir))
    cfg = config()
    with caplog.at_level(logging.INFO, logger="framework"):
        cluster.resume_if_requeued(cfg)
    assert cfg.trainer.resume is None
    assert "before its run saved a checkpoint" in caplog.text


def test_outside_a_submitit_job_nothing_is_resumed(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    cfg = config()
    cluster.resume_if_requeued(cfg)
    assert cfg.trainer.resume is None


def test_a_job_submitit_will_not_requeue_ends_interrupted_and_says_why(job_folder, tmp_path, caplog):
    def refuses(signum, frame):
        raise UncompletedJobError("Job 4242 has been requeued too many times")

    cluster._warning.signum, cluster._warning.requeue = 12, refuses
    with caplog.at_level(logging.WARNING, logger="framework"):
        cluster.requeue_job(run_folder(tmp_path, checkpoint=True))  # returns: the job ends interrupted
    assert "submitit does not requeue it" in caplog.text and "too many times" in caplog.text


def test_without_submitits_handler_the_job_ends_interrupted(job_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="framework"):
        cluster.requeue_job(run_folder(tmp_path, checkpoint=True))
    assert "nothing here can requeue it" in caplog.text
    assert not (job_folder / f"{JOB_ID}_requeued_run").exists()
