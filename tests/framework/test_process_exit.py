"""framework.process_exit: a real process ended by end_process still does what sys.exit does
for Python code (non-daemon threads finish, atexit handlers run, buffered output arrives), and
exits with the status asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from framework.process_exit import exit_status

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from framework.process_exit import end_process

folder = Path(sys.argv[1])
def late_writer():
    time.sleep(0.3)
    (folder / "thread.txt").write_text("done")
threading.Thread(target=late_writer).start()
atexit.register(lambda: (folder / "atexit.txt").write_text("ran"))
sys.stdout.write("buffered line without a newline")  # a pipe: block-buffered, not yet written
end_process(int(sys.argv[2]))
print("never reached")
"""


@pytest.mark.parametrize("status", [0, 3])
def test_end_process_finishes_threads_atexit_and_output_then_exits_with_the_status(tmp_path, status):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(status)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == status, done.stderr
    assert done.stdout == "buffered line without a newline"
    assert (tmp_path / "thread.txt").read_text() == "done"
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def test_exit_status_reads_sys_exit_codes_as_python_does(capsys):
    assert exit_status(None) == 0
    assert exit_status(5) == 5
    assert exit_status("a message") == 1
    assert capsys.readouterr().err == "a message\n"
