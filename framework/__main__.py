"""``python -m framework`` and the ``framework`` command.

Start-up imports torch and Hydra, which takes seconds; a Ctrl-C meanwhile is reported in one
line, not as a traceback through the import machinery. ``--help`` and a config that does not
compose are answered first without torch where the schema cache allows
(framework/quick_answers.py).
"""

import os
import signal
import sys

from framework.errors import STARTUP_INTERRUPTED
from framework.garbage_collection import made_for_the_process


def _stop_at_startup(signum: int, frame) -> None:
    """The SIGINT handler while torch and Hydra import: say so in one line and exit 130 from
    the handler itself. Raising KeyboardInterrupt here instead would unwind through whatever
    runs at that instant: an extension's C++ code that called back into Python (torch's pybind11
    at import) cannot pass it on and aborts the process (SIGABRT), and CPython ends a process
    whose import an interrupt cut short by SIGINT whatever sys.exit asked for. Nothing has
    started yet, so os._exit skips nothing."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, RuntimeError):  # a closed pipe, or a write this signal interrupted
        pass
    os.write(sys.stderr.fileno(), f"{STARTUP_INTERRUPTED}\n".encode())
    os._exit(128 + signal.SIGINT)


def main() -> None:
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when ignored
    if ours:
        signal.signal(signal.SIGINT, _stop_at_startup)
    try:
        # What start-up imports lives as long as the process (framework/garbage_collection.py).
        with made_for_the_process():
            from framework.quick_answers import answer_without_training

            answered = answer_without_training(sys.argv[1:])
            if answered is None:
                from framework.cli import main as cli_main
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if answered is not None:
        sys.exit(answered)
    code: object = None  # what the command line exits with, when it ends by itself
    ended = False
    try:
        cli_main()
        ended = True
    except SystemExit as exiting:
        code, ended = exiting.code, True
        raise
    finally:
        # Everything is written and reported. A Ctrl-C while the interpreter shuts down (a
        # parallel launcher's pool joins its workers then) would only print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if ended:
            _end_without_teardown(code)


# The exit statuses of a run stopped by SIGINT or SIGTERM (framework/signals.py).
INTERRUPTED_STATUSES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def _end_without_teardown(code: object) -> None:
    """Two kinds of process end without the interpreter's teardown (framework/process_exit.py):
    - a DDP rank (torchrun): torch leaves its process group's threads running, and they can
      abort the process there;
    - a run that a signal stopped: where the interrupt landed in Python code that C code ran
      as a string (PyRun_String, as extensions do while they import), CPython marks it
      unhandled, and its teardown ends the process by SIGINT (status -2) instead of the 130 or
      143 the run exits with.
    Any other process, and one ending by an unexpected error (whose traceback Python prints),
    ends as usual."""
    from framework.distributed import left_a_group

    if left_a_group() or code in INTERRUPTED_STATUSES:
        from framework.process_exit import end_process, exit_status

        end_process(exit_status(code))


if __name__ == "__main__":
    main()
