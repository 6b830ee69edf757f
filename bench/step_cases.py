"""The in-process cases: per-step cost (W1 polyfit, W2 legendre, CUDA), large data (W3, W4), and
the reference tasks' whole fits. Both sides run in this one process, in turn (bench/measure.py).

Per step means the loop's steps, not set-up: each side is timed on N steps and on one step
(on 2 epochs and 1 for W4) and the per-step cost is (t(N) − t(1)) / (N − 1), with the timed
window around the loop alone on both sides (the framework's: bench/framework_side.py), so what
is paid once per run cancels twice over.
"""

from __future__ import annotations

import inspect
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

from bench import plain_loops
from bench.framework_side import FrameworkSide
from bench.measure import Goal, Outcome, Row, Side, interleaved, row_from, trained_check


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats: the issue's (full) or tiny ones (``--tiny``: seconds, for CI)."""

    tiny: bool = False
    repeats: int | None = None  # None: each case's own default

    def size(self, full: int, tiny: int) -> int:
        return tiny if self.tiny else full

    def times(self, full: int) -> int:
        """How many timed repeats: ``--repeats``, else the case's default (1 when tiny)."""
        return self.repeats or (1 if self.tiny else full)

    @property
    def warmups(self) -> int:
        return 0 if self.tiny else 1


# The logging variants of W1 and W2: (name, framework overrides, plain loop's log_every, goal).
LOGGING_VARIANTS = (
    ("no logging", ["logger=[]"], None, 1.05),
    ("TensorBoard every 50 steps", ["logger=[tensorboard]", "trainer.log_every=50"], 50, 1.05),
    ("TensorBoard every step", ["logger=[tensorboard]", "trainer.log_every=1"], 1, 1.40),
)
PER_STEP_NOTE = ("per step = (t(N) − t(1)) / (N − 1), each t the loop alone (framework: from the last "
                 "framework_fit_start to the first framework_fit_end)")


def with_summary_writer(loop: Callable, log_every: int | None) -> Callable[[int], tuple]:
    """The plain loop, given a SummaryWriter made (and closed) outside its timed window."""
    if log_every is None:
        return loop

    def logged(steps: int):
        from torch.utils.tensorboard import SummaryWriter

        with tempfile.TemporaryDirectory(prefix="bench_plain_") as folder:
            writer = SummaryWriter(log_dir=folder)
            try:
                return loop(steps, writer=writer, log_every=log_every)
            finally:
                writer.close()

    return logged


def framework_steps(framework: FrameworkSide, overrides: list[str], *, task: str | None,
                    run_folder: bool) -> Callable[[int], tuple]:
    """A side that trains ``overrides`` for the given number of steps."""

    def run(steps: int):
        seconds, outcome, _ = framework.fit([*overrides, f"trainer.max_steps={steps}"], task=task,
                                            run_folder=run_folder)
        return seconds, outcome

    return run


def logging_case(case: str, workload: str, task: str, plain_loop: Callable, plain_describe: str,
                 framework: FrameworkSide, settings: Settings, *, steps: int, repeats: int,
                 device: str = "cpu", variants=LOGGING_VARIANTS, rtol: float, atol: float) -> list[Row]:
    rows = []
    for name, extra, log_every, goal in variants:
        logs = log_every is not None
        framework_side = Side(
            "framework", f"python -m framework +task={task} {' '.join(extra)}".strip(),
            framework_steps(framework, [f"+task={task}", f"trainer.device={device}", *extra], task=task,
                            run_folder=logs))
        plain_side = Side(
            "plain", plain_describe + (f"; SummaryWriter.add_scalar('train/loss', loss.item(), step) every "
                                       f"{log_every} step{'s' if log_every > 1 else ''}" if logs else ""),
            with_summary_writer(plain_loop, log_every))
        timed = interleaved([framework_side, plain_side], settings.size(steps, 20), settings.times(repeats),
                            settings.warmups)
        check = trained_check(timed["framework"]["outcome"], timed["plain"]["outcome"], rtol=rtol, atol=atol)
        notes = PER_STEP_NOTE
        if logs:
            notes += ("; the framework logs train/loss, train/lr, train/grad_norm and params/* at step 1, "
                      "every N steps and the last; the plain loop train/loss only")
        rows.append(row_from(case, f"{workload}, {name}", timed, framework_side, plain_side, unit="step",
                             goal=Goal("ratio", goal), check=check, notes=notes))
    return rows


def w1_polyfit(framework: FrameworkSide, settings: Settings) -> list[Row]:
    return logging_case(
        "w1", "W1 polyfit", "polyfit", plain_loops.polyfit,
        "tutorial loop: X = [x², x, 1] (20 rows), one (3,1) weight, NAdam lr 0.01, MSE",
        framework, settings, steps=1000, repeats=11,
        # polyfit's model computes X @ w as the tutorial does: the same parameters, bit for bit
        # (on the CPU; the cuda case compares with this loop on the GPU, whose kernels may differ).
        rtol=0.0, atol=0.0)


