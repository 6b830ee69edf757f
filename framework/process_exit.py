"""Ending a process that used torch.distributed, without the interpreter's teardown.

torch's DistributedDataParallel keeps its process group alive after ``destroy_process_group``
(torch 2.13: the gloo worker and transport threads of a group that a DDP wrapper was built on are
still running after the wrapper is gone and the group destroyed; a group no wrapper used stops
them). Those threads then meet the interpreter's finalization and the C++ exit handlers, and now
and then a rank dies with SIGABRT ("terminate called without an active exception") after its run
has completed and written everything: torchrun then reports the whole launch as failed.

Such a process therefore ends the way ``sys.exit`` would up to the point where the trouble
starts: it waits for Python's non-daemon threads, runs the ``atexit`` handlers (logging's flush
among them) and flushes stdout and stderr, then leaves with ``os._exit``, which skips the
finalization that the leftover threads cannot survive.
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
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the public atexit offers no way to run them; this is sys.exit's own step
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
