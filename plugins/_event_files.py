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


def wait_for_a_later_second(run_dir: Path) -> None:
    """Return in a later second than the folder's newest event file was created in.

    TensorBoard reads a folder's event files in name order, and a name is the second it was made
    in, the host, the process id and a per-process counter. A resumed run's file made in the same
    second by the same process (``framework.train`` resuming right after a run) could sort before
    the earlier file (counter 10 before 9), and TensorBoard would replay the two out of order,
    purging the wrong steps. Only a resume within a second of the last write waits, at most 1 s.
    """
    seconds = [second for second in map(event_file_second, Path(run_dir).glob(EVENT_FILE_PREFIX + "*"))
               if second is not None]
    if seconds:
        newest = max(seconds)
        while time.time() < newest + 1:
            time.sleep(newest + 1 - time.time() + 0.001)


def wait_until_a_new_file_sorts_last(run_dir: Path, host: str, pid: int) -> None:
    """Return when an event file this process makes now would sort after every one in the folder.

    A running TensorBoard reads a folder's files in name order and never goes back to a name
    before the one it reads, so a second writer's file must not sort first: names of one second
    compare by host and process id as text ('10000' < '9999'). Usually the name already sorts
    last; otherwise this waits for the next second (at most 1 s).
    """
    names = [path.name for path in Path(run_dir).glob(EVENT_FILE_PREFIX + "*")]
    while names and f"{EVENT_FILE_PREFIX}{int(time.time()):010d}.{host}.{pid}." <= max(names):
        time.sleep(int(time.time()) + 1 - time.time() + 0.001)
