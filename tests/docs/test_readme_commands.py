"""Every command in the README's code blocks runs, as written, in a fresh folder (a real
subprocess), and gives what the README says it gives.

``CHECKS`` maps each command to the check of the README's claim about it; ``SKIPPED`` lists the
commands that cannot run here, with the reason. A command added to the README with neither
fails ``test_every_readme_command_has_a_check``. Commands that need an earlier command's run
folder (resume, warm start) run in order in one folder (``CHAINS``), with the README's example
folder replaced by the one the first command made. Independent chains run two at a time.
"""

from __future__ import annotations

import csv
import fnmatch
import dataclasses
import json
import math
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from framework.markers import DISABLE_AUTOLOAD_ENV, DISABLE_COMPONENTS_ENV, DISABLE_PLUGINS_ENV
from tests import fake_slurm
from tests.conftest import REPO_ROOT, cli_env
from tests.plain_linear import plain_linear

README = REPO_ROOT / "README.md"
EXAMPLE_RUN_FOLDER = "outputs/2026-11-22/10-00-00"  # what the README's resume commands name
PARALLEL_CHAINS = 2
COMMAND_TIMEOUT_S = 300
RESULT_FIELDS = {"task", "status", "steps", "final_loss", "params", "wall_s", "device", "stop_reason"}


# --------------------------------------------------------------------------------------------
# The README's commands
# --------------------------------------------------------------------------------------------


def code_lines(markdown: str):
    """The lines of fenced (```) and indented (4 spaces, after a blank line) code blocks."""
    fenced = indented = False
    previous_blank = True
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            yield line
        elif line.startswith("    ") and (indented or previous_blank):
            indented = True
            yield line[4:]
        elif line.strip():
            indented = False
        previous_blank = not line.strip()


def runs_the_framework_or_tensorboard(words: list[str]) -> bool:
    if words[:2] in (["python", "-m"], ["python3", "-m"]) and len(words) > 2:
        return words[2].split(".")[0] == "framework"
    return bool(words) and words[0] in ("framework", "tensorboard")


def readme_commands(markdown: str) -> list[str]:
    """Each command, continuation lines joined and comments dropped, written as shlex.join
    writes it (one spelling per command, whatever the README's spacing)."""
    commands, pending = [], ""
    for line in code_lines(markdown):
        pending += line
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # not shell (the Python example, the plugin's source)
            words = []
        pending = ""
        if runs_the_framework_or_tensorboard(words):
            commands.append(shlex.join(words))
    return commands


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------


@dataclass
class Ran:
    """One command's run: its process, its folder, and the run folders as they were after it."""

    command: str
    completed: subprocess.CompletedProcess
    cwd: Path
    before: set[Path]  # run folders (holding result.json) before the command
    results: dict[Path, dict]  # every run folder's result.json after the command
    files: set[str]  # every file under cwd after the command (later commands may prune some)
    earlier: list[Ran] = field(default_factory=list)  # the chain's commands before this one

    @property
    def output(self) -> str:
        return self.completed.stdout + self.completed.stderr

    @property
    def new_runs(self) -> list[Path]:
        return sorted(set(self.results) - self.before)

    def only_new_run(self) -> tuple[Path, dict]:
        assert len(self.new_runs) == 1, self.new_runs
        return self.new_runs[0], self.results[self.new_runs[0]]

    def files_in(self, folder: Path, pattern: str) -> list[str]:
        """Names of the files in ``folder`` matching ``pattern`` just after this command."""
        prefix = folder.relative_to(self.cwd).as_posix() + "/"
        return sorted(name[len(prefix):] for name in self.files
                      if name.startswith(prefix) and fnmatch.fnmatch(name[len(prefix):], pattern))


def run_folders(cwd: Path) -> dict[Path, dict]:
    return {path.parent: json.loads(path.read_text()) for path in cwd.rglob("result.json")}


