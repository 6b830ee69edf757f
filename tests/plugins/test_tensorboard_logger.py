"""The TensorBoard logger's pieces: hparams from the overrides, and figures of the fit."""

from __future__ import annotations

import pytest
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


def test_a_figure_drawn_again_on_the_threads_figure_has_the_pixels_of_one_drawn_on_a_new_figure():
    """A thread keeps a figure per layout and draws the next one like it by replacing its data,
    limits and title; every drawing must still have the pixels of a new figure's."""
    import threading

    import numpy

    from framework_plugins._figures import FitPoints, draw_fit, loss_figure

    x = numpy.linspace(-5.0, 5.0, 20)
    dense = numpy.linspace(-5.0, 5.0, 400)
    steps = list(range(0, 1001, 50))
    drawings = [  # every kind, after one another: a log axis, a legend, bars with their own ticks
        lambda: loss_figure(list(range(1, 101)), [1000.0 / step**2 for step in range(1, 101)], "decades"),
        lambda: draw_fit(FitPoints("fit/curve", x=x, y=x**2, curve_x=x, curve_y=2 * x + 1), "curve"),
        lambda: draw_fit(FitPoints("fit/residuals", x=numpy.arange(1, 6), y=numpy.array([1.0, -2, 3, 0, 5])), "rows"),
        lambda: loss_figure([1, 10, 20], [3.0, 2.5, 2.0], "flat"),
        lambda: draw_fit(FitPoints("fit/curve", x=x, y=-x, curve_x=x, curve_y=-x), "another curve"),
        # The same layouts again with data of other ranges and lengths (a sweep's next jobs):
        # the limits, ticks and legend place must follow the new data.
        lambda: loss_figure(list(range(1, 51)), [1e6 / step**3 for step in range(1, 51)], "more decades"),
        lambda: loss_figure(steps, [0.5 + 1e-3 * step for step in steps], "rising"),
        lambda: loss_figure(steps, [20.0 - 0.01 * step for step in steps], "falling, new range"),
        lambda: draw_fit(FitPoints("fit/curve", x=dense, y=100 * numpy.sin(dense), curve_x=dense[::4],
                                   curve_y=dense[::4] ** 3), "wider"),
        lambda: draw_fit(FitPoints("fit/curve", x=x[:5], y=x[:5], curve_x=x[:5], curve_y=x[:5] - 0.1), "narrower"),
        lambda: draw_fit(FitPoints("fit/residuals", x=numpy.arange(1, 9), y=numpy.linspace(-1, 1, 8)), "more rows"),
        # No finite point: matplotlib would keep the last limits where a new figure takes its
        # defaults; then finite data again on the figure drawn anew.
        lambda: loss_figure([1, 2, 3], [float("nan")] * 3, "no finite loss"),
        lambda: loss_figure([1, 2, 3], [2.0, float("inf"), 1.0], "finite again"),
        lambda: draw_fit(FitPoints("fit/curve", x=x, y=numpy.full_like(x, numpy.nan), curve_x=x,
                                   curve_y=numpy.full_like(x, numpy.inf)), "no finite point"),
        lambda: draw_fit(FitPoints("fit/curve", x=x, y=3 * x, curve_x=x, curve_y=3 * x), "a curve again"),
    ]

    def in_a_new_thread(draw):  # a thread's first drawing is on a new figure
        image = []
        thread = threading.Thread(target=lambda: image.append(draw()))
        thread.start()
        thread.join()
        return image[0]

    on_new_figures = [in_a_new_thread(draw) for draw in drawings]
    on_one_thread = in_a_new_thread(lambda: [draw() for draw in drawings])
    for index, (new, reused) in enumerate(zip(on_new_figures, on_one_thread)):
        assert numpy.array_equal(new, reused), index
    assert not numpy.array_equal(on_one_thread[0], on_one_thread[3])
    assert not numpy.array_equal(on_one_thread[6], on_one_thread[7])


def test_a_resumed_writer_waits_past_the_second_of_the_folders_newest_event_file(tmp_path):
    import time

    from framework_plugins._event_files import EVENT_FILE_PREFIX, event_file_second, wait_until_a_new_file_sorts_last

    now = int(time.time())
    (tmp_path / f"{EVENT_FILE_PREFIX}{now:010d}.host.123.9").write_bytes(b"")
    assert event_file_second(next(tmp_path.iterdir())) == now
    wait_until_a_new_file_sorts_last(tmp_path, "host", 123)  # the same process, a later counter (10 < 9)
    # A file made now has a later second in its name, so it sorts after the earlier one.
    assert int(time.time()) > now


