"""Ending a process without the interpreter's teardown: a DDP rank, and a run a signal stopped.

torch's DistributedDataParallel keeps its process group alive after ``destroy_process_group``
(torch 2.13: the gloo worker and transport threads of a group that a DDP wrapper was built on are
still running after the wrapper is gone and the group destroyed; a group no wrapper used stops
them). Those threads then meet the interpreter's finalization and the C++ exit handlers, and now
and then a rank dies with SIGABRT ("terminate called without an active exception") after its run
has completed and written everything: torchrun then reports the whole launch as failed.

A run that a signal stopped ends the same way (framework/__main__.py): where the interrupt had
landed in Python code that C code ran as a string, CPython marks it unhandled, and its teardown
would end the process by SIGINT instead of with the run's exit status.

Such a process therefore ends the way ``sys.exit`` would up to the point where the trouble
starts: it runs the threading module's exit hooks and waits for Python's non-daemon threads,
runs the ``atexit`` handlers (logging's flush among them) and flushes stdout and stderr, then
leaves with ``os._exit``, which skips the finalization.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives (None: 0; a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(code: int) -> NoReturn:
    """Exit with ``code`` after what a normal exit does for Python code, without finalization."""
    # The interpreter's own first step at exit: the threading module's exit hooks (thread
    # pools and joblib's executor register theirs, which tell their threads to end), then a
    # join of every non-daemon thread. Joining without the hooks would wait for ever.
    threading._shutdown()
    atexit._run_exitfuncs()  # the public atexit offers no way to run them; this is sys.exit's own step
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
