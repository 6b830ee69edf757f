"""End to end: ``python -m framework ...`` in a subprocess, checked against design.md's public contract
(the run folder, result.json, TensorBoard tags, exit status and error messages)."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import run_cli
from tests.plain_linear import plain_linear
from tests.polyfit import tutorial_quadratic

RESULT_KEYS = {"task", "status", "steps", "final_loss", "params", "wall_s", "device", "stop_reason", "error",
               "final_val_loss", "optimal_loss", "optimality_gap"}
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# --------------------------------------------------------------------------------------------- helpers


class Run:
    """One finished ``python -m framework`` subprocess and its run folder."""

    def __init__(self, process, run_dir: Path) -> None:
        self.process = process
        self.run_dir = run_dir
        self.returncode = process.returncode
        self.output = process.stdout + process.stderr

    @property
    def result(self) -> dict:
        return json.loads((self.run_dir / "result.json").read_text())

    def events(self) -> EventAccumulator:
        accumulator = EventAccumulator(str(self.run_dir))
        accumulator.Reload()
        return accumulator

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.process.stdout}\n--- stderr\n{self.process.stderr}"


def launch(base: Path, *args: str, env: dict | None = None) -> Run:
    run_dir = base / "run"
    process = run_cli(*args, f"hydra.run.dir={run_dir}", cwd=base, env=env)
    return Run(process, run_dir)


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def shows_number(text: str, value: float, rel: float) -> bool:
    """Whether ``text`` holds a number equal to ``value`` to ``rel`` (whatever the formatting)."""
    return any(float(found) == pytest.approx(value, rel=rel) for found in NUMBER.findall(text))


def lines_with(text: str, word: str) -> str:
    return "\n".join(line for line in text.splitlines() if word in line)


def assert_refused_cleanly(run: Run, *fragments: str) -> None:
    """Non-zero exit, a message naming every fragment, no traceback, not the catch-all message."""
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.output, run.describe()
    assert "unexpected" not in run.output, run.describe()
    # The message is for the user's terminal: on stderr, once, not mixed into the log lines.
    lowered = run.process.stderr.lower()
    assert "error:" in lowered, run.describe()
    for fragment in fragments:
        assert fragment.lower() in lowered, f"{fragment!r} not in the message on stderr\n{run.describe()}"
    result_file = run.run_dir / "result.json"
    if result_file.exists():  # refused runs that got as far as a run folder say so
        assert run.result["status"] == "failed", run.result


def initial_polyfit_loss() -> float:
    """tasks.md's polyfit, written the tutorial way: the loss of the initial parameters (seed 0)."""
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    y = (x**2 + 2 * x + 3)[:, None]
    A, B, C = torch.randn(()), torch.randn(()), torch.randn(())
    return torch.nn.functional.mse_loss(tutorial_quadratic(A, B, C, x), y).item()


# ------------------------------------------------------------------------------------ polyfit, one run


@pytest.fixture(scope="module")
def polyfit_run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("polyfit")
    return launch(base, "+task=polyfit", "trainer.max_steps=50", "trainer.log_every=10")


def test_polyfit_exits_zero_and_writes_the_run_folder(polyfit_run):
    run = polyfit_run
    assert run.returncode == 0, run.describe()
    assert (run.run_dir / ".hydra" / "config.yaml").is_file()
    assert list(run.run_dir.glob("*.log")), sorted(p.name for p in run.run_dir.iterdir())
    top_level = list(run.run_dir.glob("events.out.tfevents.*"))
    assert top_level, "no TensorBoard event file directly in the run folder"
    everywhere = list(run.run_dir.rglob("events.out.tfevents.*"))
    assert {p.parent for p in everywhere} == {run.run_dir}, f"a second TensorBoard run: {everywhere}"


def test_polyfit_result_json(polyfit_run):
    assert polyfit_run.returncode == 0, polyfit_run.describe()
    result = polyfit_run.result
    assert set(result) == RESULT_KEYS
    assert result["task"] == "polyfit"
    assert result["status"] == "completed"
    assert result["steps"] == 50
    assert result["stop_reason"] == "max_steps" and result["error"] is None
    assert result["device"] == "cpu"
    assert set(result["params"]) == {"A", "B", "C"}
    assert all(isinstance(value, float) for value in result["params"].values())
    assert isinstance(result["final_loss"], float) and math.isfinite(result["final_loss"])
    assert result["final_loss"] < initial_polyfit_loss()
    assert isinstance(result["wall_s"], float) and result["wall_s"] >= 0


