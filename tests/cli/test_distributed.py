"""DDP through torchrun, with real processes: 2 CPU ranks over gloo.

Each launch is ``python -m torch.distributed.run --nproc_per_node=2`` on a free port, as a user's
``torchrun`` would run it. References come from a plain PyTorch loop written here; ranks are
compared with each other bit for bit, and a resumed run with an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import framework
from framework.checkpoints import list_checkpoints
from framework.errors import ConfigError
from framework.weights import read_weights
from tests.conftest import cli_env
from tests.framework.compare import events

RANKS = 2
TIMEOUT = 120  # seconds: a rank that hangs in a collective fails the test instead of the suite
# 12 rows in batches of 5: blocks of 3 and 2 rows, then a last batch of 2 (1 row each).
ROWS = 12
BATCH = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str, ranks: int = RANKS) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
            f"--master_port={free_port()}", *args]


def launch_env() -> dict[str, str]:
    return cli_env({"OMP_NUM_THREADS": "1"})


def run_torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(*args), cwd=cwd, env=launch_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def start_torchrun(cwd: Path, *args: str) -> subprocess.Popen:
    """torchrun in its own process group, as a terminal (or a scheduler's job) would run it."""
    return subprocess.Popen(torchrun(*args), cwd=cwd, env=launch_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def write_rows(path: Path, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A CSV of ROWS rows (two features, one target) and the same numbers as tensors."""
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(ROWS, 2, generator=generator).to(torch.float32)
    if targets is None:
        targets = features @ torch.tensor([[1.5], [-2.0]]) + 0.5 + 0.1 * torch.randn(ROWS, 1, generator=generator)
    path.write_text("x1,x2,y\n" + "".join(f"{a!r},{b!r},{t!r}\n" for (a, b), (t,) in
                                            zip(features.tolist(), targets.tolist())))
    return torch.tensor(features.tolist()), torch.tensor(targets.tolist())


def linear_task(csv: Path, *extra: str) -> list[str]:
    return ["data=csv", f"data.path={csv}", "model=linear", "model.init=zeros", "trainer.device=cpu",
            "trainer.strategy=ddp", "trainer.doctor=false", *extra]


def plain_loop(features, targets, *, steps: int, lr: float, optimizer: str, loss: str,
               batch_size: int | None, shuffle: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """The same training written out in plain PyTorch, in one process over the global batches."""
    weight = torch.zeros(1, 2, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    chosen = torch.optim.Adam([weight, bias], lr=lr) if optimizer == "adam" else torch.optim.SGD([weight, bias], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    rows = len(features)
    batch_size = batch_size or rows
    per_epoch = -(-rows // batch_size)
    order = torch.arange(rows)
    for step in range(steps):
        position = step % per_epoch
        if position == 0 and shuffle:
            order = torch.randperm(rows, generator=generator)
        picked = order[position * batch_size:(position + 1) * batch_size]
        chosen.zero_grad()
        residuals = features[picked] @ weight.T + bias - targets[picked]
        value = residuals.pow(2).mean() if loss == "mse" else residuals.pow(2).sum()
        value.backward()
        chosen.step()
    return {"weight": weight.detach(), "bias": bias.detach()}


SAVE_PARAMETERS = """
import os, sys, torch, framework
run = framework.train(sys.argv[2:])
torch.save({name: p.detach().clone() for name, p in run.model.named_parameters()},
           os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
# As the README says a script of one's own under torchrun ends: torch leaves the group's gloo
# threads running, and the interpreter's teardown could abort the rank after its work is saved.
sys.stdout.flush(), sys.stderr.flush()
os._exit(0)
"""


def test_two_ranks_train_the_global_batches_and_agree_bit_for_bit(tmp_path):
    # Through the Python API under torchrun: each rank saves the parameters framework.train gave it.
    csv = tmp_path / "rows.csv"
    features, targets = write_rows(csv)
    script = tmp_path / "save_parameters.py"
    script.write_text(SAVE_PARAMETERS)
    steps = 9  # three shuffled epochs
    done = run_torchrun(tmp_path, str(script), str(tmp_path), *linear_task(
        csv, "optimizer=adam", "optimizer.lr=0.05", f"data.batch_size={BATCH}", "data.shuffle=true",
        f"trainer.max_steps={steps}", "logger=[]", f"hydra.run.dir={tmp_path / 'run'}"))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(RANKS)]
    assert sorted(ranks[0]) == ["bias", "weight"]  # no "module." prefix
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    expected = plain_loop(features, targets, steps=steps, lr=0.05, optimizer="adam", loss="mse",
                          batch_size=BATCH, shuffle=True)
    for name, value in expected.items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected["weight"], torch.zeros(1, 2))  # it trained


def test_polyfit_whose_forward_uses_the_flat_coefficients_trains_under_ddp(tmp_path):
    # polyfit's matmul polynomial computes with the optimizer's flat tensor, not its three
    # coefficients, when it may (framework.flat_parameters.lent_leaf); DDP waits for each
    # coefficient's own gradient, so under DDP it must not. Against the tutorial's own loop.
    from tests.framework.test_reference_tasks import SEED

    script = tmp_path / "save_parameters.py"
    script.write_text(SAVE_PARAMETERS)
    done = run_torchrun(tmp_path, str(script), str(tmp_path), "+task=polyfit", "trainer.device=cpu",
                        "trainer.strategy=ddp", "trainer.max_steps=30", "logger=[]",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(RANKS)]
    torch.manual_seed(SEED)
    x = torch.randn(20) * 5
    features, targets = torch.stack([x**2, x, torch.ones_like(x)], dim=1), (x**2 + 2 * x + 3).unsqueeze(1)
    weight = torch.randn(3, 1, requires_grad=True)
    optimizer = torch.optim.NAdam([weight], lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(features @ weight, targets).backward()
        optimizer.step()
    for rank in ranks:
        got = torch.stack([rank["A"], rank["B"], rank["C"]])
        torch.testing.assert_close(got, weight.detach()[:, 0], rtol=1e-5, atol=1e-6)


def test_a_sum_loss_over_unequal_blocks_one_run_folder_written_by_rank_0(tmp_path):
    # sse over the full batch of 12 rows... 11 of them: blocks of 5 and 6 rows.
    csv = tmp_path / "rows.csv"
    features, targets = write_rows(csv)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")
    features, targets = features[:-1], targets[:-1]
    done = run_torchrun(tmp_path, "-m", "framework", *linear_task(
        csv, "loss=sse", "optimizer=sgd", "optimizer.lr=0.01", "trainer.max_steps=20", "logger=[console,tensorboard]"))
    assert done.returncode == 0, done.stderr[-3000:]
    folders = [path for path in (tmp_path / "outputs").glob("*/*") if path.is_dir()]
    assert len(folders) == 1, folders  # no rank resolved a folder of its own
    run_dir = folders[0]
    assert {"result.json", "model.safetensors", "checkpoints", ".hydra"} <= {p.name for p in run_dir.iterdir()}
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "rows.csv"]  # nothing stray
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 20
    assert set(result["params"]) == {"weight", "bias"}
    expected = plain_loop(features, targets, steps=20, lr=0.01, optimizer="sgd", loss="sse", batch_size=None,
                          shuffle=False)
    saved, _ = read_weights(run_dir / "model.safetensors")
    assert sorted(saved) == ["bias", "weight"]
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(result["params"][name]), value, rtol=1e-5, atol=1e-6)
    # params/ tags as one process names them, and train/loss the global batch's loss.
    accumulator = events(run_dir)
    scalars = set(accumulator.Tags()["scalars"])
    assert {"params/weight/0_0", "params/weight/0_1", "params/bias", "train/loss"} <= scalars
    assert not any("module" in tag for tag in scalars)
    first_loss = accumulator.Scalars("train/loss")[0].value
    assert first_loss == pytest.approx(float(targets.pow(2).sum()), rel=1e-5)  # zero weights: the targets' sse
    # One console: rank 0's progress lines, once.
    assert done.stdout.count("completed after 20 steps") == 1, done.stdout[-3000:]


def test_a_non_finite_loss_on_one_rank_ends_every_rank(tmp_path):
    # Row 11 (in rank 1's block of the full batch) overflows float32 when squared.
    csv = tmp_path / "rows.csv"
    targets = torch.zeros(ROWS, 1)
    targets[-1] = 1e30
    write_rows(csv, targets)
    done = run_torchrun(tmp_path, "-m", "framework", *linear_task(
        csv, "trainer.max_steps=1000", "logger=[]", f"hydra.run.dir={tmp_path / 'run'}"))
    assert done.returncode != 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and result["stop_reason"] == "non_finite_loss"
    assert result["steps"] == 1  # the first step's loss: no rank went on past it
    assert "the loss is inf at step 1" in done.stderr, done.stderr[-3000:]


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of torchrun's workers, from their environment (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == launcher.pid:
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(entry.name)
    return found


def wait_for(condition, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if launcher.poll() is not None:
            pytest.fail(f"the run ended (exit {launcher.returncode}) before the test could stop it:\n"
                        f"{launcher.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(launcher.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the run")
        time.sleep(0.01)


def finish(launcher: subprocess.Popen) -> str:
    try:
        return launcher.communicate(timeout=TIMEOUT)[1]
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        pytest.fail("a rank hung after the stop")


LONG_RUN = ("optimizer=sgd", "optimizer.lr=0.001", f"data.batch_size={BATCH}", "data.shuffle=true",
            "trainer.checkpoint_every=25", "logger=[]")


def test_a_stop_on_one_rank_ends_every_rank_cleanly(tmp_path):
    # SIGTERM to rank 1 alone: rank 0 learns of it at the next step boundary, saves and writes
    # result.json; without the agreement it would wait in the next all-reduce until killed.
    csv = tmp_path / "rows.csv"
    write_rows(csv)
    run_dir = tmp_path / "run"
    launcher = start_torchrun(tmp_path, "-m", "framework", *linear_task(
        csv, *LONG_RUN, "trainer.max_steps=10000000", f"hydra.run.dir={run_dir}"))
    wait_for(lambda: list_checkpoints(run_dir), launcher)
    os.kill(rank_pids(launcher)[1], signal.SIGTERM)
    stderr = finish(launcher)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["stop_reason"] == "SIGTERM", stderr[-3000:]
    assert list_checkpoints(run_dir)[-1].name == f"step_{result['steps']:010d}.pt"
    assert (run_dir / "model.safetensors").is_file()


def test_sigterm_to_the_whole_group_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    csv = tmp_path / "rows.csv"
    write_rows(csv)
    steps = "trainer.max_steps=1000"
    whole = run_torchrun(tmp_path, "-m", "framework", *linear_task(csv, *LONG_RUN, steps, f"hydra.run.dir={tmp_path / 'whole'}"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "cut"
    launcher = start_torchrun(tmp_path, "-m", "framework", *linear_task(csv, *LONG_RUN, steps, f"hydra.run.dir={run_dir}"))
    wait_for(lambda: list_checkpoints(run_dir), launcher)
    os.killpg(launcher.pid, signal.SIGTERM)  # torchrun and both ranks, as a scheduler would
    stderr = finish(launcher)
    cut = json.loads((run_dir / "result.json").read_text())
    assert cut["status"] == "interrupted" and 0 < cut["steps"] < 1000, stderr[-3000:]

    resumed = run_torchrun(tmp_path, "-m", "framework", *linear_task(csv, *LONG_RUN, steps, f"trainer.resume={run_dir}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 1000
    expected, _ = read_weights(tmp_path / "whole" / "model.safetensors")
    got, _ = read_weights(run_dir / "model.safetensors")
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert json.loads((tmp_path / "whole" / "result.json").read_text())["final_loss"] == result["final_loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "rows.csv", "whole"]  # no stray folder


def test_ddp_without_a_launcher_is_refused_by_name(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        framework.train(["+task=linear", "trainer.strategy=ddp", "logger=[]"], run_dir=tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "torchrun" in result["error"]


def test_a_sweep_under_torchrun_is_refused_before_any_folder_is_made(tmp_path):
    # Lightning #2727: every rank would run the whole sweep. Rank 0 refuses it before Hydra runs
    # and passes its exit status to the others, which wait for its run folder (torchrun may
    # stop them first: it ends the group once one process fails).
    done = run_torchrun(tmp_path, "-m", "framework", "-m", "+task=linear", "trainer.strategy=ddp",
                        "optimizer.lr=0.001,0.01", "logger=[]")
    assert done.returncode != 0
    assert done.stderr.count("a sweep (-m) under torchrun would run the whole sweep in every process") == 1
    assert "exitcode  : 2" in done.stderr, done.stderr[-3000:]  # torchrun's report: a config error
    assert list(tmp_path.iterdir()) == []  # no folder, sweep or run