def w2_legendre(framework: FrameworkSide, settings: Settings) -> list[Row]:
    return logging_case(
        "w2", "W2 legendre", "legendre", plain_loops.legendre,
        "tutorial polynomial_custom_function: a + b·P3(c + d·x) on 2000 points, sum of squares, "
        "p -= lr·p.grad under no_grad, p.grad = None",
        framework, settings, steps=2000, repeats=11, rtol=1e-4, atol=1e-5)


def line_overrides(rows: int, lr: float) -> list[str]:
    """y = 2x + 1 on ``rows`` rows drawn by the synthetic polynomial data source, fitted by a
    linear model from zeros with MSE and SGD: the framework's way to hold W3's and W4's data."""
    return ["data=polynomial", f"data.n={rows}", "data.coefficients=[2.0,1.0]", "data.x_scale=1.0",
            "model=linear", "model.init=zeros", "loss=mse", "optimizer=sgd", f"optimizer.lr={lr}",
            "logger=[]", "trainer.device=cpu"]


LINE_LR = 0.3  # converges within a few steps on x ~ N(0, 1) (the Hessian is about 2·I)


def w3_full_batch(framework: FrameworkSide, settings: Settings) -> list[Row]:
    rows = settings.size(10_000_000, 4096)
    overrides = line_overrides(rows, LINE_LR)
    framework_side = Side("framework", f"python -m framework {' '.join(overrides)} (full batch)",
                          framework_steps(framework, overrides, task=None, run_folder=False))
    plain_side = Side("plain", f"nn.Linear(1,1) from zeros, MSE, SGD lr {LINE_LR} on all {rows:,} rows every step",
                      partial(plain_loops.full_batch_line, rows=rows, lr=LINE_LR))
    timed = interleaved([framework_side, plain_side], settings.size(10, 3), settings.times(9), settings.warmups)
    check = trained_check(timed["framework"]["outcome"], timed["plain"]["outcome"], rtol=1e-4, atol=1e-5)
    return [row_from("w3", f"W3 full batch of {rows:,} rows", timed, framework_side, plain_side, unit="step",
                     goal=Goal("ratio", 1.01), check=check, notes=PER_STEP_NOTE)]


def w4_shuffled_epoch(framework: FrameworkSide, settings: Settings) -> list[Row]:
    rows, batch_size = settings.size(1_000_000, 8192), 1024
    overrides = [*line_overrides(rows, LINE_LR), f"data.batch_size={batch_size}", "data.shuffle=true",
                 "trainer.max_steps=null"]

    def framework_epochs(epochs: int):
        seconds, outcome, _ = framework.fit([*overrides, f"trainer.max_epochs={epochs}"], task=None, run_folder=False)
        return seconds, outcome

    framework_side = Side("framework", f"python -m framework {' '.join(overrides)} trainer.max_epochs=1",
                          framework_epochs)
    sliced = Side("randperm slicing", f"one torch.randperm per epoch, X[rows] for each batch of {batch_size}, "
                                      "the same step", partial(plain_loops.sliced_epochs, rows=rows,
                                                              batch_size=batch_size, lr=LINE_LR))
    loader = Side("DataLoader", f"DataLoader(TensorDataset(X, y), batch_size={batch_size}, shuffle=True), "
                                "the same step", partial(plain_loops.dataloader_epochs, rows=rows,
                                                        batch_size=batch_size, lr=LINE_LR),
                  method="direct", warmup=False)
    bare = Side("bare autograd loop", f"the epoch's rows gathered once and sliced, F.linear and F.mse_loss on two "
                                      f"leaf tensors, p -= lr * p.grad: the least an autograd step costs",
                partial(plain_loops.bare_epochs, rows=rows, batch_size=batch_size, lr=LINE_LR))
    # Two epochs and one: the DataLoader's two epochs are timed whole (direct).
    timed = interleaved([framework_side, sliced, loader, bare], 2, settings.times(3), settings.warmups)
    name = f"W4 one shuffled epoch of {rows:,} rows, batch {batch_size}"
    notes = ("per epoch = t(2 epochs) − t(1 epoch), the loop alone (the DataLoader: two epochs timed whole); "
             "the two sides shuffle with different generators, so parameters agree only once converged; "
             f"the bare autograd loop is {timed['DataLoader']['median'] / timed[bare.label]['median']:.0f}× "
             "faster than the DataLoader here: no loop whose step runs autograd gets much beyond that")
    result = []
    # The bare loop shows how far an autograd step can go: against the DataLoader, the ceiling
    # of any framework's speed-up on this machine.
    for plain_side, goal in ((loader, Goal("speedup", 50)), (sliced, Goal("ratio", 1.10)), (bare, None)):
        check = trained_check(timed["framework"]["outcome"], timed[plain_side.label]["outcome"], rtol=0, atol=1e-2)
        result.append(row_from("w4", f"{name} vs {plain_side.label}", timed, framework_side, plain_side,
                               unit="epoch", goal=goal, check=check, notes=notes))
    return result


