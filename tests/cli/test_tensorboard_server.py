"""End to end against the real TensorBoard: a small sweep, then the ``tensorboard`` server on a
loopback port over the sweep folder, read through its HTTP data API (issue 3, point 7): the runs
are the jobs by name, and each has its scalars, its hparams and its fit figures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("tensorboard", reason="the tensorboard package is not installed: no server to test against")

from tests.conftest import run_cli  # noqa: E402

HOST = "127.0.0.1"  # loopback only, never anything else
JOBS = ("optimizer=adam", "optimizer=nadam")
START_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

# Loopback requests must not go through a proxy set in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log_file: Path) -> None:
        self.process, self.port, self.log_file = process, port, log_file

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def get(self, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"} if body is not None else {})
        with _opener.open(request, timeout=10) as response:
            return response.read()

    def json(self, path: str, body: dict | None = None):
        return json.loads(self.get(path, body))

    def poll(self, path: str, ready, body: dict | None = None):
        """The endpoint's JSON once ``ready(data)`` holds (the server loads event files in the
        background), or its last answer after LOAD_TIMEOUT_S, for the test to assert on."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            data = self.json(path, body)
            if ready(data) or time.monotonic() > deadline:
                return data
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tb_sweep")
    sweep_dir = base / "sweep"
    process = run_cli("-m", "+task=polyfit", "optimizer=adam,nadam", "trainer.max_steps=20",
                      "logger.tensorboard.figure_every=10", f"hydra.sweep.dir={sweep_dir}", cwd=base)
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stdout}\n{process.stderr}"
    assert {p.name for p in sweep_dir.iterdir() if p.is_dir()} == set(JOBS)
    return sweep_dir


@pytest.fixture(scope="module")
def server(sweep, tmp_path_factory):
    log_file = tmp_path_factory.mktemp("tb_server") / "tensorboard.log"
    port = free_port()
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", HOST,
             "--port", str(port), "--load_fast=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    running = Server(process, port, log_file)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorboard exited with {process.returncode}\n{running.log()}")
            try:
                running.get("/data/runs")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"tensorboard did not answer on {HOST}:{port} in {START_TIMEOUT_S} s\n{running.log()}")
                time.sleep(0.5)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def result(sweep: Path, job: str) -> dict:
    return json.loads((sweep / job / "result.json").read_text())


# ----------------------------------------------------------------------------------------------- tests


def test_runs_are_the_job_folders_by_name(server):
    runs = server.poll("/data/runs", lambda runs: set(runs) >= set(JOBS))
    assert sorted(runs) == sorted(JOBS), server.log()


def test_scalar_tags_of_each_run(server):
    wanted = {"train/loss", "train/lr", "train/grad_norm", "params/A"}
    tags = server.poll("/data/plugin/scalars/tags",
                       lambda tags: all(wanted <= set(tags.get(job, {})) for job in JOBS))
    for job in JOBS:
        assert wanted <= set(tags.get(job, {})), (job, tags.get(job))


def test_loss_curve_is_served(server):
    for job in JOBS:
        query = urllib.parse.urlencode({"run": job, "tag": "train/loss"})
        points = server.poll(f"/data/plugin/scalars/scalars?{query}", lambda points: len(points) > 0)
        steps = [step for _, step, _ in points]  # [wall_time, step, value] each
        assert steps[0] == 1 and steps[-1] == 20 and steps == sorted(set(steps)), (job, steps)
        # polyfit from its seeded start: adam and nadam bring the loss down in 20 steps.
        assert 0 < points[-1][2] < points[0][2], (job, points)


def test_hparams_experiment_lists_the_hparams_and_metrics(server):
    experiment = server.poll("/data/plugin/hparams/experiment", lambda e: bool(e.get("hparamInfos")),
                             body={"experimentName": ""})
    hparams = {info["name"] for info in experiment.get("hparamInfos", [])}
    assert {"optimizer", "optimizer.lr", "model", "loss", "data"} <= hparams, experiment
    metrics = {info["name"]["tag"] for info in experiment.get("metricInfos", [])}
    assert {"hparams/final_loss", "hparams/steps", "hparams/wall_s"} <= metrics, experiment


def test_hparams_table_compares_the_jobs(server, sweep):
    """The HParams table's rows (session groups): one per job, with its choice and final loss."""
    body = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "allowedStatuses": ALL_STATUSES}
    groups = server.poll("/data/plugin/hparams/session_groups",
                         lambda g: len(g.get("sessionGroups", [])) >= len(JOBS), body=body)
    by_name = {group["name"]: group for group in groups.get("sessionGroups", [])}
    assert set(by_name) == set(JOBS), groups
    for job in JOBS:
        group = by_name[job]
        assert group["hparams"]["optimizer"] == job.split("=", 1)[1], group
        # The job's own rate: the preset's for its nadam, adam's own default for adam.
        job_lr = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]
        assert group["hparams"]["optimizer.lr"] == pytest.approx(job_lr), group
        metric_values = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        expected = result(sweep, job)
        assert metric_values["hparams/final_loss"] == pytest.approx(expected["final_loss"], rel=1e-6), group
        assert metric_values["hparams/steps"] == expected["steps"], group


def test_hparams_experiment_marks_the_swept_choice_as_differing(server):
    experiment = server.poll("/data/plugin/hparams/experiment", lambda e: bool(e.get("hparamInfos")),
                             body={"experimentName": ""})
    infos = {info["name"]: info for info in experiment.get("hparamInfos", [])}
    optimizer = infos["optimizer"]
    assert optimizer.get("differs") is True, optimizer
    assert set(optimizer.get("domainDiscrete", [])) == {"adam", "nadam"}, optimizer


def test_images_fit_curve_of_each_run(server):
    tags = server.poll("/data/plugin/images/tags",
                       lambda tags: all("fit/curve" in tags.get(job, {}) for job in JOBS))
    for job in JOBS:
        assert "fit/curve" in tags.get(job, {}), (job, tags.get(job))
        query = urllib.parse.urlencode({"run": job, "tag": "fit/curve", "sample": 0})
        images = server.json(f"/data/plugin/images/images?{query}")
        # figure_every=10 over 20 steps: one at step 10, and the final one at step 20.
        assert [image["step"] for image in images] == [10, 20], (job, images)
        picture = server.get(f"/data/plugin/images/individualImage?{images[-1]['query']}")
        assert picture.startswith(PNG_SIGNATURE), (job, picture[:16])
