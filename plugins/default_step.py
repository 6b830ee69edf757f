"""The default training step: zero_grad, forward, loss, backward inside a closure, then step."""

import torch

from framework import hookimpl


@hookimpl(trylast=True)
def framework_configure_step(state):
    run, progress = state.run, state.progress
    model, loss_fn, optimizer = run.model, run.loss_fn, run.optimizer
    clip = run.trainer.grad_clip
    parameters = list(run.trainable.values())

    def step(features, targets):
        # One closure for every optimizer: LBFGS calls it several times, the others once.
        def closure():
            optimizer.zero_grad()
            loss = loss_fn(model(features), targets)
            loss.backward()
            if clip is not None:
                progress.grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
            return loss

        # optimizer.step returns the first evaluation's loss: the loss before this update.
        return optimizer.step(closure)

    return step
