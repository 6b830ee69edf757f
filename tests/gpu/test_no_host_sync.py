"""On a GPU, a step that does not log synchronises nothing with the host (issue 10): every such
step runs under ``torch.cuda.set_sync_debug_mode("error")``, which raises at any operation that
waits on the device (``.item()``, a device-to-host copy, a data-dependent shape...). So also with
``trainer.precision`` bf16, and 16-mixed with a fused optimizer: torch's GradScaler reads whether
it found an inf (one sync a step) to decide whether to call a non-fused optimizer's step, while
a fused one (``optimizer.fused=true``) skips the update on the device.

Marked ``gpu`` and skipped without a CUDA device.
"""

from __future__ import annotations

import pytest
import torch

from framework import hookimpl

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class SyncsRefused:
    """Sync debug mode "error" from the end of each logging step (its reads done; step 1 is
    the first) to the end of the next logging step's own work, and off where the loop reads
    the losses back. Not before step 1: the doctor reads the problem at fit start."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.checked_steps = 0

    def is_log_step(self, state, step: int) -> bool:
        return step == 1 or step % self.log_every == 0 or step == state.run.max_steps

    @hookimpl
    def framework_step_end(self, state, loss):
        if self.is_log_step(state, state.progress.step):
            torch.cuda.set_sync_debug_mode("default")  # the loop reads the losses now
        else:
            self.checked_steps += 1

    @hookimpl
    def framework_log(self, state, step, metrics):
        if step < state.run.max_steps:
            torch.cuda.set_sync_debug_mode("error")  # the next steps do not log

    @hookimpl
    def framework_fit_end(self, state, result):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("task,extra", [
    ("polyfit", []),  # NAdam over a flat tensor of three coefficients
    ("legendre", []),  # SGD, a custom autograd Function
    ("linear", ["optimizer=adam"]),
    ("polyfit", ["data.batch_size=7", "data.shuffle=true"]),  # shuffled minibatches, index slicing
    ("polyfit", ["trainer.grad_clip=1.0", "scheduler=cosine"]),
    ("linear2d", ["trainer.precision=bf16"]),  # nn.Linear under bfloat16 autocast
    ("polyfit", ["trainer.precision=bf16", "data.batch_size=7", "data.shuffle=true"]),
    ("linear2d", ["trainer.precision=16-mixed", "optimizer=adam", "optimizer.fused=true"]),
    # a flat parameter, fused SGD, the scaler's unscale before the clip
    ("polyfit", ["trainer.precision=16-mixed", "optimizer=sgd", "optimizer.lr=1e-4", "optimizer.fused=true",
                 "trainer.grad_clip=1.0"]),
])
def test_steps_that_do_not_log_never_synchronise(task, extra, train, manager, tmp_path):
    log_every = 25
    refuse = SyncsRefused(log_every)
    manager.register_plugin(refuse, "syncs_refused", "test")
    try:
        result = train([f"+task={task}", "trainer.device=cuda", "trainer.max_steps=200",
                        f"trainer.log_every={log_every}", "logger=[tensorboard]", *extra],
                       run_dir=tmp_path, task=task)
    finally:
        manager.unregister(refuse)
        torch.cuda.set_sync_debug_mode("default")
    assert result["status"] == "completed" and result["steps"] == 200
    assert refuse.checked_steps == 200 - 1 - 200 // log_every  # every step but the logging ones


def test_the_sync_check_catches_a_sync(train, manager, tmp_path):
    """The check above can fail: a plugin that reads the loss at every step is caught."""

    class ReadsEveryLoss(SyncsRefused):
        @hookimpl
        def framework_step_end(self, state, loss):
            loss.item()

    refuse = ReadsEveryLoss(25)
    manager.register_plugin(refuse, "reads_every_loss", "test")
    try:
        result = None
        with pytest.raises(Exception, match="synchroniz"):
            result = train(["+task=polyfit", "trainer.device=cuda", "trainer.max_steps=60", "trainer.log_every=25",
                            "logger=[]"], run_dir=tmp_path)
    finally:
        manager.unregister(refuse)
        torch.cuda.set_sync_debug_mode("default")
    assert result is None


def test_16_mixed_with_a_non_fused_optimizer_syncs_in_the_scaler(train, manager, tmp_path):
    """What the README says of 16-mixed: torch's GradScaler reads found_inf (.item()) before a
    non-fused optimizer's step, one sync a step; the check above would catch it."""
    refuse = SyncsRefused(25)
    manager.register_plugin(refuse, "syncs_refused", "test")
    try:
        with pytest.raises(Exception, match="synchroniz"):
            train(["+task=linear2d", "trainer.device=cuda", "trainer.precision=16-mixed", "trainer.max_steps=60",
                   "trainer.log_every=25", "logger=[]"], run_dir=tmp_path)
    finally:
        manager.unregister(refuse)
        torch.cuda.set_sync_debug_mode("default")
