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
DATA_MARKER_SIZE = 3.0  # points: the data's dots in a fit/curve figure


@dataclass
class FitPoints:
    """What a fit figure shows, as plain arrays: ``fit/curve`` has the data (x, y) and the
    model's curve (curve_x, curve_y); ``fit/residuals`` has each row's residual in y."""

    tag: str
    x: numpy.ndarray
    y: numpy.ndarray
    curve_x: numpy.ndarray | None = None
    curve_y: numpy.ndarray | None = None


# Each thread's figures, one per layout (see :func:`_held_figure`); a figure is drawn by one thread.
_drawing = threading.local()


@dataclass
class HeldFigure:
    """A figure kept for drawings of one layout, with the artists a new drawing updates."""

    figure: object
    axes: object
    title: object  # the title's Text
    data: tuple  # the artists that show the data, in the order the drawing gives them


def _held_figure(layout: tuple, build) -> tuple[HeldFigure, bool]:
    """This thread's figure for ``layout``, and whether it was just built.

    A sweep's figure writer draws two figures a job, each a figure like the last one of its
    kind with other numbers. Drawing them again with new data (``set_data``, limits recomputed,
    title text replaced) reuses the axes' ticks, labels and legend, where a cleared or new
    figure rebuilds them: ≈ half of a figure's drawing time. The pixels are those of a figure
    drawn new (tests/plugins/test_tensorboard_logger.py). ``layout`` holds everything else a
    drawing sets (the kind, a log axis, markers), so that only the data differ; ``build`` draws
    a new figure's artists on its axes and returns (title, data artists)."""
    figures = getattr(_drawing, "figures", None)
    if figures is None:
        figures = _drawing.figures = {}
    held = figures.get(layout)
    if held is not None:
        return held, False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins: tight_layout measures every label and costs more than the drawing itself.
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.91)
    axes = figure.add_subplot()
    title, data = build(axes)
    figures[layout] = held = HeldFigure(figure, axes, title, tuple(data))
    return held, True


def _drawn(layout: tuple, build, title: str, *data: tuple) -> numpy.ndarray:
    """The pixels of a drawing: on a new figure, ``build``'s; on this thread's figure of
    ``layout``, the same drawing made by replacing each data artist's points (``data``: (x, y)
    for each, in ``build``'s order) and the title's text, with the limits recomputed as a new
    figure's would be. Drawings with nothing to replace in place (bars), or whose data have no
    finite point (where matplotlib keeps the last limits and a new figure takes its defaults),
    are drawn anew on the cleared axes."""
    held, new = _held_figure(layout, build)
    if new:
        return _pixels(held.figure)
    axes = held.axes
    if data:
        for artist, (x, y) in zip(held.data, data):
            artist.set_data(x, y)
        axes.relim()
        if numpy.isfinite(axes.dataLim.get_points()).all():
            axes.autoscale_view()
            held.title.set_text(title)
            return _pixels(held.figure)
    axes.cla()
    held.title, artists = build(axes)
    held.data = tuple(artists)
    return _pixels(held.figure)


def _pixels(figure) -> numpy.ndarray:
    """The drawn figure as an HWC uint8 RGB image."""
    figure.canvas.draw()
    return numpy.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def wants_log_scale(losses: list[float]) -> bool:
    """Positive losses that span more than LOG_SCALE_SPAN read better on a log axis."""
    return min(losses) > 0 and max(losses) / min(losses) > LOG_SCALE_SPAN


def loss_figure(steps: list[int], losses: list[float], title: str) -> numpy.ndarray:
    """The logged loss against the step, on a log axis when it spans orders of magnitude."""
    log_scale, markers = wants_log_scale(losses), len(steps) < 50

    def build(axes):
        line, = axes.plot(steps, losses, color="tab:blue", marker="." if markers else None)
        if log_scale:
            from matplotlib.ticker import NullLocator

            axes.set_yscale("log")
            # Only the decades are marked: the eight minor ticks a decade cost as much to draw as
            # the rest of the figure, and the scalars tab has the exact values.
            axes.yaxis.set_minor_locator(NullLocator())
        axes.set_xlabel("step")
        axes.set_ylabel("train/loss")
        return axes.set_title(title, y=TITLE_Y), [line]

    return _drawn(("loss", log_scale, markers), build, title, (steps, losses))


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
    if points.tag == "fit/curve":
        def build(axes):
            # The data as a line's markers, not a scatter: a line's points can be replaced and
            # its limits recomputed (matplotlib before 3.11 leaves collections out of relim),
            # and markers of one size draw from one cached stamp.
            data, = axes.plot(points.x, points.y, linestyle="none", marker="o", markersize=DATA_MARKER_SIZE,
                              color="tab:blue", label="data")
            model, = axes.plot(points.curve_x, points.curve_y, color="tab:red", label="model")
            axes.set_xlabel("x")
            axes.set_ylabel("y")
            axes.legend()
            return axes.set_title(title, y=TITLE_Y), [data, model]

        return _drawn(("fit/curve",), build, title, (points.x, points.y), (points.curve_x, points.curve_y))

    def build_bars(axes):
        # Bars have no data to replace in place: drawn anew each time.
        axes.bar(points.x, points.y, color="tab:purple")
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_xticks(points.x)
        axes.set_xlabel("row (equation)")
        axes.set_ylabel("prediction − target")
        return axes.set_title(title, y=TITLE_Y), []

    return _drawn(("fit/residuals",), build_bars, title)


def draw(drawing: tuple) -> numpy.ndarray:
    """The pixels of a drawing request, as the logger makes them: ``("loss", steps, losses,
    title)`` for :func:`loss_figure`, ``("fit", points, title)`` for :func:`draw_fit`; drawn in
    the figure writer, or in the training process where there is none."""
    what, *arguments = drawing
    return loss_figure(*arguments) if what == "loss" else draw_fit(*arguments)


def fit_figure(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, title: str):
    """(tag, HWC uint8 image) for the data with the fitted curve (one input and one output
    column) or each row's residual (small data), or None when neither reads well."""
    points = fit_points(model, features, targets)
    return None if points is None else (points.tag, draw_fit(points, title))