@pytest.mark.parametrize("kind", ["loss", "curve", "residuals"])
def test_a_title_at_the_fixed_height_is_where_matplotlib_would_place_it(kind):
    """Titles are placed at TITLE_Y without matplotlib's measuring of the tick labels: the
    figures' pixels are those of the automatic placement."""
    import numpy
    from matplotlib.axes import Axes

    from framework_plugins._figures import FitPoints, draw_fit, loss_figure

    x = numpy.linspace(-5.0, 5.0, 20)
    draw = {
        "loss": lambda: loss_figure(list(range(1, 101)), [1000.0 / step**2 for step in range(1, 101)], "decades"),
        "curve": lambda: draw_fit(FitPoints("fit/curve", x=x, y=x**2, curve_x=x, curve_y=2 * x + 1), "curve"),
        "residuals": lambda: draw_fit(FitPoints("fit/residuals", x=numpy.arange(1, 6),
                                                y=numpy.array([1.0, -2, 3, 0, 5])), "rows"),
    }[kind]
    fixed = draw()
    own_set_title = Axes.set_title

    def placed_automatically(self, label, *args, y=None, **kwargs):
        return own_set_title(self, label, *args, **kwargs)

    Axes.set_title = placed_automatically
    try:
        automatic = draw()
    finally:
        Axes.set_title = own_set_title
    assert numpy.array_equal(fixed, automatic)


def test_the_figure_writer_writes_the_figures_torch_would_write_into_the_run_folder(train, tmp_path):
    """The final figures come from the figure writer process; they are the images the training
    process would have drawn and written with SummaryWriter.add_image, drawn here from the
    saved model."""
    import io
    import os

    import numpy
    from PIL import Image
    from torch.utils.tensorboard.summary import image as torch_image

    from framework.weights import read_weights
    from framework_plugins._figure_writer import wait_for_figures
    from framework_plugins._figures import loss_figure
    from tests.framework.compare import events

    result = train(["+task=linear", "logger=[tensorboard]", "trainer.max_steps=20"], run_dir=tmp_path, task="linear")
    wait_for_figures(tmp_path)
    accumulator = events(tmp_path)
    (curve,) = accumulator.Images("fit/curve")
    (loss,) = accumulator.Images("fit/loss")
    assert curve.step == loss.step == 20

    model = torch.nn.Linear(1, 1)
    model.load_state_dict(read_weights(tmp_path / "model.safetensors")[0])
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    tag, pixels = fit_figure(model, x, 2 * x + 1, f"step 20, final loss {result['final_loss']:.4g}")
    assert tag == "fit/curve"
    expected = torch_image(tag, pixels, dataformats="HWC").value[0].image
    decoded = lambda image: numpy.asarray(Image.open(io.BytesIO(image.encoded_image_string)))  # noqa: E731
    assert numpy.array_equal(decoded(curve), decoded(expected))  # compressed faster: other bytes, same pixels
    assert (curve.width, curve.height) == (expected.width, expected.height)
    assert Image.open(io.BytesIO(loss.encoded_image_string)).size == (loss.width, loss.height)
    assert loss_figure([1, 10, 20], [1.0, 0.5, 0.2], "t").shape == (loss.height, loss.width, 3)
    # The training process's own event file has no images; the writer's has nothing else.
    mine = [path for path in tmp_path.glob("events.out.tfevents.*") if f".{os.getpid()}." in path.name]
    assert len(mine) == 1 and not events_of(mine[0]).Tags()["images"]


