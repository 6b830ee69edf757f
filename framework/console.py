"""Writing to a console whose reader may be gone (``python -m framework ... | head``)."""

from __future__ import annotations

import os
import sys


def stop_writing_to(stream) -> None:
    """The reader of ``stream`` is gone: what is left unwritten goes nowhere, so that neither a
    later write nor Python's flush at exit has anything to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def print_quietly(*args, **kwargs) -> None:
    """``print`` to stdout that ends quietly once the reader has stopped reading."""
    try:
        print(*args, **kwargs)
        sys.stdout.flush()
    except BrokenPipeError:
        stop_writing_to(sys.stdout)
