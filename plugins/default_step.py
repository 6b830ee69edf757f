"""The default training step: zero_grad, forward, loss, backward, then the optimizer's step;
under ``trainer.precision`` bf16 or 16-mixed, the forward pass and loss under autocast and, for
16-mixed, the loss scaled and the update made through the gradient scaler (framework/precision.py)."""

import torch

from framework import hookimpl
from framework.flat_parameters import ELEMENTWISE_OPTIMIZERS, lending_forward


@hookimpl(trylast=True)
def framework_configure_step(state):
    run, progress = state.run, state.progress
    model, loss_fn, optimizer = run.model, run.loss_fn, run.optimizer
    clip = run.trainer.grad_clip
    parameters = list(run.trainable.values())
    precision = run.precision
    if precision is not None and precision.scaler is not None:
        return scaled_step(run, progress, precision)
    forward = lending_forward(model, optimizer)

    if precision is None:
        def gradients(features, targets):
            optimizer.zero_grad()
            loss = loss_fn(forward(features), targets)
            loss.backward()
            if clip is not None:
                progress.grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
            return loss
    else:  # bf16: the same, with the forward pass and loss under autocast
        def gradients(features, targets):
            optimizer.zero_grad()
            with precision.autocast():
                loss = loss_fn(forward(features), targets)
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


def scaled_step(run, progress, precision):
    """16-mixed: torch's recipe for ``GradScaler`` (the "Automatic Mixed Precision examples"),
    with gradient clipping. The optimizer takes no closure (framework.precision refuses one that
    needs it)."""
    model, loss_fn, optimizer, scaler = run.model, run.loss_fn, run.optimizer, precision.scaler
    clip = run.trainer.grad_clip
    parameters = list(run.trainable.values())

    def step(features, targets):
        optimizer.zero_grad()
        with precision.autocast():
            loss = loss_fn(model(features), targets)
        scaler.scale(loss).backward()
        # Unscaled now, not inside scaler.step (which would do the same work): the clip and the
        # logged train/grad_norm see the true gradients.
        scaler.unscale_(optimizer)
        if clip is not None:
            progress.grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        scaler.step(optimizer)  # skipped when the gradients hold an inf or a NaN
        scaler.update()
        return loss

    return step
