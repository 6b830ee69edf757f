"""SIGINT and SIGTERM end a fit cleanly: the handler only sets the stop request, and the loop
finishes the step, saves a checkpoint, lets the loggers finish and writes result.json.

Cluster schedulers send SIGTERM before they kill a job; Ctrl-C sends SIGINT. A second signal
while the run is ending is noted and ignored, so nothing half-written is left behind (SIGKILL
remains the way to end a run at once; the checkpoints and result.json are written atomically,
so even that leaves every file whole).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable

from framework.state import StopRequest

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run ended by a signal, after saving what it had; exit status 128 + the signal number.

    A KeyboardInterrupt, so that it passes through code (Hydra's, a sweep's) that catches
    ``Exception``, and so stops a sweep as Ctrl-C does.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signal = signum
        self.exit_code = 128 + signum
        self.message = message


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def signal_of(interrupt: KeyboardInterrupt) -> int:
    """The signal that raised ``interrupt``: an :class:`Interrupted`'s, else a Ctrl-C's."""
    return getattr(interrupt, "signal", signal.SIGINT)


# The signals raise_interrupted raised that no fit has acted on yet. A library's bare ``except``
# (or one that catches BaseException) around the code a signal lands in swallows the raise; the
# next fit then stops at once instead of running as if nothing had been asked (stop_on_signals).
RAISED_BEFORE_A_FIT: list[int] = []


class SignalRaised(Interrupted):
    """What :func:`raise_interrupted` raises: a signal landing in whatever code ran."""


def raise_interrupted(signum: int, frame) -> None:
    """The handler outside a fit (set-up, between a sweep's jobs): SIGINT and SIGTERM interrupt
    what runs, and are remembered in case that code swallows the interrupt."""
    RAISED_BEFORE_A_FIT.append(signum)
    raise SignalRaised(signum)


def interrupt_behind(error: BaseException) -> int | None:
    """The signal behind ``error`` where a library made an error of its own out of the interrupt
    :func:`raise_interrupted` raised inside its code (Python 3.11 wraps one raised in a
    ``__set_name__`` in a RuntimeError; OmegaConf, cut short while building a node, can fail on
    the half-built node as it cleans up, and Hydra wraps that): that interrupt, in the error's
    chain (its cause, else the exception it was raised while handling). None for any other
    error, also one raised while handling a Ctrl-C that Python's own handler raised (a script's
    ``except KeyboardInterrupt:`` that trains again) or an interrupt the framework raised on
    purpose after a fit stopped."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        if isinstance(link, SignalRaised):
            return link.signal
        seen.add(id(link))
        link = link.__cause__ if link.__cause__ is not None else link.__context__
    return None


@contextlib.contextmanager
def interrupts_as_raised():
    """An error that a library made out of a signal :func:`raise_interrupted` raised in its code
    comes out as that signal's :class:`Interrupted`, for the code that handles interrupts."""
    try:
        yield
    except Exception as error:
        signum = interrupt_behind(error)
        if signum is None:
            raise
        raise Interrupted(signum) from error


def raise_interrupted_once(signum: int, frame) -> None:
    """As :func:`raise_interrupted`, for a process that ends on the first SIGINT or SIGTERM: the
    next one is ignored, so that an impatient second Ctrl-C cannot cut short what it writes on
    its way out; a third ends it at once (exit 128 + the signal), should that writing hang."""
    repeats = []

    def on_repeat(repeated: int, frame) -> None:
        repeats.append(repeated)
        if len(repeats) > 1:
            os._exit(128 + repeated)

    for other in handled_signals():
        signal.signal(other, on_repeat)
    raise_interrupted(signum, frame)


def interrupt_once_on_stop_signals() -> None:
    """SIGINT and SIGTERM call :func:`raise_interrupted_once` from now on; in the main thread only,
    where handlers can be set (as :func:`on_stop_signals`)."""
    if threading.current_thread() is threading.main_thread():
        for signum in handled_signals():
            signal.signal(signum, raise_interrupted_once)


def handled_signals() -> list[int]:
    """The stop signals this process does not ignore."""
    return [signum for signum in STOP_SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]


def child_processes() -> list[int]:
    """This process's children (a parallel launcher's workers), from /proc; none elsewhere."""
    me, children = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z":  # a child that has exited is no worker
            children.append(int(entry))
    return children


def on_stop_signals(record: Callable[[int], None]) -> dict:
    """For a sweep's own process: SIGINT and SIGTERM call ``record`` instead of raising, and a
    SIGTERM is passed on to the workers, which each stop their job cleanly (a terminal's Ctrl-C
    reaches them by itself). Returns the previous handlers, for :func:`restore_handlers`."""

    def handle(signum: int, frame) -> None:
        record(signum)
        if signum == signal.SIGTERM:
            for pid in child_processes():
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)

    return set_stop_handlers(handle)


def set_stop_handlers(handler: Callable[[int, Any], None]) -> dict:
    """``handler`` for SIGINT and SIGTERM (those not ignored); the previous handlers, for
    :func:`restore_handlers`. In the main thread only, where handlers can be set: elsewhere
    nothing changes and the answer is empty."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in handled_signals()}


def restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM that arrive while the block runs take effect once it has run, as if they
    had come just after it: for a file that must be written whole, or not at all, once the stop
    handlers are gone (a sweep's summary). In the main thread only, where handlers can be set."""
    held: list[int] = []
    previous = set_stop_handlers(lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        restore_handlers(previous)
        if held:
            signal.raise_signal(held[0])


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest):
    """While the block runs, SIGINT and SIGTERM set ``stop`` instead of raising.

    Signal handlers can only be set in the main thread; elsewhere (a thread launcher) the block
    runs with the process's handlers as they are. A signal the process was started ignoring
    (SIGINT for a background job of a script) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if stop.request(name, signal=signum):
            print(f"\n{name}: stopping after this step (saving a checkpoint and the results)...",
                  file=sys.stderr, flush=True)
        else:
            print(f"\n{name}: already stopping; the run is saving its results", file=sys.stderr, flush=True)

    previous = set_stop_handlers(request_stop)
    for signum in RAISED_BEFORE_A_FIT:  # interrupted during set-up, and the interrupt was lost
        request_stop(signum, None)
    RAISED_BEFORE_A_FIT.clear()
    try:
        yield
    finally:
        restore_handlers(previous)