def test_polyfit_output_shows_final_loss_and_parameters(polyfit_run):
    result = polyfit_run.result
    output = polyfit_run.output
    final_line = lines_with(output, "final loss")
    assert final_line and shows_number(final_line, result["final_loss"], rel=1e-4), polyfit_run.describe()
    for name, value in result["params"].items():
        named = "\n".join(line for line in output.splitlines() if re.search(rf"\b{name}\b", line))
        assert shows_number(named, value, rel=1e-5), f"parameter {name}={value} not shown\n{output}"


def test_polyfit_tensorboard_scalars(polyfit_run):
    result = polyfit_run.result
    events = polyfit_run.events()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "params/A", "params/B", "params/C"} <= tags

    logged_steps = [1, 10, 20, 30, 40, 50]
    loss = scalars(events, "train/loss")
    assert [step for step, _ in loss] == logged_steps
    # The loss logged at step 1 is that of the initial parameters, before the first update.
    assert loss[0][1] == pytest.approx(initial_polyfit_loss(), rel=1e-6)
    assert all(math.isfinite(value) for _, value in loss)
    assert loss[-1][1] < loss[0][1]

    assert [step for step, _ in scalars(events, "train/lr")] == logged_steps
    assert all(value == pytest.approx(0.01) for _, value in scalars(events, "train/lr"))
    grad_norms = scalars(events, "train/grad_norm")
    assert [step for step, _ in grad_norms] == logged_steps
    assert all(math.isfinite(value) and value > 0 for _, value in grad_norms)

    # Parameter values logged at the last step are the final parameters (float32 in TensorBoard).
    for name, value in result["params"].items():
        history = scalars(events, f"params/{name}")
        assert [step for step, _ in history] == logged_steps
        assert history[-1][1] == pytest.approx(value, rel=1e-6)


def test_polyfit_tensorboard_hparams(polyfit_run):
    result = polyfit_run.result
    events = polyfit_run.events()
    content = events.PluginTagToContent("hparams")
    assert content, "no hparams plugin data"
    data = [plugin_data_pb2.HParamsPluginData.FromString(blob) for blob in content.values()]
    # Only the session summaries: TensorBoard builds the experiment from all runs of a logdir.
    assert not any(item.HasField("experiment") for item in data)
    starts = [item.session_start_info for item in data if item.HasField("session_start_info")]
    assert len(starts) == 1
    assert starts[0].hparams["optimizer.lr"].number_value == pytest.approx(0.01)
    assert starts[0].hparams["task"].string_value == "polyfit"
    # The metric itself, so the HParams tab can compare runs by their final loss.
    assert scalars(events, "hparams/final_loss")[-1][1] == pytest.approx(result["final_loss"], rel=1e-6)


# --------------------------------------------------------------------------- linear: integer data, log_every=1


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("linear")
    return launch(base, "+task=linear", "trainer.log_every=1", "trainer.max_steps=5")