def run_readme_command(command: str, cwd: Path, earlier: list[Ran]) -> Ran:
    words = shlex.split(command)
    if earlier:  # the README's example folder is the one the chain's first command made
        made = earlier[0].only_new_run()[0].relative_to(cwd).as_posix()
        words = [word.replace(EXAMPLE_RUN_FOLDER, made) for word in words]
    if words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    elif words[0] == "framework":  # the console script of this same install
        words = [sys.executable, "-m", "framework", *words[1:]]
    before = set(run_folders(cwd))
    # Installed third-party plugins stay out, whatever the developer's shell disables.
    env = cli_env({DISABLE_AUTOLOAD_ENV: "1", DISABLE_PLUGINS_ENV: "", DISABLE_COMPONENTS_ENV: "",
                   **CLUSTERS.get(command, lambda folder: {})(cwd)})
    try:
        completed = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    finally:
        if "FAKE_SLURM_DIR" in env:
            fake_slurm.end_all(Path(env["FAKE_SLURM_DIR"]))
    files = {path.relative_to(cwd).as_posix() for path in cwd.rglob("*") if path.is_file()}
    return Ran(command, completed, cwd, before, run_folders(cwd), files, list(earlier))


def run_chain(commands: list[str], cwd: Path) -> list[Ran]:
    cwd.mkdir(parents=True)
    ran: list[Ran] = []
    for command in commands:
        PREPARE.get(command, lambda folder: None)(cwd)
        ran.append(run_readme_command(command, cwd, ran))
        if ran[-1].completed.returncode != 0:
            break  # what follows needs this one's folder
    return ran


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Ran]:
    """Every checked command, run once: independent chains side by side, longest first."""
    chained = {command for chain in CHAINS for command in chain}
    chains = [list(chain) for chain in CHAINS] + [[command] for command in CHECKS if command not in chained]
    chains.sort(key=lambda chain: -sum(COST.get(command, 1) for command in chain))
    root = tmp_path_factory.mktemp("readme")
    with ThreadPoolExecutor(max_workers=PARALLEL_CHAINS) as pool:
        done = pool.map(lambda item: run_chain(item[1], root / f"chain{item[0]}"), enumerate(chains))
        return {ran.command: ran for chain in done for ran in chain}


# --------------------------------------------------------------------------------------------
# The README's claims, one check per command
# --------------------------------------------------------------------------------------------


def succeeded(ran: Ran) -> None:
    assert ran.completed.returncode == 0, ran.output[-3000:]


def readme_claim(pattern: str) -> list[float]:
    """Numbers the README states (so the check follows the text, and the text the behaviour)."""
    found = re.search(pattern, README.read_text())
    assert found, pattern
    return [float(number) for number in found.groups()]


def near(values, expected, tolerance) -> bool:
    return all(abs(value - target) <= tolerance for value, target in zip(values, expected, strict=True))


def polyfit_params(result: dict) -> list[float]:
    return [result["params"][name] for name in "ABC"]


def check_polyfit(ran: Ran) -> None:
    """Fits y = x² + 2x + 3; after 1000 NAdam steps A ≈ 1.05, B ≈ 1.55, C ≈ 2.28; prints the final
    loss and the parameters; leaves the run folder the README lists under outputs/<date>/<time>/."""
    succeeded(ran)
    folder, result = ran.only_new_run()
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", folder.relative_to(ran.cwd).as_posix())
    for made in (".hydra/config.yaml", ".hydra/overrides.yaml", "framework.log", "model.safetensors"):
        assert (folder / made).is_file(), made
    assert list(folder.glob("events.out.tfevents.*")) and list((folder / "checkpoints").glob("step_*.pt"))
    assert RESULT_FIELDS <= set(result)
    assert (result["task"], result["status"], result["steps"]) == ("polyfit", "completed", 1000)
    claimed = readme_claim(r"A ≈ ([\d.]+), B ≈ ([\d.]+), C ≈ ([\d.]+)")
    assert [round(value, 2) for value in polyfit_params(result)] == claimed
    assert f"final loss {result['final_loss']:.6g}" in ran.output
    assert all(f"{name} = {result['params'][name]}" in ran.output for name in "ABC")


def check_linear_every_step(ran: Ran) -> None:
    """TensorBoard gets every step."""
    from tests.framework.compare import events

    succeeded(ran)
    folder, result = ran.only_new_run()
    steps = [event.step for event in events(folder).Scalars("train/loss")]
    assert steps == list(range(1, result["steps"] + 1)) and result["steps"] == 200


