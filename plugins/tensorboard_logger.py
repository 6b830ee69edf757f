"""The ``tensorboard`` logger: train/loss, train/lr, train/grad_norm, params/<name>, figures,
a custom-scalars layout, the run's hparams and its stop reason (Text tab), written into the run
folder itself (the run folder is the TensorBoard run, so a sweep's jobs sit side by side under
the sweep folder)."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import socket
import threading
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import OmegaConf

from framework import KINDS, Component, OutputError, hookimpl, is_small_model, setting
from framework.cluster import in_submitit_job
from framework_plugins._event_files import (
    image_summary,
    use_native_checksums,
    wait_until_a_new_file_sorts_last,
    write_in_caller_thread,
)
from framework_plugins._figure_writer import FigureWriter, figure_writer, wait_for_figures

# The Custom Scalars tab: loss, rate, gradient norm and parameters grouped, one chart each.
LAYOUT = {
    "train": {
        "loss": ["Multiline", ["train/loss"]],
        "learning rate": ["Multiline", ["train/lr"]],
        "gradient norm": ["Multiline", ["train/grad_norm"]],
    },
    "parameters": {"values": ["Multiline", [r"params/.*"]]},
}
SCALAR_TYPES = (bool, int, float, str)
STOP_REASON_TAG = "result/stop_reason"  # result.json's stop_reason, as text (code-formatted)
# In a cluster job, the longest the fit's end waits for its figures: after the scheduler's warning
# the job is requeued next (submitit asks for the warning 120 s ahead of the limit).
FIGURES_IN_A_CLUSTER_JOB_S = 30


@dataclass
class TensorBoardConfig:
    params: bool = True  # log every parameter value of small models (trainer.param_log_limit)
    figures: bool = True  # the fit (or each row's residual) and the loss curve in the Images tab
    figure_every: Optional[int] = setting(None, ge=1)  # also every N steps; null: at the end only
    flush_secs: int = setting(30, ge=1)  # write events to disk at least this often


def run_hparams(run_config, overrides: list[str], task: str | None) -> dict:
    """The main component choices, the learning rate, and every value the command line set."""
    settings = {"task": task or "none"}
    for kind in KINDS:
        node = run_config.get(kind)
        if kind != "logger" and node is not None and "name" in node:
            settings[kind] = node.name
    if "lr" in run_config.optimizer:
        settings["optimizer.lr"] = run_config.optimizer.lr
    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.lstrip("+~")
        if key in settings or key.startswith("hydra"):
            continue
        value = OmegaConf.select(run_config, key, default=raw)
        settings[key] = value if isinstance(value, SCALAR_TYPES) else raw
    return settings


def _quiet_writer_thread() -> None:
    """tensorboard's writer thread re-raises a failed write (a full disk) in the thread that
    writes next, which reports it in one paragraph; its own traceback on stderr says nothing
    more, so it is not printed."""
    default = threading.excepthook
    if getattr(default, "quiets_tensorboard", False):
        return

    def excepthook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        default(args)

    excepthook.quiets_tensorboard = True
    threading.excepthook = excepthook


def _writes(hook):
    """A hook that writes events: a failed write (a full disk) is an OutputError naming the run
    folder, and the logger writes nothing more (every later write would fail the same way)."""

    @functools.wraps(hook)
    def writing(self, *args, **kwargs):
        if self.write_failed:
            return None
        try:
            return hook(self, *args, **kwargs)
        except OSError as error:
            self.write_failed = True
            raise OutputError(self.run_dir, error, "TensorBoard events into") from None

    return writing


def _indices(shape) -> list[str]:
    """'0_1' style index strings, in flatten order."""
    return ["_".join(map(str, index)) for index in itertools.product(*(range(size) for size in shape))]


def parameter_tags(model: torch.nn.Module) -> list[str]:
    """``params/<name>`` for a one-number parameter, ``params/<name>/<index>`` for each number of
    a larger one, in the order :func:`parameter_values` gives the values."""
    tags = []
    for name, parameter in model.named_parameters():
        if parameter.numel() == 1:
            tags.append(f"params/{name}")
        else:
            tags.extend(f"params/{name}/{index}" for index in _indices(parameter.shape))
    return tags


def parameter_values(model: torch.nn.Module) -> list[float]:
    """Every number of every parameter, read back from the device at once."""
    with torch.no_grad():
        return torch.cat([parameter.reshape(-1) for parameter in model.parameters()]).tolist()


class TensorBoardLogger:
    def __init__(self, config: TensorBoardConfig, run_dir, run_config, run_overrides=()) -> None:
        self.config, self.run_dir, self.run_config = config, run_dir, run_config
        self.run_overrides = list(run_overrides)
        self.writer = None
        self.param_tags: list[str] = []  # params/<name>[/<index>] in parameter_values' order
        self.loss_curve: list[tuple[int, float]] = []  # (step, loss) at logging steps, for the figure
        self.write_failed = False
        # Draws this fit's figures in another process (None: drawn here); opened for the run
        # folder with the first figure.
        self.figures: FigureWriter | None = None
        self.figures_opened = False

    @hookimpl
    @_writes
    def framework_fit_start(self, state):
        if self.run_dir is None:
            return
        # Imported here: tensorboard's import is slow and runs without it need not pay for it.
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        use_native_checksums()

        self.summary = Summary

        _quiet_writer_thread()
        resumed_at = state.progress.step
        if resumed_at:
            # The figures the earlier run sent are in their event file before this one is made.
            wait_for_figures(self.run_dir)
            wait_until_a_new_file_sorts_last(self.run_dir, socket.gethostname(), os.getpid())
        if self.config.figures:
            # Started now, so that it imports matplotlib while the run trains.
            writer = figure_writer()
            self.figures = writer if writer.start() else None
        # A resumed run writes on into its own run folder. purge_step makes TensorBoard drop what
        # the earlier process logged after the checkpoint, so the run stays one curve with no
        # step twice.
        self.writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=self.config.flush_secs,
                                    purge_step=resumed_at + 1 if resumed_at else None)
        write_in_caller_thread(self.writer)
        if not resumed_at:
            self.writer.add_custom_scalars(LAYOUT)
            self._start_session(state)
        log_params = self.config.params and is_small_model(state.run.model, state.run.trainer.param_log_limit)
        self.param_tags = parameter_tags(state.run.model) if log_params else []

    @hookimpl
    @_writes
    def framework_log(self, state, step, metrics):
        if self.writer is None:
            return
        values = list(metrics.items())
        if self.param_tags:
            values.extend(zip(self.param_tags, parameter_values(state.run.model)))
        # One event holding every scalar of the step: tensorboard frames each event with a
        # checksum computed in pure Python, and six events a step cost 17 times one.
        Summary = self.summary
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values])
        self.writer.file_writer.add_summary(summary, step)
        self.loss_curve.append((step, metrics["train/loss"]))
        every = self.config.figure_every
        if self.config.figures and every and step % every == 0 and step != state.run.max_steps:
            self._figure(state, step, f"step {step}, loss {metrics['train/loss']:.4g}")

    @hookimpl
    @_writes
    def framework_state_dict(self, state):
        if self.writer is not None:
            # What was logged up to a checkpoint is on disk with it, so that a run killed later
            # and resumed from it shows no gap.
            self.writer.flush()
        steps, losses = zip(*self.loss_curve) if self.loss_curve else ((), ())
        return {"loss_curve_steps": torch.tensor(steps, dtype=torch.int64),
                "loss_curve": torch.tensor(losses, dtype=torch.float64)}

    @hookimpl
    def framework_load_state_dict(self, state, state_dict):
        self.loss_curve = list(zip(state_dict["loss_curve_steps"].tolist(), state_dict["loss_curve"].tolist()))

    @hookimpl
    def framework_fit_end(self, state, result):
        if self.writer is None:
            return
        if self.write_failed:
            try:
                self.writer.close()
            except OSError:
                # Reported when it first failed. close() flushes first and stops at the same
                # error, so the event file is closed when the process ends (it does, the run
                # having failed).
                pass
            if self.figures_opened:
                self.figures.close(self.run_dir)
            return
        self._end(state, result)

    @_writes
    def _end(self, state, result):
        try:
            if self.config.figures and result["final_loss"] is not None:
                self._figure(state, result["steps"], f"step {result['steps']}, final loss {result['final_loss']:.4g}")
            if self.config.figures and len(self.loss_curve) > 1:
                steps, losses = zip(*self.loss_curve)
                self._image("fit/loss", result["steps"],
                            ("loss", list(steps), list(losses), f"{state.run.task or 'run'}: {result['status']}"))
            self._write_hparams(state, result)
            if result["status"] != "interrupted" and result["stop_reason"]:
                # The Text tab, at the last step: why the run ended (the resumed run that ends an
                # interrupted one writes it, as it writes the HParams session's end).
                self.writer.add_text(STOP_REASON_TAG, f"`{result['stop_reason']}`", result["steps"])
        finally:
            self.writer.close()  # flushes: points logged before a failure are kept
            if self.figures_opened:
                self.figures.close(self.run_dir)  # the figure writer finishes this folder
                if in_submitit_job():
                    # A cluster job: the sweep reads the job's result as soon as the job returns
                    # it, and SLURM ends every process of the job, the figure writer with it,
                    # once its task exits or is requeued (after the scheduler's warning). Not
                    # longer than a bound: a requeue must come before the time limit.
                    wait_for_figures(self.run_dir, timeout_s=FIGURES_IN_A_CLUSTER_JOB_S)

    def _figure(self, state, step, title):
        from framework_plugins._figures import fit_points

        run = state.run
        points = fit_points(run.model, run.data.features, run.data.targets)
        if points is not None:
            self._image(points.tag, step, ("fit", points, title))

    def _image(self, tag: str, step: int, drawing: tuple) -> None:
        """Have ``drawing`` drawn and written under ``tag``: by the figure writer, or here where
        there is none (or it has gone)."""
        if self.figures is not None and not self.figures_opened:
            self.figures_opened = self.figures.open(self.run_dir, log_file())
        if self.figures_opened and self.figures.image(self.run_dir, tag, step, drawing):
            return
        from framework_plugins._figures import draw

        self.writer.file_writer.add_summary(image_summary(tag, draw(drawing)), step)

    # HParams: TensorBoard keeps the first summary of each tag in a run folder, so the session's
    # start is written once, when the run first starts, and its end once, when the run ends for
    # good. An interrupted run's session stays open until a resumed run ends it. The metrics are
    # scalars, of which TensorBoard shows the latest. Both go through this run's own writer
    # (add_hparams would make a second, timestamped run), and neither is an experiment summary:
    # TensorBoard builds the experiment from all runs, where one run's would stand for them all.

    def _start_session(self, state):
        from torch.utils.tensorboard.summary import hparams

        settings = run_hparams(self.run_config, self.run_overrides, state.run.task)
        _experiment, session_start, _session_end = hparams(settings, {})
        self.writer.file_writer.add_summary(session_start)

    def _write_hparams(self, state, result):
        from torch.utils.tensorboard.summary import hparams

        metrics = {"hparams/steps": result["steps"], "hparams/wall_s": result["wall_s"]}
        if result["final_loss"] is not None and math.isfinite(result["final_loss"]):
            metrics["hparams/final_loss"] = result["final_loss"]
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, result["steps"])
        if result["status"] == "interrupted":
            return
        _experiment, _session_start, session_end = hparams({}, metrics)
        if result["status"] != "completed":
            session_end = failed_session(session_end)
        self.writer.file_writer.add_summary(session_end)


def log_file() -> str | None:
    """The run's log file (Hydra's), where the figure writer reports a figure it could not write."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def failed_session(session_end):
    """torch's session-end summary (always STATUS_SUCCESS) with STATUS_FAILURE instead."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    metadata = session_end.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(metadata.content)
    content.session_end_info.status = api_pb2.Status.Value("STATUS_FAILURE")
    metadata.content = content.SerializeToString()
    return session_end


@hookimpl
def framework_components():
    return [Component("logger", "tensorboard", TensorBoardLogger, TensorBoardConfig,
                      help="TensorBoard event files in the run folder")]
