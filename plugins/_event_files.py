"""TensorBoard event files in a run folder: their names and the order TensorBoard reads them in
(a helper module of tensorboard_logger and _figure_writer; it imports nothing heavy)."""

from __future__ import annotations

import time
from pathlib import Path

EVENT_FILE_PREFIX = "events.out.tfevents."


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