def test_linear_logs_every_step(linear_run):
    assert linear_run.returncode == 0, linear_run.describe()
    loss = scalars(linear_run.events(), "train/loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5]
    # W = b = 0 at the start: the step-1 loss is mean(y**2) = (9 + 25 + 49 + 81) / 4.
    assert loss[0][1] == pytest.approx(41.0, rel=1e-6)
    assert all(later < earlier for (_, earlier), (_, later) in zip(loss, loss[1:]))


def test_linear_integer_data_are_converted(linear_run):
    """data.x / data.y are integer lists: the run still trains, in floating point."""
    assert linear_run.returncode == 0, linear_run.describe()
    result = linear_run.result
    assert result["status"] == "completed" and result["steps"] == 5
    assert isinstance(result["final_loss"], float) and math.isfinite(result["final_loss"])
    assert 0 < result["final_loss"] < 41.0
    assert isinstance(result["params"]["weight"][0][0], float)
    assert isinstance(result["params"]["bias"][0], float)


# --------------------------------------------------------------------------------------------- divergence


def test_divergence_stops_with_a_message_naming_the_step(tmp_path):
    run = launch(tmp_path, "+task=sine", "optimizer.lr=1e-4")
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.output, run.describe()
    result = run.result
    assert result["status"] == "failed"
    assert result["stop_reason"] == "non_finite_loss"
    failed_step = result["steps"]
    assert 1 < failed_step < 2000
    assert re.search(rf"\bstep {failed_step}\b", run.output), run.describe()
    assert "diverg" in run.output.lower() or "non-finite" in run.output.lower(), run.describe()

    # What was logged before the failure is kept, and all of it is finite.
    loss = scalars(run.events(), "train/loss")
    steps = [step for step, _ in loss]
    assert 1 in steps and 10 in steps, steps
    assert all(step < failed_step for step in steps)
    assert all(math.isfinite(value) for _, value in loss)


# ----------------------------------------------------------------------------------------------- bad input


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# (command-line arguments, where {tmp} is the test's folder; CSV files to write there; what the
# message must name)
BAD_INPUTS = [
    pytest.param(
        ["+task=polyfit", "model=polynomal"], {},
        ["polynomal", "linear", "polynomial", "sine_cubic"],
        id="unknown-model",
    ),
    pytest.param(
        ["+task=polyfit", "model.degre=3"], {},
        ["degre", "degree"],
        id="misspelt-key",
    ),
    pytest.param(
        ["+task=polyfit", "logger=[console,tensorbord]"], {},
        ["'tensorbord' is not a logger", "console, tensorboard"],
        id="unknown-name-in-a-list",
    ),
    pytest.param(
        ["+task=polyfit", "callback=[early_stop]"], {},
        ["'early_stop' is not a callback", "early_stopping"],
        id="unknown-callback",
    ),
    pytest.param(
        ["+task=polyfit", "trainer.max_steps=1e3"], {},
        ["trainer.max_steps takes a whole number: write 1000"],
        id="float-for-a-whole-number",
    ),
    pytest.param(
        ["+task=polyfit", "trainer.resume=multirun/2026-01-01/10-00-00/optimizer.lr=0.01"], {},
        ["""'trainer.resume="multirun/2026-01-01/10-00-00/optimizer.lr=0.01"'"""],
        id="unquoted-value-holding-equals",
    ),
    pytest.param(
        ["+task=linear2d", "data=csv", "data.path=missing.csv"], {},
        ["missing.csv"],
        id="missing-csv",
    ),
    pytest.param(
        ["+task=linear2d", "data=csv", "data.path={tmp}/bad_cell.csv"],
        {"bad_cell.csv": "a,b,y\n1,2,2\n1,2,x\n"},
        ["bad_cell.csv", "line 3"],
        id="csv-bad-cell",
    ),
    pytest.param(
        ["+task=linear2d", "data=csv", "data.path={tmp}/ragged.csv"],
        {"ragged.csv": "a,b,y\n1,2,3\n4,5,6\n7,8\n"},
        ["ragged.csv", "line 4"],
        id="csv-ragged-row",
    ),
    pytest.param(
        ["+task=linear2d", "model.out_features=2"], {},
        ["shape", "(3, 2)", "(3, 1)"],
        id="prediction-target-shape-mismatch",
    ),
    pytest.param(
        ["+task=polyfit", "trainer.dtype=int64"], {},
        ["int64", "integer", "gradient"],
        id="integer-dtype",
    ),
    pytest.param(
        ["+task=polyfit", "trainer.device=cuda"], {},
        ["trainer.device", "cuda", "not available"],
        id="cuda-without-cuda",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
    ),
]


@pytest.mark.parametrize(("args", "files", "fragments"), BAD_INPUTS)
def test_bad_input_is_refused_with_a_clear_message(tmp_path, args, files, fragments):
    for name, text in files.items():
        write(tmp_path / name, text)
    run = launch(tmp_path, *(arg.format(tmp=tmp_path) for arg in args))
    assert_refused_cleanly(run, *fragments)
    result_file = run.run_dir / "result.json"
    if result_file.exists():
        assert run.result["steps"] == 0, run.result  # refused before any training step


def test_omegaconfs_account_of_where_an_error_happened_is_left_out(tmp_path):
    """The key is named in the message; OmegaConf's ``full_key:``/``object_type=`` lines and its
    internal type names (TrainerConfig) say nothing more to a user."""
    for args in (["+task=linear", "trainer.max_stepz=3"], ["+task=linear", "trainer.max_steps=1e3"]):
        run = launch(tmp_path, *args)
        assert_refused_cleanly(run, "trainer.max_step")
        for detail in ("full_key", "object_type", "reference_type", "TrainerConfig"):
            assert detail not in run.process.stderr, run.describe()


def test_a_sweep_jobs_folder_typed_as_listed_is_resumed(tmp_path):
    """A sweep job's folder is named after its overrides (``optimizer.lr=0.01``): typed after
    ``trainer.resume=`` without Hydra's quotes, it names the folder, and the run goes on there as
    the plain loop would."""
    sweep = tmp_path / "sweep"
    first = run_cli("-m", "+task=linear", "optimizer.lr=0.01,0.02", "trainer.max_steps=20", "logger=[]",
                    f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    job = sweep / "optimizer.lr=0.01"
    resumed = run_cli("+task=linear", "optimizer.lr=0.01", "trainer.max_steps=50", "logger=[]",
                      f"trainer.resume={job.relative_to(tmp_path)}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((job / "result.json").read_text())
    params, _ = plain_linear(0.01, 50)
    assert (result["status"], result["steps"], result["params"]) == ("completed", 50, params)


def test_trainer_resume_alone_resumes_with_the_runs_own_overrides(tmp_path):
    """``trainer.resume=RUN`` without the run's command: its overrides (``.hydra/overrides.yaml``)
    are taken for the keys not given again, so the run goes on with its own learning rate and
    loggers, and a key given again (``trainer.max_steps``) wins; the parameters are the plain
    loop's over all the steps."""
    run_dir = tmp_path / "run"
    first = run_cli("+task=linear", "optimizer.lr=0.01", "trainer.max_steps=20", "logger=[]",
                    f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli(f"trainer.resume={run_dir}", "trainer.max_steps=50", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    params, _ = plain_linear(0.01, 50)
    assert (result["status"], result["steps"], result["params"]) == ("completed", 50, params)
    assert not list(run_dir.glob("events.out.tfevents.*"))  # logger=[] was the run's own too
    taken = yaml.safe_load(next(run_dir.glob(".hydra/resume_*/overrides.yaml")).read_text())
    assert taken[-3:] == ["+task=linear", "optimizer.lr=0.01", "logger=[]"], taken


def test_trainer_resume_alone_takes_the_overrides_of_the_command_that_wrote_the_checkpoint(tmp_path):
    """A run resumed before goes on with what its last resume chose (``logger=[]``, which drops
    the run's own ``logger.console.lines=2`` under it), not with what a refused resume asked
    (another learning rate) nor with the run's first command; options after the overrides
    (``--cfg job``) keep their place."""
    run_dir = tmp_path / "run"

    def cli(*args):
        return run_cli(*args, cwd=tmp_path)

    first = cli("+task=linear", "optimizer.lr=0.01", "trainer.max_steps=20", "logger.console.lines=2",
                "logger.tensorboard.figures=false", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0 and "step 20/20" in first.stdout + first.stderr, first.stderr
    second = cli(f"trainer.resume={run_dir}", "trainer.max_steps=50", "logger=[]")
    assert second.returncode == 0, second.stderr
    time.sleep(1.1)  # resume snapshots are named by the second
    refused = cli(f"trainer.resume={run_dir}", "optimizer.lr=0.5")
    assert refused.returncode == 2 and "optimizer.lr" in refused.stderr, refused.stderr
    last = cli(f"trainer.resume={run_dir}", "trainer.max_steps=80")
    assert last.returncode == 0, last.stderr
    assert re.search(r"step \d+/80", last.stdout + last.stderr) is None  # logger=[]: no console lines
    result = json.loads((run_dir / "result.json").read_text())
    params, _ = plain_linear(0.01, 80)
    assert (result["status"], result["steps"], result["params"]) == ("completed", 80, params)
    shown = cli(f"trainer.resume={run_dir}", "--cfg", "job")
    assert shown.returncode == 0 and "lr: 0.01" in shown.stdout, shown.stderr


def test_full_error_env_shows_the_traceback(tmp_path):
    run = launch(tmp_path, "+task=polyfit", "trainer.dtype=int64", env={"HYDRA_FULL_ERROR": "1"})
    assert run.returncode != 0, run.describe()
    assert "Traceback" in run.output, run.describe()
    assert "int64" in run.output


# ----------------------------------------------------------------------------------- optimizers and data


def test_lbfgs_beats_nadam_on_polyfit_in_ten_steps(tmp_path):
    (tmp_path / "lbfgs").mkdir()
    (tmp_path / "nadam").mkdir()
    lbfgs = launch(tmp_path / "lbfgs", "+task=polyfit", "optimizer=lbfgs", "trainer.max_steps=10")
    nadam = launch(tmp_path / "nadam", "+task=polyfit", "optimizer=nadam", "trainer.max_steps=10")
    for run in (lbfgs, nadam):
        assert run.returncode == 0, run.describe()
        assert run.result["status"] == "completed" and run.result["steps"] == 10
    assert lbfgs.result["final_loss"] < nadam.result["final_loss"] / 10


def test_csv_data_give_the_same_result_as_inline_data(tmp_path):
    csv_file = write(tmp_path / "points.csv", "a,b,y\n1,2,2\n3,4,4\n5,6,6\n")
    (tmp_path / "csv").mkdir()
    (tmp_path / "inline").mkdir()
    from_csv = launch(tmp_path / "csv", "+task=linear2d", "data=csv", f"data.path={csv_file}")
    inline = launch(tmp_path / "inline", "+task=linear2d")
    for run in (from_csv, inline):
        assert run.returncode == 0, run.describe()
        assert run.result["status"] == "completed" and run.result["steps"] == 100
    assert from_csv.result["params"] == inline.result["params"]
    assert from_csv.result["final_loss"] == inline.result["final_loss"]