def events_of(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return accumulator


def test_without_a_figure_writer_the_run_draws_the_same_images_itself(train, tmp_path, monkeypatch):
    """Where the figure writer cannot start, the logger draws in the training process and writes
    the images the writer would write (the same encoding, so the same pixels as torch's)."""
    import io

    import numpy
    from PIL import Image
    from torch.utils.tensorboard.summary import image as torch_image

    from framework.weights import read_weights
    from framework_plugins import _figure_writer
    from tests.framework.compare import events

    gone = _figure_writer.FigureWriter()
    gone.gone = True
    monkeypatch.setattr(_figure_writer, "_writer", gone)
    result = train(["+task=linear", "logger=[tensorboard]", "trainer.max_steps=20"], run_dir=tmp_path, task="linear")
    assert gone.process is None  # nothing was started: the run drew its figures
    (curve,) = events(tmp_path).Images("fit/curve")
    model = torch.nn.Linear(1, 1)
    model.load_state_dict(read_weights(tmp_path / "model.safetensors")[0])
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    _tag, pixels = fit_figure(model, x, 2 * x + 1, f"step 20, final loss {result['final_loss']:.4g}")
    expected = torch_image("fit/curve", pixels, dataformats="HWC").value[0].image
    decoded = lambda image: numpy.asarray(Image.open(io.BytesIO(image.encoded_image_string)))  # noqa: E731
    assert numpy.array_equal(decoded(curve), decoded(expected))
    assert len(events(tmp_path).Images("fit/loss")) == 1


def test_a_figure_that_fails_to_draw_is_logged_and_the_folders_other_figures_are_written(tmp_path, capfd):
    from framework_plugins._figure_writer import FigureWriter, wait_for_figures
    from framework_plugins._figures import FitPoints

    log_file = tmp_path / "framework.log"
    writer = FigureWriter()
    assert writer.open(tmp_path, str(log_file))
    assert writer.image(tmp_path, "fit/curve", 3, ("fit", "not the points", "broken"))
    points = FitPoints("fit/residuals", x=torch.arange(1, 4).numpy(), y=torch.tensor([0.5, -1.0, 0.25]).numpy())
    assert writer.image(tmp_path, "fit/residuals", 3, ("fit", points, "fine"))
    assert writer.close(tmp_path)
    writer.close_pipe()
    wait_for_figures(tmp_path)
    assert "figure fit/curve at step 3 was not written: AttributeError" in log_file.read_text()
    assert "figure fit/curve at step 3 was not written" in capfd.readouterr().err
    assert events_of(tmp_path).Tags()["images"] == ["fit/residuals"]
    writer.process.wait(timeout=60)  # it exits once its pipe is closed and its work done


def test_native_checksums_equal_tensorboards_and_the_events_read_back(tmp_path):
    """plugins/_event_files.use_native_checksums: the C CRC32C gives tensorboard's own masked
    checksum, and tensorboard's reader (which checks every record's checksum) reads the file."""
    import os

    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as pure_python
    from torch.utils.tensorboard import SummaryWriter

    from framework_plugins._event_files import use_native_checksums
    from tensorboard.summary.writer import record_writer

    assert use_native_checksums(), "google-crc32c's compiled checksum is a dependency"
    assert record_writer.masked_crc32c is not pure_python
    for size in (0, 1, 7, 64, 200, 4099):
        data = os.urandom(size)
        assert record_writer.masked_crc32c(data) == pure_python(data), size
    writer = SummaryWriter(str(tmp_path))
    for step in range(5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    read = [(event.step, value.simple_value) for event in LegacyEventFileLoader(str(events)).Load()
            for value in event.summary.value]
    assert [(step, pytest.approx(1.0 / (step + 1))) for step in range(5)] == read


def read_scalars(folder) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    (events,) = folder.glob("events.out.tfevents.*")
    return [(event.step, value.simple_value) for event in LegacyEventFileLoader(str(events)).Load()
            for value in event.summary.value]


def test_events_written_in_the_callers_thread_wait_in_memory_at_most_their_time(tmp_path, monkeypatch):
    """plugins/_event_files.write_in_caller_thread: no writer thread; records reach the file in
    tensorboard's format once WRITE_EVERY_S has passed (here: never before flush) or at once
    (here: 0), and every record reads back through tensorboard's checksum-checking reader."""
    import threading

    from torch.utils.tensorboard import SummaryWriter

    from framework_plugins import _event_files

    held, prompt = tmp_path / "held", tmp_path / "prompt"
    monkeypatch.setattr(_event_files, "WRITE_EVERY_S", 3600.0)
    writer = SummaryWriter(str(held))
    tensorboards_thread = writer.file_writer.event_writer._async_writer._worker
    assert tensorboards_thread.is_alive()
    assert _event_files.write_in_caller_thread(writer)
    assert not tensorboards_thread.is_alive() and tensorboards_thread not in threading.enumerate()
    (events,) = held.glob("events.out.tfevents.*")
    size_before = events.stat().st_size  # the file version record
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    # The first record goes out at once (no write yet from this thread), the next two wait.
    after_first = events.stat().st_size
    assert after_first > size_before
    writer.add_scalar("train/loss", 0.125, 3)
    assert events.stat().st_size == after_first
    writer.flush()
    assert events.stat().st_size > after_first
    writer.close()
    assert read_scalars(held) == [(step, pytest.approx(1.0 / (step + 1))) for step in range(3)] + [(3, 0.125)]

    monkeypatch.setattr(_event_files, "WRITE_EVERY_S", 0.0)
    writer = SummaryWriter(str(prompt))
    assert _event_files.write_in_caller_thread(writer)
    for step in range(4):
        writer.add_scalar("train/loss", float(step), step)
        assert read_scalars(prompt)[-1] == (step, float(step))  # on disk before the next one
    writer.close()


def test_a_full_block_of_records_is_written_without_waiting(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    from framework_plugins import _event_files

    monkeypatch.setattr(_event_files, "WRITE_EVERY_S", 3600.0)
    monkeypatch.setattr(_event_files, "BLOCK_BYTES", 1024)
    writer = SummaryWriter(str(tmp_path))
    assert _event_files.write_in_caller_thread(writer)
    for step in range(200):  # ~50 bytes each: the block fills several times
        writer.add_scalar("train/loss", float(step), step)
    on_disk = read_scalars(tmp_path)
    assert 150 < len(on_disk) < 200  # whole blocks written, the last part still pending
    assert on_disk == [(step, float(step)) for step in range(len(on_disk))]
    writer.close()
    assert read_scalars(tmp_path) == [(step, float(step)) for step in range(200)]
