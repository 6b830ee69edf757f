"""Real processes, real signals: SIGKILL at any instant and during a save, SIGTERM and SIGINT
(twice) stopping a run cleanly, Ctrl-C during start-up, and interrupted sweeps, sequential and
parallel. Every resumed run is compared with one that was never interrupted."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.checkpoints import list_checkpoints, load_checkpoint
from framework.weights import read_weights
from tests.conftest import cli_env, run_cli
from tests.framework.compare import assert_same_run, events
from tests.plugin_site import install_distribution, plugin_env

# About a millisecond a step on 50 000 rows: long enough to be caught mid-run, short to finish.
TASK = ("+task=polyfit", "data.n=50000", "trainer.max_steps=1500", "trainer.checkpoint_every=100",
        "trainer.log_every=50", "trainer.device=cpu")


def as_from_a_terminal() -> None:
    """A child of a test run in the background would inherit an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cwd: Path, *args: str, env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.Popen:
    """``python -m framework ARGS`` in its own process group, as a terminal would run it."""
    return subprocess.Popen([sys.executable, "-m", "framework", *args], cwd=cwd, env=cli_env(env), text=True,
                            stdout=stdout, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=as_from_a_terminal)


def wait_until(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before the test could interrupt it:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.005)


def has_checkpoints(run_dir: Path, count: int):
    return lambda: len(list_checkpoints(run_dir)) >= count


