"""Runs one command and reports its own wall time and peak memory (bench/measure.py's
run_process starts every whole-process case through this small launcher).

    python bench/launch.py OUTPUT_FILE COMMAND...   ->  prints {"returncode", "seconds", "maxrss_kib"}

Why a launcher: Linux carries a process's peak-RSS mark across fork and exec, so a child started
straight from the benchmark (which holds hundreds of MB after the large-data cases) would report
the benchmark's peak, not its own. Started from this small process, the child's peak is its own
(at least this launcher's few MB). Imports only what it needs, to stay small.
"""

import json
import os
import sys
import time


def main() -> None:
    output, command = sys.argv[1], sys.argv[2:]
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    pid = os.posix_spawn(command[0], command, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)])
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    os.close(fd)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "seconds": seconds,
                      "maxrss_kib": usage.ru_maxrss}))


if __name__ == "__main__":
    main()
