"""``python -m framework`` and the ``framework`` command.

Start-up imports torch and Hydra, which takes seconds; a Ctrl-C meanwhile is reported in one
line, not as a traceback through the import machinery. ``--help`` and a config that does not
compose are answered first without torch where the schema cache allows
(framework/quick_answers.py).
"""

import os
import signal
import sys

STARTUP_INTERRUPTED = "interrupted during start-up; nothing was run"


def _stop_at_startup() -> None:
    print(STARTUP_INTERRUPTED, file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not sys.exit: a Ctrl-C that lands in code an extension runs while it imports is marked
    # unhandled inside CPython, which then ends the process by SIGINT (status -2) whatever
    # sys.exit asked for. Nothing has started yet, so os._exit skips nothing.
    os._exit(128 + signal.SIGINT)


def main() -> None:
    received = []

    def on_sigint(signum, frame):
        received.append(signum)  # kept even if a library's bare except swallows the raise
        raise KeyboardInterrupt

    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when ignored
    if ours:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        from framework.quick_answers import answer_without_training

        answered = answer_without_training(sys.argv[1:])
        if answered is None:
            from framework.cli import main as cli_main
    except KeyboardInterrupt:
        _stop_at_startup()
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        _stop_at_startup()
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
            _end_ddp_process(code)


def _end_ddp_process(code: object) -> None:
    """A DDP rank (torchrun) ends without the interpreter's teardown: torch leaves its process
    group's threads running, and they can abort the process there (framework/process_exit.py).
    Any other process, and one ending by an unexpected error (whose traceback Python prints),
    ends as usual."""
    from framework.distributed import left_a_group

    if left_a_group():
        from framework.process_exit import end_process, exit_status

        end_process(exit_status(code))


if __name__ == "__main__":
    main()
