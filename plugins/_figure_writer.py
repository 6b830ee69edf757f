"""The figure writer: a helper process that draws the figures of the TensorBoard logger and
writes them into the run folder, so that no run waits for matplotlib (a helper module of
tensorboard_logger).

Measured on +task=linear, drawing in the training process cost the user ≈ 0.6 s (matplotlib's
import, then ≈ 65 ms a figure) and ≈ 45 MB of peak memory; a sweep paid ≈ 130 ms a job for its
two figures. Here the training process only reads the points off the model (torch) and sends
them down a pipe; a fresh interpreter that never imports torch imports matplotlib while the run
trains, draws, and writes the images as an event file of its own in the run folder (the same
TensorBoard run: TensorBoard reads every event file of a folder). It outlives the training
process when it has to, finishes what it was sent, and exits when its pipe closes.

- One figure writer per training process, started with the first fit that draws; a sweep's
  jobs share it, and at most :data:`RUNS_IN_FLIGHT` run folders wait for it: a job whose
  figures would queue beyond that waits until one is written (nothing piles up unbounded).
- While it has figures to write into a folder it holds a shared ``flock`` on the folder, taken
  before the training process goes on: :func:`wait_for_figures` (the tests, a resumed run)
  returns once every figure sent for the folder is on disk.
- A figure that fails to draw or write is reported on stderr and in the run's log file; the
  scalars, result.json and the other figures are kept. Where the writer cannot start, or has
  gone, the logger draws in its own process as before.
- Ctrl-C and SIGTERM stop the training run (which then sends its final figures); the writer
  ignores them and exits once it has written what it was sent.

Requests are pickled tuples: ``("open", run_dir, log_file)`` (answered with one byte once the
folder is locked), ``("image", run_dir, tag, step, drawing)`` and ``("close", run_dir)``.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.cluster import in_submitit_job
from framework.garbage_collection import made_for_the_process

try:
    import fcntl
except ImportError:  # no flock (Windows): the logger draws in its own process
    fcntl = None

log = logging.getLogger("framework")

FINISH_AT_EXIT_S = 120  # in a cluster job, the longest its task waits for the figures at exit
RUNS_IN_FLIGHT = 4  # run folders whose figures may wait to be drawn at once
OPENED = b"1"
NICENESS = 10
WARM_UP = ("framework_plugins._figures", "matplotlib.backends.backend_agg", "matplotlib.figure", "PIL.Image",
           "tensorboard.summary.writer.event_file_writer", "tensorboard.compat.proto.summary_pb2")
# Hydra's log line, for the run's log file.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def wait_for_figures(run_dir: Path, timeout_s: float | None = None) -> None:
    """Return once no figure writer (of any process) has figures left to write into ``run_dir``,
    or once ``timeout_s`` has passed."""
    if fcntl is None:
        return
    try:
        folder = os.open(run_dir, os.O_RDONLY)
    except OSError:  # no folder: nothing was sent to it
        return
    try:
        if timeout_s is None:
            fcntl.flock(folder, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.05)
    finally:
        os.close(folder)  # releases the lock


# --------------------------------------------------------------------------------------------
# The training process's end
# --------------------------------------------------------------------------------------------


class FigureWriter:
    """The training process's handle on its figure writer process."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.process: subprocess.Popen | None = None
        self.gone = fcntl is None  # set when it cannot start or has stopped: draw in-process

    def start(self) -> bool:
        """Start the process (once); False where there is none to use."""
        if self.gone or self.process is not None:
            return not self.gone
        # The folder holding the framework package: the writer imports it as this process does
        # (a checkout run with python -m, or an installed copy).
        root = str(Path(__file__).resolve().parent.parent) if _from_checkout() else None
        env = dict(os.environ)
        if root:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        code = ("from framework.locations import builtin_package; builtin_package(); "
                "from framework_plugins._figure_writer import serve; serve()")
        try:
            # Its own session: a terminal's Ctrl-C goes to the training process alone, which
            # stops and closes the pipe; in the writer's first second (its imports, before it
            # ignores the signals) a Ctrl-C printed a traceback or "Fatal Python error".
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                start_new_session=True,
            )
        except OSError as error:
            self._stop(f"the figure writer could not start ({error}); figures are drawn in the training process")
            return False
        atexit.register(self.close_pipe)
        return True

    def open(self, run_dir: Path, log_file: str | None) -> bool:
        """Tell the writer figures will come for ``run_dir``; return once it holds the folder's lock."""
        return self._send(("open", str(run_dir), log_file), answer=True)

    def image(self, run_dir: Path, tag: str, step: int, drawing: tuple) -> bool:
        return self._send(("image", str(run_dir), tag, step, drawing))

    def close(self, run_dir: Path) -> bool:
        return self._send(("close", str(run_dir)))

    def close_pipe(self) -> None:
        """No more requests: the writer finishes what it has and exits (it is not waited for,
        except in a cluster job, below)."""
        if self.process is not None and self.process.stdin is not None and os.getpid() == self.owner:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            if in_submitit_job():
                # A scheduler (SLURM) ends what is left of a job's processes once its tasks have
                # exited: the figures would be lost. Called at exit, once the job's run is done.
                try:
                    self.process.wait(timeout=FINISH_AT_EXIT_S)
                except subprocess.TimeoutExpired:
                    log.warning("the figure writer had not finished after %d s; figures it had not "
                                "written are lost", FINISH_AT_EXIT_S)

    def _send(self, request: tuple, answer: bool = False) -> bool:
        if not self.start():
            return False
        try:
            pickle.dump(request, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            if answer and self.process.stdout.read(len(OPENED)) != OPENED:
                raise BrokenPipeError("the figure writer exited")
        except OSError as error:
            self._stop(f"the figure writer stopped ({error}); figures are drawn in the training process")
            return False
        return True

    def _stop(self, message: str) -> None:
        self.gone = True
        log.warning("%s", message)


def _from_checkout() -> bool:
    from framework.locations import checkout_root

    return checkout_root() is not None


_writer: FigureWriter | None = None


def figure_writer() -> FigureWriter:
    """This process's figure writer (a forked child gets its own: the pipe is its parent's)."""
    global _writer
    if _writer is None or _writer.owner != os.getpid():
        _writer = FigureWriter()
    return _writer


# --------------------------------------------------------------------------------------------
# The figure writer process
# --------------------------------------------------------------------------------------------


@dataclass
class Folder:
    """A run folder the writer writes into: its lock, its event file once made, its log file."""

    run_dir: str
    lock: int | None
    log_file: str | None
    events: Any = None  # tensorboard's EventFileWriter


def serve() -> None:
    """Read requests from stdin until it closes; draw and write them in order."""
    # The training process stops on these and closes the pipe; the writer then finishes. SLURM
    # sends its warning before a time limit (USR2 for submitit, or USR1) to every process of a
    # job's step, the writer included.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    # Background work: where the cores are busy, the training process (and the user's next
    # run) goes first. Measured with 2 cores under load, the writer at the default priority
    # stretched the training process by its own CPU time (≈ 1 s of imports).
    os.nice(NICENESS)
    requests = sys.stdin.buffer
    # Answers go down a copy of stdout; stdout itself goes nowhere, so that nothing a library
    # prints can be read as an answer.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    work: queue.Queue = queue.Queue()
    slots = threading.Semaphore(RUNS_IN_FLIGHT)
    drawer = threading.Thread(target=draw_all, args=(work, slots), name="figure drawer")
    drawer.start()
    try:
        while True:
            try:
                request = pickle.load(requests)
            except EOFError:
                break
            if request[0] == "open":
                _kind, run_dir, log_file = request
                slots.acquire()  # a full queue makes the training process wait here
                try:
                    lock = os.open(run_dir, os.O_RDONLY)
                    fcntl.flock(lock, fcntl.LOCK_SH)
                except OSError:  # the folder is gone: its figures are reported as not written
                    lock = None
                work.put(("open", Folder(run_dir, lock, log_file)))
                answers.write(OPENED)
                answers.flush()
            else:
                work.put(request)
    finally:
        work.put(None)
        drawer.join()


def draw_all(work: queue.Queue, slots: threading.Semaphore) -> None:
    # Imported while the first run trains, not when its figures are due; what they make lives as
    # long as the writer (framework/garbage_collection.py).
    with made_for_the_process():
        for module in WARM_UP:
            importlib.import_module(module)

    folders: dict[str, Folder] = {}
    while (item := work.get()) is not None:
        if item[0] == "open":
            folders[item[1].run_dir] = item[1]
        elif item[0] == "image":
            _kind, run_dir, tag, step, drawing = item
            try:
                write_image(folders[run_dir], tag, step, drawing)
            except Exception as error:
                report(folders[run_dir], f"figure {tag} at step {step} was not written: {type(error).__name__}: {error}")
        elif item[0] == "close":
            finish(folders.pop(item[1]))
            slots.release()
    for folder in folders.values():  # the training process ended without closing them
        finish(folder)


def write_image(folder: Folder, tag: str, step: int, drawing: tuple) -> None:
    """Draw ``drawing`` and add it to the folder's event file as torch's ``add_image`` would."""
    import socket
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from framework_plugins._event_files import image_summary, use_native_checksums, wait_until_a_new_file_sorts_last
    from framework_plugins._figures import draw

    use_native_checksums()

    summary = image_summary(tag, draw(drawing))
    if folder.events is None:
        wait_until_a_new_file_sorts_last(Path(folder.run_dir), socket.gethostname(), os.getpid())
        folder.events = EventFileWriter(folder.run_dir)
    folder.events.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))


def finish(folder: Folder) -> None:
    try:
        if folder.events is not None:
            folder.events.close()
    except Exception as error:
        report(folder, f"figures could not be written: {type(error).__name__}: {error}")
    finally:
        if folder.lock is not None:
            os.close(folder.lock)


def report(folder: Folder, message: str) -> None:
    """On stderr and in the run's log file: the run itself has ended, and kept its scalars."""
    record = logging.LogRecord("framework", logging.ERROR, __file__, 0, f"{message} (in {folder.run_dir})", None, None)
    line = logging.Formatter(LOG_FORMAT).format(record)
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
    if folder.log_file:
        try:
            with open(folder.log_file, "a") as handle:
                handle.write(line + "\n")
        except OSError:
            pass