def end_of_run_outputs_were_written(run_dir: Path) -> None:
    """What the loggers write at the end: the figures and the HParams metrics (the HParams
    session stays open: a resumed run ends it)."""
    accumulator = events(run_dir)
    assert {"fit/loss", "fit/curve"} <= set(accumulator.Tags()["images"])
    assert "hparams/final_loss" in accumulator.Tags()["scalars"]
    assert set(accumulator.PluginTagToContent("hparams")) == {"_hparams_/session_start_info"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    completed = run_cli(*TASK, f"hydra.run.dir={folder / 'run'}", cwd=folder)
    assert completed.returncode == 0, completed.stderr
    return folder / "run"


def test_sigkill_at_any_instant_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(tmp_path, *TASK, f"hydra.run.dir={run_dir}")
    wait_until(has_checkpoints(run_dir, 2), process)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    saved = list_checkpoints(run_dir)
    for path in saved:  # every file under a final name is a whole checkpoint
        load_checkpoint(path)
    assert load_checkpoint(saved[-1])["progress"]["step"] < 1500

    resumed = run_cli(*TASK, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted)
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("trainer.resume") == 0  # original kept
    assert list((run_dir / ".hydra").glob("resume_*/overrides.yaml"))


KILLING_SAVE = '''
    """Kills its own process with SIGKILL inside a checkpoint save: after the data is written to
    the temporary file and before it is renamed into place."""

    import os
    import signal

    _fsync = os.fsync
    _saves = 0


    def _fsync_then_die(fd):
        global _saves
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".step_"):
            _saves += 1
            if _saves == int(os.environ["KILL_AT_SAVE"]):
                os.kill(os.getpid(), signal.SIGKILL)
        _fsync(fd)


    os.fsync = _fsync_then_die
'''


def test_sigkill_during_a_save_keeps_the_previous_checkpoint_loadable(uninterrupted, tmp_path):
    site = install_distribution(tmp_path / "site", distribution="killing-save", package="killing_save",
                                source=KILLING_SAVE, entry_point="killing_save")
    run_dir = tmp_path / "run"
    process = start(tmp_path, *TASK, f"hydra.run.dir={run_dir}", env=plugin_env(site, KILL_AT_SAVE="3"))
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    partial = list((run_dir / "checkpoints").glob(".step_0000000300.pt.*.tmp"))
    assert len(partial) == 1  # the third save died before its rename...
    assert [path.name for path in list_checkpoints(run_dir)] == ["step_0000000100.pt", "step_0000000200.pt"]
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["progress"]["step"] == 200  # ...the second loads

    resumed = run_cli(*TASK, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial[0].exists()  # cleaned up, never loaded
    assert_same_run(run_dir, uninterrupted)


def test_sigterm_saves_everything_prints_the_resume_command_and_exits_143(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(tmp_path, *TASK, f"hydra.run.dir={run_dir}")
    wait_until(has_checkpoints(run_dir, 1), process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGTERM")
    assert list_checkpoints(run_dir)[-1].name == f"step_{result['steps']:010d}.pt"
    assert read_weights(run_dir / "model.safetensors")[1]["step"] == result["steps"]
    end_of_run_outputs_were_written(run_dir)
    assert "Traceback" not in stderr

    command = re.search(r"resume with:\n\s+(.+)", stdout + stderr).group(1)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "framework"]
    resumed = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted)


def test_a_sweep_resumes_no_job(tmp_path):
    completed = run_cli("-m", "+task=linear", "optimizer.lr=0.1,0.2", f"trainer.resume={tmp_path}", cwd=tmp_path)
    assert completed.returncode == 2
    assert "trainer.resume resumes one run, not a sweep" in completed.stderr
    assert not (tmp_path / "multirun").exists()


def test_a_second_ctrl_c_while_the_run_saves_corrupts_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with open(tmp_path / "stdout.txt", "w") as stdout:
        process = start(tmp_path, *TASK, f"hydra.run.dir={run_dir}", stdout=stdout)
        wait_until(has_checkpoints(run_dir, 1), process)
        process.send_signal(signal.SIGINT)
        first = process.stderr.readline()
        while "stopping after this step" not in first:
            first = process.stderr.readline()
        process.send_signal(signal.SIGINT)  # while it saves
        rest = process.stderr.read()
        process.wait(timeout=120)
    assert process.returncode == 130
    assert "already stopping" in rest and "Traceback" not in rest
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["progress"]["step"] == result["steps"]
    read_weights(run_dir / "model.safetensors")
    end_of_run_outputs_were_written(run_dir)


def test_a_run_started_ignoring_sigint_goes_on(tmp_path):
    """``framework ... &`` in a script ignores Ctrl-C; the framework leaves it so."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "framework", *TASK, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_until(has_checkpoints(run_dir, 1), process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_during_start_up_prints_one_line(tmp_path, delay):
    """Whatever start-up is doing, a Ctrl-C prints one line, exits 130 and leaves no traceback.
    While torch and Hydra import, the process ends at once, having run nothing. Once the run is
    being built (2 s in, on a quick machine), it stops there, or, where a library's code caught
    the interrupt, at its first step, saved; a run folder it made says it was interrupted."""
    run_dir = tmp_path / "run"
    # Steps enough that the signal never finds the run already ending (200 steps end 2.3 s in).
    process = start(tmp_path, "+task=linear", "trainer.max_steps=1000000", f"hydra.run.dir={run_dir}")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    outcomes = ("interrupted during start-up; nothing was run",  # importing
                "interrupted: the run folder keeps what was logged",  # being built: stopped there
                "SIGINT: stopping after this step")  # being built, the interrupt caught: its first step
    assert any(outcome in stderr for outcome in outcomes), stderr
    if outcomes[2] in stderr:  # a fit that stopped names the signal
        result = json.loads((run_dir / "result.json").read_text())
        assert (result["status"], result["stop_reason"]) == ("interrupted", "SIGINT"), result
    elif (run_dir / "result.json").exists():  # a run stopped while being built took no step
        result = json.loads((run_dir / "result.json").read_text())
        assert (result["status"], result["stop_reason"], result["steps"]) == ("interrupted", "interrupted", 0), result


# A plugin whose resolver interrupts its own process: a Ctrl-C at the moment Hydra resolves the
# run folder, after the plugins are loaded and before any job's task function runs.
SIGINT_RESOLVER = """
import os, signal, time

from omegaconf import OmegaConf


def interrupt_here(path):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the signal lands here, as a Ctrl-C would
    return path


OmegaConf.register_new_resolver("interrupt_here", interrupt_here)
"""


def test_ctrl_c_before_the_run_starts_says_nothing_was_run(tmp_path):
    """Once the plugins are loaded, a Ctrl-C before the run's task function starts (here, while
    Hydra resolves the run folder) leaves no run folder to point to."""
    site = install_distribution(tmp_path / "site", distribution="interrupting", package="interrupting",
                                source=SIGINT_RESOLVER, entry_point="interrupting")
    folder = tmp_path / "run"
    process = start(tmp_path, "+task=linear", f"hydra.run.dir=${{interrupt_here:{folder}}}", env=plugin_env(site))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "interrupted during start-up; nothing was run", stderr
    assert not folder.exists()


# A plugin whose resolver makes an error of its own out of a Ctrl-C that lands in it, as Python
# 3.11 does in a class's __set_name__ and OmegaConf can while it builds a node; INTERRUPT_AS says
# whether the error names the interrupt as its cause or is raised while handling it.
SIGINT_INTO_AN_ERROR = """
import os, signal, time

from omegaconf import OmegaConf


def interrupt_into_an_error(path):
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal lands here, as a Ctrl-C would
    except KeyboardInterrupt as interrupt:
        if os.environ["INTERRUPT_AS"] == "cause":
            raise RuntimeError("Error calling __set_name__") from interrupt
        raise ValueError("a half-built node")


OmegaConf.register_new_resolver("interrupt_into_an_error", interrupt_into_an_error)
"""


@pytest.mark.parametrize("interrupt_as", ["cause", "context"])
def test_a_ctrl_c_that_a_library_made_into_an_error_is_reported_as_an_interrupt(tmp_path, interrupt_as):
    """Not as that error (exit 1 or 2, 'Error calling __set_name__'): as the Ctrl-C it was."""
    site = install_distribution(tmp_path / "site", distribution="into-an-error", package="into_an_error",
                                source=SIGINT_INTO_AN_ERROR, entry_point="into_an_error")
    folder = tmp_path / "run"
    process = start(tmp_path, "+task=linear", f"hydra.run.dir=${{interrupt_into_an_error:{folder}}}",
                    env=plugin_env(site, INTERRUPT_AS=interrupt_as))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "interrupted during start-up; nothing was run", stderr


SWEEP = (*TASK[:-2], "trainer.max_steps=20000")

# A plugin whose resolver sends its process one SIGINT, the first time a config resolves it.
SIGINT_ONCE = """
import os, signal

from omegaconf import OmegaConf

_sent = []


def sigint_once(value):
    if not _sent:
        _sent.append(True)
        os.kill(os.getpid(), signal.SIGINT)
    return value


OmegaConf.register_new_resolver("sigint_once", sigint_once)
"""


def test_ctrl_c_while_a_sweep_job_is_set_up_stops_that_job_at_its_first_step(tmp_path):
    """The basic launcher runs the jobs in the sweep's process: a Ctrl-C while a job is being
    built (here, as its config resolves) stops that job as soon as its fit starts, saved, where
    it trained on to its step limit; the jobs after it do not start."""
    site = install_distribution(tmp_path / "site", distribution="sigint-once", package="sigint_once",
                                source=SIGINT_ONCE, entry_point="sigint_once")
    sweep_dir = tmp_path / "sweep"
    process = start(tmp_path, "-m", *SWEEP, "trainer.log_every=${sigint_once:50}", "trainer.seed=1,2",
                    f"hydra.sweep.dir={sweep_dir}", env=plugin_env(site))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    results = job_results(sweep_dir)
    assert (results["trainer.seed=1"]["status"], results["trainer.seed=1"]["stop_reason"]) == ("interrupted", "SIGINT")
    assert results["trainer.seed=1"]["steps"] < 20000
    assert (results["trainer.seed=2"]["status"], results["trainer.seed=2"]["steps"]) == ("interrupted", 0)


def job_results(sweep_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sweep_dir.glob("*/result.json")}


def test_ctrl_c_in_a_sweep_saves_the_running_job_and_starts_no_other(tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start(tmp_path, "-m", *SWEEP, "optimizer.lr=0.01,0.02,0.03", f"hydra.sweep.dir={sweep_dir}")
    wait_until(has_checkpoints(sweep_dir / "optimizer.lr=0.01", 1), process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    results = job_results(sweep_dir)
    assert results["optimizer.lr=0.01"]["status"] == "interrupted"
    assert results["optimizer.lr=0.01"]["steps"] > 0
    assert list_checkpoints(sweep_dir / "optimizer.lr=0.01")
    for job in ("optimizer.lr=0.02", "optimizer.lr=0.03"):  # not started
        assert (results[job]["status"], results[job]["steps"], results[job]["stop_reason"]) == (
            "interrupted", 0, "sweep interrupted")
    assert "resume with" in (sweep_dir / "optimizer.lr=0.01" / "framework.log").read_text()
    assert "optimizer.lr=0.03" in (sweep_dir / "summary.md").read_text()


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_parallel_jobs_each_stop_cleanly(tmp_path, signum, to_group):
    """Ctrl-C reaches every process of the group; a SIGTERM sent to the launcher alone is passed
    on to its workers."""
    sweep_dir = tmp_path / "sweep"
    process = start(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP,
                    "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep_dir}")
    jobs = [sweep_dir / "optimizer.lr=0.01", sweep_dir / "optimizer.lr=0.02"]
    wait_until(lambda: all(list_checkpoints(job) for job in jobs), process, timeout=180)
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "interrupted" and result["steps"] > 0
        assert load_checkpoint(list_checkpoints(job)[-1])["progress"]["step"] == result["steps"]
        assert "resume with" in (job / "framework.log").read_text()  # the job ran to its very end
        end_of_run_outputs_were_written(job)


PARALLEL_SWEEP = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+task=linear", "trainer.max_steps=300",
                  "optimizer.lr=0.001,0.002,0.003,0.004")
MOMENTS = {
    # The launcher is starting its worker processes: a Ctrl-C there used to break its pool.
    "workers starting": lambda sweep_dir: (sweep_dir / "multirun.yaml").exists(),
    "jobs starting": lambda sweep_dir: any(sweep_dir.glob("*/.hydra/config.yaml")),
    # Everything is written; the interpreter shuts the pool down.
    "shutting down": lambda sweep_dir: (sweep_dir / "summary.md").exists(),
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_ctrl_c_at_any_moment_of_a_parallel_sweep_writes_its_summary_and_no_traceback(tmp_path, moment):
    sweep_dir = tmp_path / "sweep"
    process = start(tmp_path, *PARALLEL_SWEEP, f"hydra.sweep.dir={sweep_dir}")
    wait_until(lambda: MOMENTS[moment](sweep_dir), process, timeout=180)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    stdout, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    assert process.returncode in (0, 130), stderr
    summary = (sweep_dir / "summary.md").read_text()
    for job in sweep_dir.glob("*/.hydra"):  # every job that started is listed
        assert f"| {job.parent.name} |" in summary, summary
    for name, result in job_results(sweep_dir).items():  # and says how it ended
        assert re.search(rf"\| {re.escape(name)} \|.*\| {result['status']} \|", summary), summary
    if process.returncode == 130:  # a job says it was interrupted, or none had started (a header alone)
        assert "| interrupted |" in summary or summary.endswith("|---|\n"), summary
