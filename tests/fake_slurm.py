"""A stand-in for a one-node SLURM cluster, for tests of ``hydra/launcher=submitit_slurm``.

submitit drives SLURM through five commands; :func:`install` puts executables with their names
first on a ``PATH``, each running this file, which does what SLURM does with what submitit
gives it, on this machine:

- ``sbatch SCRIPT``: reads the ``#SBATCH`` lines (``--array``, ``--ntasks-per-node``,
  ``--nodes``, ``--output``, ``--error``, ``--cpus-per-task``), answers ``Submitted batch job
  ID`` and runs the script (once per array task, for an array) in a session of its own, with
  the variables a batch step has (``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``,
  ``SLURM_ARRAY_TASK_ID``, ``SLURM_NTASKS``, ``SLURM_JOB_NODELIST``...), once its output
  folder exists (submitit makes it after sbatch answers).
- ``srun [OPTIONS] COMMAND`` (inside the script): starts ``SLURM_NTASKS`` copies of COMMAND with
  ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NODEID``, their output in the files its
  ``--output``/``--error`` patterns name (``%A %a %j %t %%``). As SLURM's srun, it answers its
  own SIGTERM, SIGHUP or SIGQUIT with SIGKILL to the tasks ("forcing job termination"), passes
  SIGUSR1 and SIGUSR2 on, and does not pass on SIGINT or SIGCONT.
- ``sacct -o JobID,State,NodeList --parsable2 -j ID``: the job's state, or each array task's
  (PENDING, RUNNING, COMPLETED, FAILED, ``CANCELLED by 0``).
- ``scancel [--signal=SIG] ID``: with a signal, sends it to every process of the job's step
  (the tasks and what they started; not the batch script or srun, as SLURM without ``--batch``);
  without, cancels the job: SIGCONT and SIGTERM to all its processes (srun then kills the
  tasks), SIGKILL after the grace time.
- ``scontrol requeue ID``: ends the running job as a cancel does, and once its processes are
  all gone runs its script again, with ``SLURM_RESTART_COUNT``; refused (exit 1) for a job
  submitted with ``--no-requeue``.

The state lives in the folder ``FAKE_SLURM_DIR``: one JSON file per job or array task. Only one node:
``--nodes`` above 1 is refused. What it cannot tell: how a real cluster schedules, its accounting
delays, its file systems.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "scontrol", "scancel")
# SLURM's KillWait (30 s by default): SIGTERM, then SIGKILL this much later.
KILL_WAIT_ENV = "FAKE_SLURM_KILL_WAIT"
DEFAULT_KILL_WAIT_S = 5.0
NODE = "localhost"


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the five commands into ``bin_dir``; the environment variables that put them first
    on the PATH and keep their state in ``state_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {name} \"$@\"\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_SLURM_DIR": str(state_dir)}


# ---------------------------------------------------------------------------------- state


def state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def task_file(job_id: str) -> Path:
    return state_dir() / f"{job_id}.json"


def read_task(job_id: str) -> dict:
    return json.loads(task_file(job_id).read_text())


def update_task(job_id: str, **changes) -> dict:
    """Change some of the task's fields, under a lock (the batch step, srun and the control
    commands all write them)."""
    with open(state_dir() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        task = read_task(job_id) if task_file(job_id).exists() else {}
        task.update(changes)
        temporary = task_file(job_id).with_suffix(".tmp")
        temporary.write_text(json.dumps(task))
        temporary.replace(task_file(job_id))
    return task


def tasks_of(job_id: str) -> list[str]:
    """The jobs that ``job_id`` names: itself (a job, or an array's task ``A_a``), or every task of
    the array ``A``."""
    if task_file(job_id).exists():
        return [job_id]
    return sorted(path.stem for path in state_dir().glob(f"{job_id}_*.json"))


def new_job_ids(count: int) -> int:
    """The first of ``count`` new job ids (an array's, then one per array task, as SLURM gives)."""
    with open(state_dir() / "last_job_id", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        last = int(handle.read() or 1000)
        handle.seek(0)
        handle.truncate()
        handle.write(str(last + count))
    return last + 1


# ---------------------------------------------------------------------------------- sbatch


def sbatch_options(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if match:
            value = match[2] if match[2] is not None else "true"
            options[match[1]] = shlex.split(value)[0] if value else value
    return options


def array_indices(spec: str | None) -> list[int]:
    if spec is None:
        return [0]
    spec = spec.split("%")[0]
    indices = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices


def sbatch(args: list[str]) -> int:
    script_path = Path(args[-1]).resolve()
    options = sbatch_options(script_path.read_text())
    nodes = int(options.get("nodes", 1))
    if nodes != 1:
        print(f"sbatch: error: this fake cluster has one node; --nodes={nodes}", file=sys.stderr)
        return 1
    if "array" in options:
        indices = array_indices(options["array"])
        array_job = new_job_ids(1 + len(indices))
        jobs = [(f"{array_job}_{index}", array_job + 1 + offset, index) for offset, index in enumerate(indices)]
    else:
        array_job = new_job_ids(1)
        jobs = [(str(array_job), array_job, None)]
    for job_id, own_id, index in jobs:
        update_task(job_id, state="PENDING", array_job=array_job, own_id=own_id, index=index,
                    options=options, script=str(script_path), cwd=os.getcwd(), restarts=0, requeue=False)
        subprocess.Popen([sys.executable, __file__, "_run", job_id], start_new_session=True, cwd=os.getcwd(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {array_job}")
    return 0


def expand(pattern: str, env: dict[str, str], task: int | None) -> str:
    """SLURM's filename pattern: %A array job, %a array index, %j job id, %t task, %% a %."""
    values = {"A": env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]), "a": env.get("SLURM_ARRAY_TASK_ID", "4294967294"),
              "j": env["SLURM_JOB_ID"],
              "t": "" if task is None else str(task), "N": NODE, "n": "0", "%": "%"}
    return re.sub(r"%([AajtNn%])", lambda match: values[match[1]], pattern)


def run_batch_job(job_id: str) -> int:
    """The batch step of one array task, run again for as long as it is requeued."""
    task = update_task(job_id, runner=os.getpid())
    options = task["options"]
    ntasks = int(options.get("ntasks-per-node", options.get("ntasks", 1)))
    env = dict(os.environ)
    if task["index"] is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(task["array_job"]), SLURM_ARRAY_TASK_ID=str(task["index"]))
    env.update({
        "SLURM_JOB_ID": str(task["own_id"]), "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": NODE, "SLURM_NODEID": "0", "SLURMD_NODENAME": NODE, "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks), "SLURM_TASKS_PER_NODE": str(ntasks), "SLURM_SUBMIT_DIR": task["cwd"],
        "SLURM_JOB_NAME": options.get("job-name", "job"), "SLURM_CPUS_PER_TASK": options.get("cpus-per-task", "1"),
        "FAKE_SLURM_TASK": job_id,
    })
    stdout = expand(options.get("output", "slurm-%j.out"), env, None)
    stderr = expand(options["error"], env, None) if "error" in options else stdout
    # Pending until the submitter has made the job's folder (submitit makes it once sbatch has
    # answered: a cluster's queue leaves it that time; a job started without it fails).
    deadline = time.monotonic() + 60
    while not Path(stdout).parent.is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    while True:
        env["SLURM_RESTART_COUNT"] = str(task["restarts"])
        update_task(job_id, state="RUNNING", pgid=None, srun_pids=[])
        with open(stdout, "a") as out, open(stderr, "a") as err:
            batch = subprocess.Popen(["bash", task["script"]], env=env, cwd=task["cwd"], stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        update_task(job_id, pgid=batch.pid)
        code = batch.wait()
        task = read_task(job_id)
        if task.get("requeue"):
            task = update_task(job_id, state="PENDING", requeue=False, restarts=task["restarts"] + 1)
            while process_group_alive(batch.pid):  # SLURM starts it again once the job's processes are gone
                time.sleep(0.1)
            continue
        if not task.get("state", "").startswith("CANCELLED"):
            update_task(job_id, state="COMPLETED" if code == 0 else "FAILED", exit_code=code)
        return 0


def end_job(job_id: str) -> None:
    """SIGTERM to every process of the task's batch step, SIGKILL after the grace time (in a
    process of its own: the caller may be one of them)."""
    pgid = read_task(job_id).get("pgid")
    if pgid is None:
        return
    subprocess.Popen([sys.executable, __file__, "_end", str(pgid)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def end_process_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGCONT)
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + float(os.environ.get(KILL_WAIT_ENV, DEFAULT_KILL_WAIT_S))
        while time.monotonic() < deadline:
            time.sleep(0.1)
            os.killpg(pgid, 0)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def end_all(state: Path) -> None:
    """SIGKILL to every job's batch step and its runner: what a test leaves (the jobs are in
    sessions of their own, out of reach of a kill of the sweep's group)."""
    for path in state.glob("*.json"):
        task = json.loads(path.read_text())
        for pid, kill in ((task.get("pgid"), os.killpg), (task.get("runner"), os.kill)):
            if pid:
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


# ---------------------------------------------------------------------------------- srun


def srun(args: list[str]) -> int:
    options, position = {}, 0
    while position < len(args) and args[position].startswith("-"):
        word = args[position]
        if "=" in word:
            name, value = word.split("=", 1)
            options[name] = value
            position += 1
        elif word in ("--output", "--error", "-o", "-e", "--ntasks", "-n"):
            options[word] = args[position + 1]
            position += 2
        else:  # --unbuffered and other flags
            options[word] = True
            position += 1
    command = args[position:]
    ntasks = int(options.get("--ntasks", options.get("-n", os.environ.get("SLURM_NTASKS", "1"))))
    job_id = os.environ["FAKE_SLURM_TASK"]
    update_task(job_id, srun_pids=read_task(job_id).get("srun_pids", []) + [os.getpid()])
    processes = []
    for rank in range(ntasks):
        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NODEID="0",
                   SLURM_STEP_ID="0", SLURM_STEPID="0")
        stdout = expand(options.get("--output", options.get("-o", "/dev/stdout")), env, rank)
        stderr = expand(options.get("--error", options.get("-e", stdout)), env, rank)
        with open(stdout, "a") as out, open(stderr, "a") as err:
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL))

    def pass_on(signum, frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    def force_termination(signum, frame):
        print("srun: forcing job termination", file=sys.stderr)
        pass_on(signal.SIGKILL, frame)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, force_termination)
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, pass_on)
    for signum in (signal.SIGINT, signal.SIGCONT):  # srun reports its tasks' state on a first Ctrl-C
        signal.signal(signum, lambda signum, frame: None)
    codes = [process.wait() for process in processes]
    failed = [code for code in codes if code != 0]
    if not failed:
        return 0
    return failed[0] if failed[0] > 0 else 128 - failed[0]


# ---------------------------------------------------------------------------------- queries and control


def sacct(args: list[str]) -> int:
    ids = [args[place + 1] for place, word in enumerate(args) if word == "-j"]
    print("JobID|State|NodeList")
    for job_id in ids:
        for task_id in tasks_of(job_id):
            print(f"{task_id}|{read_task(task_id)['state']}|{NODE}")
    return 0


def scancel(args: list[str]) -> int:
    signame, ids, position = None, [], 0
    while position < len(args):
        word = args[position]
        if word.startswith("--signal="):
            signame = word.split("=", 1)[1]
        elif word in ("--signal", "-s"):
            signame = args[position + 1]
            position += 1
        else:
            ids.append(word)
        position += 1
    for job_id in ids:
        for task_id in tasks_of(job_id):
            task = read_task(task_id)
            if signame is None:
                if task["state"] in ("PENDING", "RUNNING"):
                    update_task(task_id, state="CANCELLED by 0")
                    end_job(task_id)
                continue
            signum = getattr(signal, signame if signame.startswith("SIG") else f"SIG{signame}")
            for pid in [pid for srun_pid in task.get("srun_pids", []) for pid in descendants(srun_pid)]:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
    return 0


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, by their children, and so on (not ``pid`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The field after the command's closing parenthesis: state, then the parent's pid.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def scontrol(args: list[str]) -> int:
    if args[:1] != ["requeue"]:
        print(f"scontrol: this fake cluster only requeues: {args}", file=sys.stderr)
        return 1
    for job_id in args[1:]:
        for task_id in tasks_of(job_id):
            if "no-requeue" in read_task(task_id)["options"]:
                print(f"Requested operation is presently disabled for job {task_id}", file=sys.stderr)
                return 1
            update_task(task_id, requeue=True)
            end_job(task_id)
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    # A Ctrl-C to the group of the process that runs a command (submitit's sacct, from the
    # sweep's process) ends it as it ends SLURM's own commands: at once, without a word.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if command == "_run":
        return run_batch_job(args[0])
    if command == "_end":
        end_process_group(int(args[0]))
        return 0
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}[command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