# The reference tasks' whole fits: variant -> (overrides, whether it trains into a run folder).
TASK_VARIANTS = {
    "no loggers": (["logger=[]"], False),
    "+checkpoints every 100": (["logger=[]", "trainer.checkpoint_every=100"], True),
    "+default loggers": ([], True),
}
TASK_NOTES = {
    "per step": "per step = (t(N) − t(1)) / (N − 1), each t a whole fit (framework: building the run, the loop, "
                "the final loss and result; plain: the loop function with its set-up), so what a fit pays once "
                "cancels; N the task's own steps",
    "whole fit": "whole fit: build, loop, final loss, outputs (not the config's composition); the plain loop as "
                 "the task's tutorial writes it",
}


def whole_framework_fit(framework: FrameworkSide, overrides: list[str], task: str,
                        run_folder: bool) -> Callable[[int], tuple]:
    return lambda _units: framework.whole_fit(overrides, task=task, run_folder=run_folder)


def framework_fit_of(framework: FrameworkSide, overrides: list[str], task: str) -> Callable[[int], tuple]:
    """A whole fit of ``steps`` steps (no run folder)."""
    return lambda steps: framework.whole_fit([*overrides, f"trainer.max_steps={steps}"], task=task, run_folder=False)


def whole_plain_fit(loop: Callable[[], dict]) -> Callable[[int], tuple]:
    def run(_units: int):
        started = time.perf_counter()
        params = loop()
        return time.perf_counter() - started, Outcome(None, plain_loops.flat(*params.values()))

    return run


def plain_fit_of(loop: Callable[..., dict]) -> Callable[[int], tuple]:
    """The plain loop run for ``steps`` steps, timed whole."""
    return lambda steps: whole_plain_fit(partial(loop, steps=steps))(steps)


def tutorial_steps(loop: Callable[..., dict]) -> int:
    """How many steps the task's plain loop takes by default: the tutorial's, and the task's."""
    return inspect.signature(loop).parameters["steps"].default


def reference_tasks(framework: FrameworkSide, settings: Settings) -> list[Row]:
    """Per task: the loop's cost per step against the plain loop's (the issue's goal, ≤ 1.03
    with no loggers), and whole fits with each variant of outputs (no goal: the whole
    process's is the start-up case's)."""
    from tests.framework.test_reference_tasks import PLAIN_LOOPS

    rows = []
    tasks = ["polyfit", "linear"] if settings.tiny else sorted(PLAIN_LOOPS)
    for task in tasks:
        loop, base = PLAIN_LOOPS[task], [f"+task={task}", "trainer.device=cpu"]
        framework_side = Side("framework", f"python -m framework {' '.join(base)} logger=[] trainer.max_steps=N",
                              framework_fit_of(framework, [*base, "logger=[]"], task))
        plain_side = Side("plain", f"the plain loop of tests/framework/test_reference_tasks.py ({task}), N steps",
                          plain_fit_of(loop))
        timed = interleaved([framework_side, plain_side], settings.size(tutorial_steps(loop), 5),
                            settings.times(7), settings.warmups)
        check = trained_check(timed["framework"]["outcome"], timed["plain"]["outcome"], rtol=0, atol=0)
        rows.append(row_from("tasks", f"task {task}, per step, no loggers", timed, framework_side, plain_side,
                             unit="step", goal=Goal("ratio", 1.03), check=check, notes=TASK_NOTES["per step"]))

        plain_side = Side("plain", f"the plain loop of tests/framework/test_reference_tasks.py ({task})",
                          whole_plain_fit(loop), method="direct")
        sides = [plain_side]
        for variant, (extra, run_folder) in TASK_VARIANTS.items():
            overrides = [*base, *extra]
            sides.append(Side(variant, f"python -m framework {' '.join(overrides)}",
                              whole_framework_fit(framework, overrides, task, run_folder), method="direct"))
        timed = interleaved(sides, 1, settings.times(3), settings.warmups)
        for side in sides[1:]:
            check = trained_check(timed[side.label]["outcome"], timed["plain"]["outcome"], rtol=0, atol=0)
            rows.append(row_from("tasks", f"task {task}, whole fit, {side.label}", timed, side, plain_side,
                                 unit="fit", goal=None, check=check, notes=TASK_NOTES["whole fit"]))
    return rows


def cuda_polyfit(framework: FrameworkSide, settings: Settings) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return [Row("cuda", "CUDA W1 polyfit", "python -m framework +task=polyfit trainer.device=cuda "
                    "logger=[]", "the W1 tutorial loop on the GPU", "step", skipped="torch sees no CUDA device")]
    return logging_case(
        "cuda", "CUDA W1 polyfit", "polyfit", partial(plain_loops.polyfit, device="cuda"),
        "tutorial loop on the GPU: X = [x², x, 1] (20 rows), one (3,1) weight, NAdam lr 0.01, MSE",
        framework, settings, steps=1000, repeats=11, device="cuda", variants=LOGGING_VARIANTS,
        rtol=1e-3, atol=1e-3)
