"""Pictures of a fit for TensorBoard's Images tab (a helper module of tensorboard_logger).

Two halves, so that the drawing can run in a process that never imports torch
(``_figure_writer``): :func:`fit_points` reads what a figure shows off the model and the data
(torch, in the training process, cheap), and :func:`draw_fit` and :func:`loss_figure` draw it
(numpy and matplotlib only). Drawn with matplotlib's object API on an Agg canvas: no pyplot, no
global figure state, no display needed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy

if TYPE_CHECKING:
    import torch

# Titles sit at the top of the axes (y = 1, plus matplotlib's pad), where matplotlib's automatic
# placement puts them too when nothing is drawn above the axes, as in every figure here; placing
# it measures every tick label (a quarter of a figure's drawing time).
TITLE_Y = 1.0
MAX_POINTS = 2000  # points drawn from the data; more only slow the picture down
MAX_RESIDUAL_ROWS = 64  # a bar per row reads well up to about this many rows
LOG_SCALE_SPAN = 100.0  # a loss falling by more than this factor is drawn on a log axis


@dataclass
class FitPoints:
    """What a fit figure shows, as plain arrays: ``fit/curve`` has the data (x, y) and the
    model's curve (curve_x, curve_y); ``fit/residuals`` has each row's residual in y."""

    tag: str
    x: numpy.ndarray
    y: numpy.ndarray
    curve_x: numpy.ndarray | None = None
    curve_y: numpy.ndarray | None = None


# The figure each thread draws on, cleared for every drawing (a figure is drawn by one thread).
_drawing = threading.local()


def _new_figure():
    """A blank figure and its axes: this thread's, cleared. Clearing the axes gives them the
    state of new ones (their pixels are the same: tests/plugins/test_tensorboard_logger.py), and
    drawing them again reuses their tick and text objects: a sweep's figure writer draws two
    figures a job, which cost it a tenth more CPU on new figures (polyfit's: 184 against 168 ms)."""
    held = getattr(_drawing, "figure", None)
    if held is not None:
        held[1].cla()
        return held
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins: tight_layout measures every label and costs more than the drawing itself.
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.91)
    _drawing.figure = held = (figure, figure.add_subplot())
    return held


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
        from matplotlib.ticker import NullLocator

        axes.set_yscale("log")
        # Only the decades are marked: the eight minor ticks a decade cost as much to draw as the
        # rest of the figure, and the scalars tab has the exact values.
        axes.yaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("step")
    axes.set_ylabel("train/loss")
    axes.set_title(title, y=TITLE_Y)
    return _pixels(figure)


def fit_points(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor) -> FitPoints | None:
    """The data with the fitted curve (one input and one output column) or each row's residual
    (small data), or None when neither reads well."""
    import torch

    with torch.no_grad():
        if features.shape[1] == 1 and targets.shape[1] == 1:
            step = max(1, features.shape[0] // MAX_POINTS)
            dense = torch.linspace(float(features.min()), float(features.max()), 200,
                                   dtype=features.dtype, device=features.device)
            return FitPoints("fit/curve", x=features[::step, 0].cpu().numpy(), y=targets[::step, 0].cpu().numpy(),
                             curve_x=dense.cpu().numpy(), curve_y=model(dense[:, None])[:, 0].cpu().numpy())
        if features.shape[0] <= MAX_RESIDUAL_ROWS:
            residuals = (model(features) - targets).sum(dim=1).cpu().numpy()
            return FitPoints("fit/residuals", x=numpy.arange(1, len(residuals) + 1), y=residuals)
    return None


def draw_fit(points: FitPoints, title: str) -> numpy.ndarray:
    """``points`` drawn as an HWC uint8 RGB image."""
    figure, axes = _new_figure()
    if points.tag == "fit/curve":
        axes.scatter(points.x, points.y, s=8, color="tab:blue", label="data")
        axes.plot(points.curve_x, points.curve_y, color="tab:red", label="model")
        axes.set_xlabel("x")
        axes.set_ylabel("y")
        axes.legend()
    else:
        axes.bar(points.x, points.y, color="tab:purple")
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_xticks(points.x)
        axes.set_xlabel("row (equation)")
        axes.set_ylabel("prediction − target")
    axes.set_title(title, y=TITLE_Y)
    return _pixels(figure)


def fit_figure(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, title: str):
    """(tag, HWC uint8 image) for the data with the fitted curve (one input and one output
    column) or each row's residual (small data), or None when neither reads well."""
    points = fit_points(model, features, targets)
    return None if points is None else (points.tag, draw_fit(points, title))
