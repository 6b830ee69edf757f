"""The TensorBoard logger's pieces: hparams from the overrides, and figures of the fit."""

from __future__ import annotations

import torch

from framework_plugins._figures import fit_figure
from framework_plugins.tensorboard_logger import run_hparams


def test_hparams_hold_component_choices_lr_and_every_override(compose_config):
    overrides = ["+task=polyfit", "optimizer=adam", "optimizer.lr=0.05", "trainer.max_steps=7", "model.init=zeros"]
    cfg = compose_config(overrides)
    settings = run_hparams(cfg, overrides, "polyfit")
    assert settings["task"] == "polyfit"
    assert (settings["model"], settings["loss"], settings["optimizer"], settings["data"]) == (
        "polynomial", "mse", "adam", "polynomial")
    assert settings["optimizer.lr"] == 0.05 and settings["trainer.max_steps"] == 7
    assert settings["model.init"] == "zeros"
    assert all(isinstance(value, (bool, int, float, str)) for value in settings.values())


class Line(torch.nn.Module):
    def forward(self, x):
        return 2 * x


def test_one_column_data_gets_the_fitted_curve():
    x = torch.linspace(-1, 1, 30)[:, None]
    tag, image = fit_figure(Line(), x, 2 * x, "step 1")
    assert tag == "fit/curve"
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8"
    assert image.std() > 0  # something is drawn


def test_small_multi_column_data_gets_residuals_and_large_data_nothing():
    class Sum(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=1, keepdim=True)

    tag, _ = fit_figure(Sum(), torch.eye(4), torch.ones(4, 1), "residuals")
    assert tag == "fit/residuals"
    assert fit_figure(Sum(), torch.zeros(500, 3), torch.zeros(500, 1), "big") is None


def test_loss_curve_uses_a_log_axis_only_when_the_loss_spans_decades():
    from framework_plugins._figures import loss_figure, wants_log_scale

    assert wants_log_scale([1000.0, 10.0, 0.5])
    assert not wants_log_scale([3.0, 2.5, 2.0])
    assert not wants_log_scale([1000.0, 0.0])  # a zero loss has no place on a log axis
    image = loss_figure([1, 10, 20], [1000.0, 10.0, 0.5], "falling")
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0


def test_a_resumed_writer_waits_past_the_second_of_the_folders_newest_event_file(tmp_path):
    import time

    from framework_plugins.tensorboard_logger import EVENT_FILE_PREFIX, event_file_second, wait_for_a_later_second

    now = int(time.time())
    (tmp_path / f"{EVENT_FILE_PREFIX}{now:010d}.host.123.9").write_bytes(b"")
    assert event_file_second(next(tmp_path.iterdir())) == now
    wait_for_a_later_second(tmp_path)
    # A file made now has a later second in its name, so it sorts after the earlier one.
    assert int(time.time()) > now
