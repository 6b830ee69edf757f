"""The ``tensorboard`` logger: train/loss, train/lr, train/grad_norm, params/<name> and hparams,
written into the run folder itself (the run folder is the TensorBoard run)."""

import math
from dataclasses import dataclass

from framework import Component, hookimpl


@dataclass
class TensorBoardConfig:
    params: bool = True  # log every parameter value of small models (trainer.param_log_limit)
    flush_secs: int = 30


def scalar_settings(node, prefix: str) -> dict:
    """Flatten a config node to {'optimizer.lr': 0.01, ...}, keeping plain scalar values."""
    flat = {}
    for key, value in node.items():
        name = f"{prefix}.{key}"
        if hasattr(value, "items"):
            flat.update(scalar_settings(value, name))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat


class TensorBoardLogger:
    def __init__(self, config: TensorBoardConfig, run_dir, run_config) -> None:
        self.config, self.run_dir, self.run_config = config, run_dir, run_config
        self.writer = None
        self.log_params = False

    @hookimpl
    def framework_fit_start(self, state):
        if self.run_dir is None:
            return
        # Imported here: tensorboard's import is slow and runs without it need not pay for it.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=self.config.flush_secs)
        count = sum(p.numel() for p in state.model.parameters())
        self.log_params = self.config.params and count <= state.trainer.param_log_limit

    @hookimpl
    def framework_log(self, state, step, metrics):
        if self.writer is None:
            return
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        if self.log_params:
            for name, parameter in state.model.named_parameters():
                values = parameter.detach().cpu()
                if values.numel() == 1:
                    self.writer.add_scalar(f"params/{name}", values.item(), step)
                    continue
                for index, value in zip(_indices(values.shape), values.flatten().tolist()):
                    self.writer.add_scalar(f"params/{name}/{index}", value, step)

    @hookimpl
    def framework_fit_end(self, state, result):
        if self.writer is None:
            return
        try:
            self._write_hparams(state, result)
        finally:
            self.writer.close()  # flushes: points logged before a failure are kept

    def _write_hparams(self, state, result):
        from torch.utils.tensorboard.summary import hparams

        settings = {"task": state.task or "none", "status": result["status"]}
        for kind in ("data", "model", "loss", "optimizer", "scheduler"):
            settings.update(scalar_settings(self.run_config[kind], kind))
        settings.update(scalar_settings(self.run_config.trainer, "trainer"))
        metrics = {"hparams/steps": result["steps"], "hparams/wall_s": result["wall_s"]}
        if result["final_loss"] is not None and math.isfinite(result["final_loss"]):
            metrics["hparams/final_loss"] = result["final_loss"]
        # Written through this run's own writer: add_hparams would make a second, timestamped run.
        for summary in hparams(settings, metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, result["steps"])


def _indices(shape):
    """'0_1' style index strings, in flatten order."""
    import itertools

    return ["_".join(map(str, index)) for index in itertools.product(*(range(size) for size in shape))]


@hookimpl
def framework_components():
    return [Component("logger", "tensorboard", TensorBoardLogger, TensorBoardConfig,
                      help="TensorBoard event files in the run folder")]
