"""TensorBoard event files in a run folder: their names, the order TensorBoard reads them in, and
how records get into them (a helper module of tensorboard_logger and _figure_writer; it imports
nothing heavy)."""

from __future__ import annotations

import math
import time
from pathlib import Path

EVENT_FILE_PREFIX = "events.out.tfevents."
# zlib's fastest level for the figures' PNGs: ≈ 6 against ≈ 10 ms a figure at PIL's default
# (6), for ≈ 1.2× the bytes (≈ 25 KB); the image is the same, pixel for pixel. A sweep's figure
# writer encodes two a job.
PNG_COMPRESS_LEVEL = 1


def event_file_second(path: Path) -> int | None:
    """The second an event file was created in, as its name gives it."""
    first = path.name[len(EVENT_FILE_PREFIX):].split(".", 1)[0]
    return int(first) if first.isdigit() else None


def wait_until_a_new_file_sorts_last(run_dir: Path, host: str, pid: int) -> None:
    """Return when an event file this process makes now would sort after every one in the folder.

    TensorBoard reads a folder's files in name order (the second, the host, the process id, a
    per-process counter) and never goes back to a name before the one it reads. So a new file
    must sort last: the figure writer's beside the run's, and a resumed run's, whose purge must
    apply to what came before (a resume in the same process and second would otherwise sort by
    its counter, '10' before '9'). Names of one second compare by host and process id as text
    ('10000' < '9999'). Usually the name already sorts last; otherwise this waits for the next
    second (at most 1 s).
    """
    names = [path.name for path in Path(run_dir).glob(EVENT_FILE_PREFIX + "*")]
    while names and f"{EVENT_FILE_PREFIX}{int(time.time()):010d}.{host}.{pid}." <= max(names):
        time.sleep(int(time.time()) + 1 - time.time() + 0.001)


def image_summary(tag: str, pixels):
    """A Summary holding ``pixels`` (HWC uint8 RGB) as a PNG image under ``tag``: what torch's
    ``SummaryWriter.add_image(tag, pixels, dataformats="HWC")`` writes, compressed faster."""
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    height, width, channels = pixels.shape
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def tensorflow_mask(crc: int) -> int:
    """TFRecord's masked CRC32C, as tensorboard's ``masked_crc32c`` masks it."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def use_native_checksums() -> bool:
    """Make tensorboard's event writer frame records with google-crc32c's C checksum.

    Without TensorFlow, tensorboard checksums every record in pure Python (about 30 us per
    200-byte scalar record, 5 ms per image), in its writer thread, where it holds the GIL the
    training loop needs: with TensorBoard every step, a third of the framework's extra cost. The
    checksum is the same number (tests compare it with tensorboard's own); without
    google-crc32c's compiled code, tensorboard's stays. Returns whether the C one is in use.
    """
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        return False
    if getattr(record_writer.masked_crc32c, "native", False):
        return True

    def masked_crc32c(data: bytes) -> int:
        return tensorflow_mask(google_crc32c.value(data))

    masked_crc32c.native = True
    # record_writer imported tensorboard's pure-Python function by name; this replaces its use
    # there only (the reader's check keeps tensorboard's own, so a wrong checksum would show).
    record_writer.masked_crc32c = masked_crc32c
    return True


# How long framed records may wait in memory before they are appended to the event file, and
# how many bytes of them at most: a live dashboard lags a fast run by at most this long.
WRITE_EVERY_S = 1.0
BLOCK_BYTES = 64 * 1024


class _Pending:
    """Framed records not yet in the file (the file-like object tensorboard's RecordWriter frames
    into)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, framed: bytes) -> None:
        self.parts.append(framed)
        self.size += len(framed)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


class EventsInCallerThread:
    """tensorboard's ``_AsyncWriter`` (``write``, ``flush``, ``close``) without its thread.

    tensorboard hands every event to a writer thread through a queue, and that thread opens,
    appends to and closes the event file once per record. With TensorBoard every step, waking
    it and giving it the GIL cost the loop more than the step itself. Here the caller frames the
    record (tensorboard's own RecordWriter, so the format and checksums are tensorboard's) into
    memory, and appends what is pending in one write once ``BLOCK_BYTES`` are pending or
    ``WRITE_EVERY_S`` have passed since the last write, so a run that logs seldom has each event
    on disk at once. ``flush`` (at every checkpoint) and ``close`` write everything.
    """

    def __init__(self, event_file) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._file = event_file
        self._pending = _Pending()
        self._framing = RecordWriter(self._pending)
        self._last_write = -math.inf
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise OSError("Writer is closed")  # tensorboard's own message and type
        self._framing.write(data)
        now = time.monotonic()
        if self._pending.size >= BLOCK_BYTES or now - self._last_write >= WRITE_EVERY_S:
            self._write_pending(now)

    def _write_pending(self, now: float) -> None:
        if self._pending.size:
            self._file.write(self._pending.take())
        self._last_write = now

    def flush(self) -> None:
        if self._closed:
            raise OSError("Writer is closed")
        self._write_pending(time.monotonic())
        self._file.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write_pending(time.monotonic())
            self._file.flush()
            self._file.close()


def write_in_caller_thread(summary_writer) -> bool:
    """Give a ``SummaryWriter``'s event file an :class:`EventsInCallerThread` in place of
    tensorboard's writer thread, once what the thread holds is written. Returns whether it did:
    a tensorboard whose writer is built otherwise keeps its thread."""
    event_writer = getattr(summary_writer.file_writer, "event_writer", None)
    queued = getattr(event_writer, "_async_writer", None)
    worker = getattr(queued, "_worker", None)
    event_file = getattr(getattr(queued, "_writer", None), "_writer", None)  # RecordWriter's file
    if worker is None or not all(hasattr(event_file, name) for name in ("write", "flush", "close")):
        return False
    queued.flush()  # the file version and whatever else was queued is in the file
    worker.stop()  # the thread ends; the file stays open, now written from here
    event_writer._async_writer = EventsInCallerThread(event_file)
    return True