def check_puzzle(ran: Ran) -> None:
    """A+B=9, C−D=1, A+C=8, B−D=2: the four weights solve the system."""
    succeeded(ran)
    a, b, c, d = ran.only_new_run()[1]["params"]["weight"][0]
    residuals = [a + b - 9, c - d - 1, a + c - 8, b - d - 2]
    assert max(map(abs, residuals)) < 1e-3, residuals


def check_legendre(ran: Ran) -> None:
    """sin x ≈ a + b·P3(c + d·x): the fitted curve, recomputed here on the task's 2000 points of
    [-π, π], has the reported sum of squared errors and explains sin x to 1%."""
    succeeded(ran)
    result = ran.only_new_run()[1]
    a, b, c, d = (result["params"][name] for name in "abcd")
    x = np.linspace(-math.pi, math.pi, 2000)
    z = c + d * x
    errors = a + b * 0.5 * (5 * z**3 - 3 * z) - np.sin(x)
    assert float(np.sum(errors**2)) == pytest.approx(result["final_loss"], rel=1e-3)
    assert np.sum(errors**2) < 0.01 * np.sum(np.sin(x) ** 2)


def check_polyfit_lbfgs(ran: Ran) -> None:
    """`optimizer=lbfgs trainer.max_steps=10` recovers 1, 2, 3."""
    succeeded(ran)
    result = ran.only_new_run()[1]
    assert result["steps"] == 10 and near(polyfit_params(result), [1, 2, 3], 1e-3), result["params"]


CSV_ROWS = [(0.0, 1.0), (1.0, 0.5), (2.0, -1.0), (3.0, 2.0), (-1.0, 0.0), (0.5, 3.0)]


