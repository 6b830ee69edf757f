"""The ``console`` logger: a live progress bar on a terminal, a few progress lines otherwise, and
the final loss, the optimality gap of a least-squares fit, and the parameters at the end."""

import logging
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from framework import Component, hookimpl, setting

log = logging.getLogger("framework")


@dataclass
class ConsoleConfig:
    progress: bool = True  # live bar (tqdm) when stderr is a terminal
    lines: int = setting(10, ge=0)  # progress lines per run when it is not (0: none)


class ConsoleLogger:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.bar = None
        self.next_line_step = 0

    @hookimpl
    def framework_fit_start(self, state):
        run, done = state.run, state.progress.step
        label = run.task or "run"
        if done >= run.max_steps:  # resumed at its step limit (the resume has said so)
            log.info("%s: nothing to train: at step %d, the step limit is %d", label, done, run.max_steps)
            return
        if self.config.progress and sys.stderr.isatty():
            # tqdm redraws at most every 0.1 s, whatever the step rate.
            self.bar = tqdm(total=run.max_steps, initial=done, desc=label, unit="step", mininterval=0.1,
                            dynamic_ncols=True, leave=False)
        span = f"from step {done} to step {run.max_steps}" if done else f"for {run.max_steps} steps"
        rows = f"{len(run.data)} rows"
        if run.data.validation is not None:
            rows += f" ({len(run.data.validation)} held out for validation)"
        log.info("%s: training %s on %s %s on %s (%d threads)", label,
                 type(run.model).__name__, rows, span, run.device, torch.get_num_threads())

    @hookimpl
    def framework_log(self, state, step, metrics):
        loss, val_loss = metrics["train/loss"], metrics.get("val/loss")  # val/loss: validation steps only
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            shown = {"loss": f"{loss:.6g}"}
            if val_loss is not None:
                shown["val_loss"] = f"{val_loss:.6g}"
            self.bar.set_postfix(shown, refresh=False)
        elif self.config.lines and step >= self.next_line_step:
            val_text = "" if val_loss is None else f"  val loss {val_loss:.6g}"
            log.info("step %d/%d  loss %.6g%s", step, state.run.max_steps, loss, val_text)
            every = max(1, state.run.max_steps // self.config.lines)
            self.next_line_step = (step // every + 1) * every

    @hookimpl
    def framework_fit_end(self, state, result):
        if self.bar is not None:
            self.bar.close()
        final, final_val = result["final_loss"], result.get("final_val_loss")
        final_text = "n/a" if final is None else f"{final:.6g}"
        if final_val is not None:  # the run has a validation set
            final_text += f", final val loss {final_val:.6g}"
        log.info("%s %s after %d steps (%s) in %.2f s; final loss %s", state.run.task or "run",
                 result["status"], result["steps"], result["stop_reason"], result["wall_s"], final_text)
        if result.get("optimal_loss") is not None:  # a least-squares fit (plugin optimality_gap)
            gap = result.get("optimality_gap")
            log.info("least-squares optimum %.6g; optimality gap %s", result["optimal_loss"],
                     "n/a" if gap is None else f"{gap:.6g}")
        for name, value in (result["params"] or {}).items():
            log.info("  %s = %s", name, value)


@hookimpl
def framework_components():
    return [Component("logger", "console", lambda config, **context: ConsoleLogger(config), ConsoleConfig,
                      help="progress on the terminal and the final loss and parameters")]
