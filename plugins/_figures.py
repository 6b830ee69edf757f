"""Pictures of a fit for TensorBoard's Images tab (a helper module of tensorboard_logger).

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global figure state, no
display needed.
"""

from __future__ import annotations

import numpy
import torch

MAX_POINTS = 2000  # points drawn from the data; more only slow the picture down
MAX_RESIDUAL_ROWS = 64  # a bar per row reads well up to about this many rows
LOG_SCALE_SPAN = 100.0  # a loss falling by more than this factor is drawn on a log axis


def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins: tight_layout measures every label and costs more than the drawing itself.
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.91)
    return figure, figure.add_subplot()


def _pixels(figure) -> numpy.ndarray:
    """The drawn figure as an HWC uint8 RGB image."""
    figure.canvas.draw()
    return numpy.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def wants_log_scale(losses: list[float]) -> bool:
    """Positive losses that span more than LOG_SCALE_SPAN read better on a log axis."""
    return min(losses) > 0 and max(losses) / min(losses) > LOG_SCALE_SPAN


def loss_figure(steps: list[int], losses: list[float], title: str) -> numpy.ndarray:
    """The logged loss against the step, on a log axis when it spans orders of magnitude."""
    figure, axes = _new_figure()
    axes.plot(steps, losses, color="tab:blue", marker="." if len(steps) < 50 else None)
    if wants_log_scale(losses):
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("train/loss")
    axes.set_title(title)
    return _pixels(figure)


def fit_figure(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, title: str):
    """(tag, HWC uint8 image) for the data with the fitted curve (one input and one output
    column) or each row's residual (small data), or None when neither reads well."""
    figure, axes = _new_figure()
    with torch.no_grad():
        if features.shape[1] == 1 and targets.shape[1] == 1:
            tag = "fit/curve"
            step = max(1, features.shape[0] // MAX_POINTS)
            x, y = features[::step, 0].cpu(), targets[::step, 0].cpu()
            dense = torch.linspace(float(features.min()), float(features.max()), 200,
                                   dtype=features.dtype, device=features.device)
            curve = model(dense[:, None])[:, 0].cpu()
            axes.scatter(x.numpy(), y.numpy(), s=8, color="tab:blue", label="data")
            axes.plot(dense.cpu().numpy(), curve.numpy(), color="tab:red", label="model")
            axes.set_xlabel("x")
            axes.set_ylabel("y")
            axes.legend()
        elif features.shape[0] <= MAX_RESIDUAL_ROWS:
            tag = "fit/residuals"
            residuals = (model(features) - targets).sum(dim=1).cpu().numpy()
            rows = numpy.arange(1, len(residuals) + 1)
            axes.bar(rows, residuals, color="tab:purple")
            axes.axhline(0.0, color="black", linewidth=0.8)
            axes.set_xticks(rows)
            axes.set_xlabel("row (equation)")
            axes.set_ylabel("prediction − target")
        else:
            return None
    axes.set_title(title)
    return tag, _pixels(figure)