def write_my_csv(cwd: Path) -> None:
    with (cwd / "my.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["size", "weight", "price"])
        writer.writerows((x1, x2, 2 * x1 - x2 + 0.5) for x1, x2 in CSV_ROWS)


def check_own_csv(ran: Ran) -> None:
    """Your own data, the last column the target: the final loss is the mean squared error of
    the learned plane on my.csv's rows against its last column, recomputed here."""
    succeeded(ran)
    result = ran.only_new_run()[1]
    weight, bias = np.array(result["params"]["weight"]), np.array(result["params"]["bias"])
    assert weight.shape == (1, 2)
    table = np.array([(x1, x2, 2 * x1 - x2 + 0.5) for x1, x2 in CSV_ROWS])
    predictions = table[:, :2] @ weight.T + bias
    assert float(np.mean((predictions[:, 0] - table[:, 2]) ** 2)) == pytest.approx(result["final_loss"], rel=1e-4)


def builtin_registry():
    from framework.plugin_manager import build_registry, create_plugin_manager

    return build_registry(create_plugin_manager(load_entry_points=False, disabled=()), disabled=())


def check_help(ran: Ran) -> None:
    """Every component name, and the default settings."""
    from framework.registry import KINDS
    from framework.schema import TrainerConfig

    succeeded(ran)
    registry = builtin_registry()
    listing = ran.completed.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = {line.split(":", 1)[0]: {name.strip() for name in line.split(":", 1)[1].split(",")}
              for line in listing.splitlines() if ": " in line}
    for kind in KINDS:
        assert set(registry.names(kind)) <= groups[kind], kind
    trainer = ran.completed.stdout.split("\ntrainer:\n", 1)[1]
    for setting in dataclasses.fields(TrainerConfig):
        # A nested group (trainer.tol) has its settings on the lines below its name.
        assert re.search(rf"^  {setting.name}:( |\n)", trainer, re.MULTILINE), setting.name


def check_model_help(ran: Ran) -> None:
    """One component's settings: linear's dataclass and its defaults, as YAML under model:."""
    from framework.schema import named_schema

    succeeded(ran)
    schema = named_schema(builtin_registry().get("model", "linear").config, "linear")
    settings = OmegaConf.to_yaml(OmegaConf.structured(schema))
    assert "model:\n" + "".join(f"  {line}\n" for line in settings.splitlines()) in ran.completed.stdout


def sweep_folder(ran: Ran) -> Path:
    (folder,) = (ran.cwd / "multirun").glob("*/*")
    return folder


def summary_rows(folder: Path) -> list[dict]:
    with (folder / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def check_grid_sweep(ran: Ran) -> None:
    """One job per combination, each in a folder named by the values it varies; summary.csv and
    summary.md; a table of the jobs, best final loss first."""
    succeeded(ran)
    folder = sweep_folder(ran)
    expected = {f"optimizer={name},optimizer.lr={lr}" for name, lr in product(["adam", "nadam", "rmsprop"], [0.01, 0.1])}
    assert {path.parent.name for path in folder.glob("*/result.json")} == expected
    assert all(list((folder / job).glob("events.out.tfevents.*")) for job in expected)
    rows = summary_rows(folder)
    losses = [float(row["final_loss"]) for row in rows]
    assert losses == sorted(losses) and (folder / "summary.md").is_file()
    for row in rows:
        assert float(row["final_loss"]) == json.loads((folder / row["job"] / "result.json").read_text())["final_loss"]
    assert "Sweep summary (6 jobs, best first" in ran.output


def check_joblib_sweep(ran: Ran) -> None:
    """Parallel jobs through Hydra's joblib launcher: both jobs complete, each in its folder, at
    the learning rate the command gives both (not Adam's default)."""
    succeeded(ran)
    folder = sweep_folder(ran)
    results = {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/result.json")}
    assert set(results) == {"optimizer=adam", "optimizer=nadam"}
    assert all(result["status"] == "completed" for result in results.values())
    for job in results:
        assert yaml.safe_load((folder / job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == 0.01


def check_optuna_sweep(ran: Ran) -> None:
    """Optuna searches optimizer.lr in [0.0001, 0.1] for n_trials trials, minimising the final
    loss each job returns; its job folders start with the job number."""
    succeeded(ran)
    folder = sweep_folder(ran)
    jobs = {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/result.json")}
    assert len(jobs) == int(re.search(r"n_trials=(\d+)", ran.command).group(1))
    for name in jobs:
        number, lr = re.fullmatch(r"(\d+)_optimizer\.lr=(.+)", name).groups()
        assert 1e-4 <= float(lr) <= 0.1
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(result["final_loss"] for result in jobs.values())


def check_submitit_local_sweep(ran: Ran) -> None:
    """Through submitit's local mode (its own processes, its files in .submitit/): each job in its
    own folder with result.json and a TensorBoard run, and the sweep's summary."""
    succeeded(ran)
    folder = sweep_folder(ran)
    assert "Submitit 'local' sweep output dir" in ran.output and (folder / ".submitit").is_dir()
    results = {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/result.json")}
    assert set(results) == {"optimizer.lr=0.001", "optimizer.lr=0.01"}
    assert all((result["status"], result["steps"]) == ("completed", 200) for result in results.values())
    for lr in (0.001, 0.01):  # each job trained with its own learning rate
        assert results[f"optimizer.lr={lr}"]["params"] == plain_linear(lr, 200)[0]
    assert all(list((folder / job).glob("events.out.tfevents.*")) for job in results)
    assert {row["job"] for row in summary_rows(folder)} == set(results)


def check_submitit_slurm_sweep(ran: Ran) -> None:
    """On a stand-in for a one-node SLURM cluster (tests/fake_slurm.py, CLUSTERS): the four jobs
    go in one sbatch, an array with the command's partition and time limit; each trains in its
    own folder with result.json and a TensorBoard run; the summary lists them."""
    succeeded(ran)
    folder = sweep_folder(ran)
    assert "Submitit 'slurm' sweep output dir" in ran.output
    (script,) = [path.read_text() for path in folder.glob(".submitit/*/*_submission.sh")]
    assert all(line in script for line in ("#SBATCH --array=0-3%", "#SBATCH --partition=PARTITION",
                                           "#SBATCH --time=60", "\nsrun ")), script
    results = {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/result.json")}
    assert set(results) == {f"optimizer={name},optimizer.lr={lr}" for name in ("adam", "nadam") for lr in ("0.01", "0.1")}
    assert all((result["status"], result["steps"]) == ("completed", 1000) for result in results.values())
    assert all(list((folder / job).glob("events.out.tfevents.*")) for job in results)
    assert {row["job"] for row in summary_rows(folder)} == set(results)


def check_submitit_local_ddp_sweep(ran: Ran) -> None:
    """A sweep whose jobs are 2-process DDP jobs: each job's two submitit tasks train one model
    into one folder, and the update is the single-process one (the README's polyfit figures)."""
    succeeded(ran)
    folder = sweep_folder(ran)
    results = {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/result.json")}
    assert set(results) == {"optimizer.lr=0.01", "optimizer.lr=0.1"}
    assert all((result["status"], result["steps"]) == ("completed", 1000) for result in results.values())
    for job in results:
        assert "data-parallel training over 2 processes (gloo)" in (folder / job / "framework.log").read_text()
    assert sorted(path.name for path in folder.glob(".submitit/*/*_log.out")) == sorted(
        f"{job_id}_{rank}_log.out" for job_id in {path.name for path in folder.glob(".submitit/*")
                                                 if path.name != "%j"} for rank in (0, 1))
    claimed = readme_claim(r"A ≈ ([\d.]+), B ≈ ([\d.]+), C ≈ ([\d.]+)")
    assert [round(value, 2) for value in polyfit_params(results["optimizer.lr=0.01"])] == claimed
    assert {row["job"] for row in summary_rows(folder)} == set(results)


def check_checkpoint_every(ran: Ran) -> None:
    """Also a checkpoint every 100 steps, pruned to the newest 3, named by step."""
    succeeded(ran)
    folder, result = ran.only_new_run()
    assert result["steps"] == 1000
    assert ran.files_in(folder, "checkpoints/*") == [f"checkpoints/step_{step:010d}.pt" for step in (800, 900, 1000)]


def first_run(ran: Ran) -> tuple[Path, dict]:
    return ran.earlier[0].only_new_run()


def check_resume(ran: Ran) -> None:
    """Repeating the run's command with trainer.resume= its folder goes on in that folder (from
    its latest checkpoint, here its end): the same parameters; the resuming command's Hydra
    snapshot in .hydra/resume_<time>/, the original .hydra/ kept."""
    succeeded(ran)
    folder, before = first_run(ran)
    assert ran.new_runs == []
    after = ran.results[folder]
    assert (after["status"], after["steps"], after["params"]) == ("completed", before["steps"], before["params"])
    assert len(ran.files_in(folder, ".hydra/resume_*/overrides.yaml")) == 1
    assert "trainer.resume" not in (folder / ".hydra" / "overrides.yaml").read_text()


def check_resume_longer(ran: Ran) -> None:
    """Going on longer, the task taken from the run's own overrides: the same folder reaches
    5000 steps, nearer to 1, 2, 3 than at 1000."""
    succeeded(ran)
    folder, at_1000 = first_run(ran)
    after = ran.results[folder]
    assert ran.new_runs == [] and (after["status"], after["steps"]) == ("completed", 5000)
    distance = lambda result: max(abs(value - target) for value, target in zip(polyfit_params(result), [1, 2, 3]))
    assert distance(after) < distance(at_1000)
    assert "checkpoints/step_0000005000.pt" in ran.files_in(folder, "checkpoints/*")


def check_warm_start(ran: Ran) -> None:
    """A new run from the saved weights, with a fresh optimizer and step 0: 20 LBFGS steps."""
    succeeded(ran)
    source, _ = first_run(ran)
    folder, result = ran.only_new_run()
    assert folder != source and result["steps"] == 20 and result["status"] == "completed"
    assert OmegaConf.load(folder / ".hydra" / "config.yaml").trainer.init_from.endswith(
        source.relative_to(ran.cwd).as_posix())
    assert near(polyfit_params(result), [1, 2, 3], 1e-3), result["params"]


def check_doctor(ran: Ran) -> None:
    """The report alone, no run folder: the sine task's 2/L ≈ 3.56e-06 (numpy's, from the singular
    values of its design matrix [1, x, x², x³]) and a warning that optimizer.lr=1e-4 exceeds it."""
    succeeded(ran)
    assert ran.files == set()
    x = np.linspace(-math.pi, math.pi, 2000)
    bound = 1 / np.linalg.svd(np.stack([x**0, x, x**2, x**3], axis=1), compute_uv=False)[0] ** 2
    (claimed,) = readme_claim(r"2/L ≈ ([\d.]+e-\d+)")
    assert f"{bound:.3g}" == f"{claimed:.3g}"
    assert (f"warning: doctor: optimizer.lr = 0.0001 exceeds the stable bound for plain SGD, 2/L = {bound:.3g}"
            in ran.completed.stdout)



# "Is it converged? How good is it?"
SINE_DIVERGES = "python -m framework +task=sine optimizer.lr=1e-4"
STANDARDIZED = "python -m framework +task=polyfit optimizer=sgd optimizer.lr=0.1 data.standardize=true"
PUZZLE_GTOL = "python -m framework +task=puzzle trainer.tol.grad_norm=1e-2"
VAL_EARLY_STOPPING = shlex.join(shlex.split(
    "python -m framework +task=polyfit data.val_fraction=0.2 trainer.max_steps=20000 trainer.val_every=50 "
    "callback=[early_stopping] callback.early_stopping.monitor=val/loss callback.early_stopping.min_delta=1e-3 "
    "callback.early_stopping.patience=3"))
GAP_SWEEP = shlex.join(shlex.split("python -m framework -m +task=polyfit optimizer=lbfgs,nadam data.noise=0,4 logger=[]"))


def sine_bound() -> float:
    """2/L of SSE on the sine task, from numpy: 1/σ_max² of its design matrix [1, x, x², x³]."""
    x = np.linspace(-math.pi, math.pi, 2000)
    return 1 / np.linalg.svd(np.stack([x**0, x, x**2, x**3], axis=1), compute_uv=False)[0] ** 2


def check_sine_diverges(ran: Ran) -> None:
    """The doctor warns with numpy's 2/L before the first step, then the run diverges at the step
    the README names and exits 5."""
    assert ran.completed.returncode == 5, ran.output[-3000:]
    warning = f"doctor: optimizer.lr = 0.0001 exceeds the stable bound for plain SGD, 2/L = {sine_bound():.3g}"
    assert warning in ran.output and ran.output.index(warning) < ran.output.index("step 1/2000")
    (step,) = readme_claim(r"diverges at step (\d+)")
    result = ran.only_new_run()[1]
    assert (result["status"], result["stop_reason"], result["steps"]) == ("failed", "non_finite_loss", step)
    assert f"the loss is inf at step {int(step)}" in ran.output


def check_standardized(ran: Ran) -> None:
    """Plain SGD at lr 0.1 on standardized features reaches the least-squares optimum (gap = final
    loss − optimal loss, tiny) and reports x² + 2x + 3 in the data's units; the doctor's bound is
    the README's."""
    succeeded(ran)
    result = ran.only_new_run()[1]
    assert near(polyfit_params(result), [1, 2, 3], 1e-4), result["params"]
    assert result["optimality_gap"] == pytest.approx(result["final_loss"] - result["optimal_loss"], rel=1e-9, abs=1e-15)
    assert abs(result["optimality_gap"]) < 1e-9
    (bound,) = readme_claim(r"stable up to lr ([\d.]+)")
    assert f"plain SGD is stable for lr < 2/L = {bound:g}" in ran.output


def check_puzzle_gtol(ran: Ran) -> None:
    """Stops at the first step whose gradient norm (TensorBoard's train/grad_norm there) is below
    0.01, naming the value, after the README's number of steps."""
    from tests.framework.compare import events

    succeeded(ran)
    folder, result = ran.only_new_run()
    value = float(re.fullmatch(r"grad_norm (\S+) < 0.01", result["stop_reason"]).group(1))
    (steps,) = readme_claim(r"puzzle completed after (\d+) steps \(grad_norm")
    assert value < 0.01 and result["steps"] == steps < 2000
    logged = {event.step: event.value for event in events(folder).Scalars("train/grad_norm")}
    assert f"{logged[result['steps']]:.3g}" == f"{value:.3g}"


def check_val_early_stopping(ran: Ran) -> None:
    """4 of the 20 rows held out; early stopping on val/loss at a validation step, the README's."""
    succeeded(ran)
    result = ran.only_new_run()[1]
    assert "holding out 4 of 20 rows for validation" in ran.output
    assert result["stop_reason"].startswith("early_stopping: val/loss") and result["final_val_loss"] is not None
    (steps,) = readme_claim(r"polyfit completed after (\d+) steps \(early_stopping")
    assert result["steps"] == steps and steps % 50 == 0


def check_gap_sweep(ran: Ran) -> None:
    """Ranked by optimality gap: LBFGS on noisy data (a large loss, a tiny gap) ranks above NAdam
    on clean data (a smaller loss, a larger gap)."""
    succeeded(ran)
    folder = sweep_folder(ran)
    rows = summary_rows(folder)
    gaps = [float(row["optimality_gap"]) for row in rows]
    assert gaps == sorted(gaps) and "sorted by optimality gap" in (folder / "summary.md").read_text()
    by_job = {row["job"]: row for row in rows}
    noisy_lbfgs, clean_nadam = by_job["optimizer=lbfgs,data.noise=4"], by_job["optimizer=nadam,data.noise=0"]
    assert float(noisy_lbfgs["final_loss"]) > float(clean_nadam["final_loss"])
    assert float(noisy_lbfgs["optimality_gap"]) < float(clean_nadam["optimality_gap"])


SUBMITIT_LOCAL = shlex.join(shlex.split("python -m framework -m hydra/launcher=submitit_local +task=linear 'optimizer.lr=0.001,0.01'"))
SUBMITIT_SLURM = shlex.join(shlex.split(
    "python -m framework -m hydra/launcher=submitit_slurm hydra.launcher.partition=PARTITION "
    "hydra.launcher.timeout_min=60 +task=polyfit optimizer=adam,nadam optimizer.lr=0.01,0.1"))
SUBMITIT_SLURM_DDP = shlex.join(shlex.split(
    "python -m framework -m hydra/launcher=submitit_slurm hydra.launcher.partition=PARTITION "
    "hydra.launcher.nodes=1 hydra.launcher.tasks_per_node=2 hydra.launcher.gpus_per_node=2 "
    "trainer.strategy=ddp trainer.device=cuda +task=polyfit optimizer.lr=0.01,0.1"))
SUBMITIT_LOCAL_DDP = shlex.join(shlex.split(
    "python -m framework -m hydra/launcher=submitit_local hydra.launcher.tasks_per_node=2 "
    "trainer.strategy=ddp +task=polyfit optimizer.lr=0.01,0.1"))
GRID_SWEEP = "python -m framework -m +task=polyfit optimizer=adam,nadam,rmsprop optimizer.lr=0.01,0.1"
OPTUNA_SWEEP = ("python -m framework -m hydra/sweeper=optuna hydra.sweeper.n_trials=10 +task=polyfit "
                "'optimizer.lr=tag(log, interval(0.0001, 0.1))'")
OWN_CSV = "python -m framework +task=linear2d data=csv data.path=my.csv"
CHECKPOINTS = "python -m framework +task=polyfit trainer.checkpoint_every=100"
RESUME = f"python -m framework +task=polyfit trainer.checkpoint_every=100 trainer.resume={EXAMPLE_RUN_FOLDER}"
RESUME_LONGER = f"python -m framework trainer.resume={EXAMPLE_RUN_FOLDER} trainer.max_steps=5000"
WARM_START = f"python -m framework +task=polyfit optimizer=lbfgs trainer.max_steps=20 trainer.init_from={EXAMPLE_RUN_FOLDER}"

CHECKS: dict[str, Callable[[Ran], None]] = {
    "python -m framework +task=polyfit": check_polyfit,
    "python -m framework +task=linear trainer.log_every=1": check_linear_every_step,
    "python -m framework +task=puzzle": check_puzzle,
    "python -m framework +task=legendre": check_legendre,
    "python -m framework +task=polyfit optimizer=lbfgs trainer.max_steps=10": check_polyfit_lbfgs,
    OWN_CSV: check_own_csv,
    "python -m framework --help": check_help,
    "python -m framework model=linear --help": check_model_help,
    "python -m framework.doctor +task=sine optimizer.lr=1e-4": check_doctor,
    SINE_DIVERGES: check_sine_diverges,
    STANDARDIZED: check_standardized,
    PUZZLE_GTOL: check_puzzle_gtol,
    VAL_EARLY_STOPPING: check_val_early_stopping,
    GAP_SWEEP: check_gap_sweep,
    GRID_SWEEP: check_grid_sweep,
    "python -m framework -m hydra/launcher=joblib hydra.launcher.n_jobs=2 +task=polyfit optimizer=adam,nadam "
    "optimizer.lr=0.01": check_joblib_sweep,
    OPTUNA_SWEEP: check_optuna_sweep,
    SUBMITIT_LOCAL: check_submitit_local_sweep,
    SUBMITIT_SLURM: check_submitit_slurm_sweep,
    SUBMITIT_LOCAL_DDP: check_submitit_local_ddp_sweep,
    CHECKPOINTS: check_checkpoint_every,
    RESUME: check_resume,
    RESUME_LONGER: check_resume_longer,
    WARM_START: check_warm_start,
}

SERVES_TENSORBOARD = ("serves TensorBoard until stopped; tests/cli/test_tensorboard_server.py runs the server "
                      "over a sweep's folder and reads it back")
SKIPPED = {
    "tensorboard --logdir 'multirun/<date>/<time>'": SERVES_TENSORBOARD,
    "tensorboard --logdir outputs": SERVES_TENSORBOARD,
    SUBMITIT_SLURM_DDP: "needs a SLURM cluster with GPUs; tests/cli/test_submitit.py runs jobs of 2 tasks locally",
}

# Run in order in one folder: the later ones name the first one's run folder.
CHAINS = [[CHECKPOINTS, RESUME, RESUME_LONGER, WARM_START]]

PREPARE: dict[str, Callable[[Path], None]] = {OWN_CSV: write_my_csv}


def fake_slurm_cluster(cwd: Path) -> dict[str, str]:
    """The environment that runs a command on tests/fake_slurm.py's one-node SLURM (its files
    beside ``cwd``)."""
    cluster = cwd.parent / f"{cwd.name}_cluster"
    return fake_slurm.install(cluster / "bin", cluster / "state")


# Commands run with a cluster's commands on the PATH.
CLUSTERS: dict[str, Callable[[Path], dict[str, str]]] = {SUBMITIT_SLURM: fake_slurm_cluster}

# Rough relative run times, so the longest chains start first.
COST = {OPTUNA_SWEEP: 5, GRID_SWEEP: 3, SUBMITIT_LOCAL: 2, SUBMITIT_SLURM: 3, SUBMITIT_LOCAL_DDP: 3, RESUME_LONGER: 2, GAP_SWEEP: 2, VAL_EARLY_STOPPING: 2}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_every_readme_command_has_a_check():
    commands = readme_commands(README.read_text())
    assert len(commands) == len(set(commands)), "a command appears twice in the README"
    assert set(commands) == set(CHECKS) | set(SKIPPED)
    assert not set(CHECKS) & set(SKIPPED)
    assert {command for chain in CHAINS for command in chain} <= set(CHECKS)


def test_commands_are_found_in_fenced_and_indented_blocks_and_joined_across_lines():
    markdown = ("Text `python -m framework +task=inline` is prose.\n\n"
                "    python -m framework +task=a   # a comment\n"
                "    pip install x\n\n"
                "```bash\npython -m framework -m x=1 \\\n    'y=tag(log, interval(1, 2))'\n```\n\n"
                "- a list item\n  python -m framework +task=b continues it\n")
    assert readme_commands(markdown) == ["python -m framework +task=a",
                                         "python -m framework -m x=1 'y=tag(log, interval(1, 2))'"]


@pytest.mark.parametrize("command", list(CHECKS))
def test_readme_command_gives_what_the_readme_says(command, outcomes):
    assert command in outcomes, "an earlier command of its chain failed"
    CHECKS[command](outcomes[command])
