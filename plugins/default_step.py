"""The default training step: zero_grad, forward, loss, backward, then the optimizer's step."""

import torch

from framework import hookimpl
from framework.flat_parameters import ELEMENTWISE_OPTIMIZERS


@hookimpl(trylast=True)
def framework_configure_step(state):
    run, progress = state.run, state.progress
    model, loss_fn, optimizer = run.model, run.loss_fn, run.optimizer
    clip = run.trainer.grad_clip
    parameters = list(run.trainable.values())

    def gradients(features, targets):
        optimizer.zero_grad()
        loss = loss_fn(model(features), targets)
        loss.backward()
        if clip is not None:
            progress.grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        return loss

    # These evaluate a closure once, before their update: calling it first, then step(), is the
    # same step without a closure and torch.enable_grad per step (the loop runs with gradients on).
    if type(optimizer) in ELEMENTWISE_OPTIMIZERS:
        def step(features, targets):
            loss = gradients(features, targets)
            optimizer.step()
            return loss

        return step

    def step(features, targets):
        # LBFGS (and any other optimizer) calls the closure as often as it needs.
        # optimizer.step returns the first evaluation's loss: the loss before this update.
        return optimizer.step(lambda: gradients(features, targets))

    return step
