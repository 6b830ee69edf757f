"""Pictures of a fit for TensorBoard's Images tab (a helper module of tensorboard_logger).

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global figure state, no
display needed.
"""

from __future__ import annotations

import numpy
import torch

MAX_POINTS = 2000  # points drawn from the data; more only slow the picture down
MAX_RESIDUAL_ROWS = 64  # a bar per row reads well up to about this many rows


def fit_figure(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, title: str):
    """(tag, HWC uint8 image) for the data with the fitted curve (one input and one output
    column) or each row's residual (small data), or None when neither reads well."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
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
    figure.tight_layout()
    canvas.draw()
    return tag, numpy.asarray(canvas.buffer_rgba())[..., :3].copy()
