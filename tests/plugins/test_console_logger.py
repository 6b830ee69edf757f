"""The console logger: a live tqdm bar on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import fcntl
import os
import re
import pty
import select
import struct
import subprocess
import sys
import termios

from tests.conftest import run_cli


def test_on_a_terminal_a_live_bar_shows_steps_loss_and_speed(tmp_path):
    primary, secondary = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing; give it a real size.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "framework", "+task=sine", "trainer.max_steps=2000",
         f"hydra.run.dir={tmp_path / 'run'}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary, cwd=tmp_path,
    )
    os.close(secondary)
    output = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=120)
    os.close(primary)
    text = output.decode(errors="replace")
    assert process.returncode == 0
    assert "step/s" in text and "loss=" in text
    shown = [int(count) for count in re.findall(r"(\d+)/2000", text)]
    assert len(set(shown)) >= 3 and max(shown) > 1000  # redrawn as the run goes on


def test_without_a_terminal_there_is_no_bar_but_about_ten_progress_lines(tmp_path):
    done = run_cli("+task=polyfit", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0
    assert "step/s" not in done.stderr and "\r" not in done.stderr
    progress = [line for line in done.stdout.splitlines() if "] - step " in line]
    assert 8 <= len(progress) <= 12, progress
    assert "step 1000/1000" in done.stdout or "step 900/1000" in done.stdout
