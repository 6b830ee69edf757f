"""``python -m framework`` and the ``framework`` command.

Start-up imports torch and Hydra, which takes seconds; a Ctrl-C meanwhile is reported in one
line, not as a traceback through the import machinery.
"""

import sys


def main() -> None:
    try:
        from framework.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted during start-up; nothing was run", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
