"""Data-parallel training over processes started by torchrun (``trainer.strategy``).

The only entry contract is the environment torch.distributed's launchers export (torchrun, and
submitit's ``TorchDistributedEnvironment().export()``): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, read by ``init_process_group(init_method="env://")``. How the
processes were started does not matter.

What holds under DDP, and where:

- **One run folder, rank 0's.** On the command line (and in :func:`framework.train`) the group is
  joined before Hydra runs (:func:`launch_scope`). Rank 0 runs Hydra as a single process would,
  and broadcasts the folder it resolved (``${now:...}`` and the unique-folder resolver are
  resolved once, there); the other ranks wait for it and then run Hydra with
  ``hydra.run.dir=<that folder>``, no ``.hydra`` snapshot and no logging configuration, so they
  create and write nothing. Only rank 0 builds the loggers, the checkpointer and result.json.
- **Shards.** ``data.batch_size`` is the global batch. Every rank draws the same global batches
  (shuffles come from the seed) and trains on a contiguous block of each one: rank ``r`` of ``W``
  takes rows ``[n*r//W, n*(r+1)//W)`` of a batch of ``n`` rows (the full batch: of all rows).
- **Gradients.** ``DistributedDataParallel`` all-reduces them, with a communication hook that
  weighs each rank's gradient so that the sum is the single-process gradient of the global batch:
  ``rows/n`` for a loss that is a mean over rows, ``1`` for one that is a sum (``sse``); which of
  the two a loss is, is measured once (:func:`rows_reduction`). Blocks that differ by a row are
  weighed exactly.
- **The loss** every rank sees from a step is the global batch's (it rides with the last gradient
  bucket's all-reduce), so everything decided from it (a non-finite loss, ``trainer.tol.*``,
  logged metrics, early stopping) is decided alike on every rank.
- **Stops** that one rank alone may see (a signal, ``trainer.max_time``, a plugin's request) are
  agreed at every step boundary (:meth:`DataParallel.agree_to_go_on`: one all-reduce of one
  integer); the lowest rank that asked gives the reason, and every rank stops after the same step.
- **Names.** The step alone calls the DDP wrapper; ``state.run.model`` stays the bare model, so
  parameter names, ``trainer.freeze``, ``params/`` tags, checkpoints and model.safetensors are
  those of a single process. Small models keep their flat parameter (framework/flat_parameters.py):
  their parameters are views of it, and DDP reduces into their gradients in place.

A step thus costs two collectives: the gradients (with the loss) and the stop flag. A single
process (``trainer.strategy=single``, or ``auto`` without a launcher's environment) joins no group
and costs the loop one ``is None`` test a step. ``optimizer=lbfgs`` is refused: its line search
compares loss values inside its step, which the ranks do not share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from framework.errors import ConfigError, FrameworkError
from framework.flat_parameters import stop_lending
from framework.state import LoopState

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp", "single")
STRATEGY_KEY = "trainer.strategy"
# What torchrun (and submitit's TorchDistributedEnvironment) export to every process.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_HINT = "torchrun --nproc_per_node=2 -m framework +task=linear trainer.strategy=ddp"
# Overrides of ranks > 0: Hydra creates and writes nothing (rank 0 owns the folder).
QUIET_HYDRA = ("hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")


class RankZeroStopped(FrameworkError):
    """Rank 0 ended before training (a bad config, say) and said so; this rank ends with its exit
    status and no message of its own (rank 0's is the one to read)."""

    reported = True

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"rank 0 stopped before training (exit status {exit_code}); its message says why")
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# Which strategy, and joining the process group
# --------------------------------------------------------------------------------------------


def launched() -> bool:
    """Whether a launcher (torchrun, submitit) exported the process-group environment."""
    return all(os.environ.get(name) for name in LAUNCH_ENV)


def wants_ddp(strategy: str) -> bool:
    """Whether ``trainer.strategy`` asks for DDP here: ``ddp`` always (it needs a launcher's
    environment), ``auto`` when a launcher started more than one process, ``single`` never."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"{STRATEGY_KEY}={strategy!r} is not a strategy; use {' | '.join(STRATEGIES)}")
    if strategy == "single":
        return False
    if strategy == "ddp":
        if not launched():
            missing = [name for name in LAUNCH_ENV if not os.environ.get(name)]
            unset = "none of them is set here" if len(missing) == len(LAUNCH_ENV) else f"{', '.join(missing)} not set here"
            raise ConfigError(
                f"{STRATEGY_KEY}=ddp needs processes started by torchrun (or another launcher that "
                f"exports {', '.join(LAUNCH_ENV)}; {unset}): launch with `{TORCHRUN_HINT}`, "
                f"or train in one process with {STRATEGY_KEY}=single"
            )
        return True
    return launched() and int(os.environ["WORLD_SIZE"]) > 1


def command_line_strategy(args: list[str]) -> str:
    """``trainer.strategy`` as the command line sets it (before Hydra composes; default auto)."""
    strategy = "auto"
    for arg in args:
        key, equals, value = arg.partition("=")
        if equals and key.lstrip("+") == STRATEGY_KEY:
            strategy = value.strip().strip("'\"")
    return strategy


def join_process_group() -> bool:
    """Join the launcher's process group (env://) unless this process already has; True when this
    call joined it (and so should leave it). Gloo for CPU tensors, NCCL for CUDA ones."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    cuda = torch.cuda.is_available()
    if cuda:  # before NCCL starts: each rank its own GPU
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://")
    return True


_left_a_group = False  # this process destroyed a process group (framework/process_exit.py says why it matters)


def leave_process_group() -> None:
    global _left_a_group
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
        _left_a_group = True


def left_a_group() -> bool:
    """Whether this process took part in a process group, whose threads may outlive it
    (framework.process_exit)."""
    return _left_a_group


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rank_device(device: torch.device, requested: str) -> torch.device:
    """A rank's device: ``cuda`` and ``auto`` mean the GPU of this rank's LOCAL_RANK."""
    if device.type == "cuda" and requested in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return device


def launch_command(command: str, parallel: "DataParallel | None") -> str:
    """``python -m framework ...`` as this run was launched: under torchrun for a DDP run."""
    if parallel is None:
        return command
    return command.replace("python -m framework", f"torchrun --nproc_per_node={parallel.world} -m framework", 1)


def _broadcast(objects: list[Any], source: int = 0) -> list[Any]:
    import torch.distributed as dist

    dist.broadcast_object_list(objects, src=source, device=torch.device("cpu"))
    return objects


# --------------------------------------------------------------------------------------------
# Before Hydra: one run folder, rank 0's
# --------------------------------------------------------------------------------------------


class Launch:
    """This process's part in a DDP run launched from the command line or framework.train: rank 0
    sends the run folder it resolved, once; the others wait for it before they run Hydra."""

    def __init__(self, joined: bool) -> None:
        self.joined = joined  # this launch joined the process group, and leaves it
        self.rank = rank()
        self.folder_sent = False

    def hydra_overrides(self, args: list[str]) -> list[str]:
        """Rank 0: ``args``. Other ranks: ``args`` with rank 0's folder and a Hydra that writes nothing."""
        if self.rank == 0:
            from framework.sweeps import MULTIRUN_FLAGS

            if any(arg in MULTIRUN_FLAGS for arg in args):  # the others hear of it as rank 0's exit status
                raise ConfigError(
                    "a sweep (-m) under torchrun would run the whole sweep in every process; run one job per "
                    "torchrun, or a sweep whose jobs each start their own processes (README: Scaling out)")
            return args
        folder, exit_code = _broadcast([None, None])
        if folder is None:
            raise RankZeroStopped(exit_code)
        from framework.overrides import hydra_value

        kept = [arg for arg in args if not arg.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
        return [*kept, f"hydra.run.dir={hydra_value(folder)}", *QUIET_HYDRA]

    def send_folder(self, folder: str | None, exit_code: int | None = None) -> None:
        if self.rank == 0 and not self.folder_sent:
            self.folder_sent = True
            _broadcast([folder, exit_code])


_launch: Launch | None = None  # the launch this process is in (one at a time)


def hydra_overrides(args: list[str]) -> list[str]:
    """The Hydra overrides of this rank (unchanged outside a DDP launch, and on rank 0)."""
    return args if _launch is None else _launch.hydra_overrides(args)


@contextlib.contextmanager
def launch_scope(args: list[str]):
    """Around a command line's (or framework.train's) Hydra run: join the process group first
    when this is a DDP launch (``trainer.strategy`` from ``args``, and the environment). Rank 0
    always sends the others a folder, or its exit status if it ended before sending one."""
    global _launch
    strategy = command_line_strategy(args)
    # Only a valid request in a launcher's environment; anything else the run itself reports
    # (run_scope), through the command line's error handling.
    if (_launch is not None or not launched() or strategy not in STRATEGIES or strategy == "single"
            or (strategy == "auto" and int(os.environ["WORLD_SIZE"]) <= 1)):
        yield
        return
    _launch = launch = Launch(join_process_group())
    exit_code = 1
    try:
        yield
        exit_code = 0
    except SystemExit as exiting:
        exit_code = exiting.code if isinstance(exiting.code, int) else 1
        raise
    except FrameworkError as error:
        exit_code = error.exit_code
        raise
    finally:
        _launch = None
        try:
            launch.send_folder(None, exit_code)  # only if none was sent: rank 0 ended early (--cfg job: 0)
        finally:
            if launch.joined:
                leave_process_group()


@contextlib.contextmanager
def run_scope(strategy: str, run_dir: Path | None):
    """Around one training run: yields ``(ddp, run_dir)``: whether it trains data-parallel, and
    the folder this process writes into (rank 0's; None on the other ranks, which write
    nothing). Joins the process group if no launch did (a job whose processes a launcher started
    with its config already resolved), and leaves it after."""
    ddp = wants_ddp(strategy)
    if _launch is not None and not ddp:
        raise ConfigError(f"{STRATEGY_KEY}={strategy} comes from the config (a preset), but the command line "
                          f"launched this process for DDP; set {STRATEGY_KEY} on the command line")
    if not ddp:
        yield False, run_dir
        return
    joined = join_process_group() if _launch is None else False
    try:
        if _launch is not None:  # the others have rank 0's folder already
            _launch.send_folder(None if run_dir is None else str(run_dir))
        else:
            run_dir = _broadcast([None if run_dir is None else str(run_dir)])[0]
            run_dir = None if run_dir is None else Path(run_dir)
        yield True, run_dir if rank() == 0 else None
    finally:
        if joined:
            leave_process_group()


def quiet_rank() -> None:
    """Ranks > 0 report errors only: rank 0's console is the run's."""
    if rank() != 0:
        logging.getLogger("framework").setLevel(logging.ERROR)
        logging.getLogger("framework_plugins").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


def rows_reduction(loss_fn: Callable, targets: torch.Tensor) -> str:
    """``mean`` or ``sum``: how ``loss_fn`` reduces over rows, measured on a few rows split in
    two (a mean over all is the row-weighted mean of the parts' means, a sum the parts' sum).
    Anything else (a maximum, say) cannot be split over ranks and is refused."""
    rows = targets[:4]
    if len(rows) < 2:  # one rank, one row: every weighting is 1
        return "mean"
    with torch.no_grad():
        # Predictions that miss each row by a different amount.
        offsets = torch.arange(1, len(rows) + 1, dtype=rows.dtype, device=rows.device)
        predictions = rows + offsets.reshape(-1, *([1] * (rows.dim() - 1)))
        half = len(rows) // 2
        whole = float(loss_fn(predictions, rows))
        first = float(loss_fn(predictions[:half], rows[:half]))
        second = float(loss_fn(predictions[half:], rows[half:]))
    if math.isclose(whole, (half * first + (len(rows) - half) * second) / len(rows), rel_tol=1e-5):
        return "mean"
    if math.isclose(whole, first + second, rel_tol=1e-5):
        return "sum"
    raise ConfigError(f"the loss is neither a mean nor a sum over rows (on {len(rows)} rows it is {whole:.6g}, on "
                      f"their two halves {first:.6g} and {second:.6g}), so DDP cannot split a batch over ranks; "
                      f"train in one process with {STRATEGY_KEY}=single")


def block(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous block of ``rows`` rows: sizes differ by one at most."""
    return rows * rank // world, rows * (rank + 1) // world


class StepShare:
    """What the communication hook needs of the current step, and what it gives back."""

    weight = 1.0  # this rank's share of the global batch: its gradient's (and loss's) weight
    loss: torch.Tensor | None = None  # the step's loss, from the loss function the step called
    global_loss: torch.Tensor | None = None  # the sum over ranks of weight * loss


def weighted_allreduce(share: StepShare, bucket):  # no annotation: DDP checks it, and ours are strings
    """DDP communication hook: the sum over ranks of each rank's gradient times its weight (DDP's
    own hook is the same with weight 1/world). The step's loss travels with the last bucket, so
    the global loss costs no collective of its own."""
    import torch.distributed as dist

    tensor = bucket.buffer()
    tensor.mul_(share.weight)
    loss = share.loss
    if loss is None or not bucket.is_last() or loss.dtype != tensor.dtype:
        return dist.all_reduce(tensor, async_op=True).get_future().then(lambda done: done.value()[0])
    share.loss = None
    packed = torch.cat([tensor, (loss.detach() * share.weight).reshape(1)])

    def unpack(done) -> torch.Tensor:
        reduced = done.value()[0]
        tensor.copy_(reduced[:-1])
        share.global_loss = reduced[-1]
        return tensor

    return dist.all_reduce(packed, async_op=True).get_future().then(unpack)


UUID_BYTES = 64  # room for a GPU's UUID as torch writes it ("GPU-" and 36 characters, or 36)


def sharing_ranks(gpu_ids: list) -> tuple[int, int] | None:
    """The first two ranks whose GPUs are one (``gpu_ids[r]``: rank r's GPU), or None."""
    first_rank: dict = {}
    for rank_number, gpu in enumerate(gpu_ids):
        if gpu in first_rank:
            return first_rank[gpu], rank_number
        first_rank[gpu] = rank_number
    return None


def shared_gpu_message(shared: tuple[int, int], gpu_name: str, requested: str, gpus_there: int) -> str:
    """Why ranks that would share a GPU are refused, and what to do: a device named by number
    (``trainer.device=cuda:N``) is every rank's; otherwise rank ``shared[1]``'s machine, with
    ``gpus_there`` GPUs, was given more processes than it has GPUs."""
    first, second = shared
    problem = (f"ranks {first} and {second} would share one GPU ({gpu_name}), and NCCL needs a GPU for each "
               f"rank: ")
    if requested.startswith("cuda:"):
        return problem + (f"trainer.device={requested} gives every rank that GPU; use trainer.device=cuda "
                          f"(each rank the GPU of its LOCAL_RANK), or train the ranks on the CPU with "
                          f"trainer.device=cpu")
    return problem + (f"start at most {gpus_there} process(es) on rank {second}'s machine "
                      f"(torchrun --nproc_per_node={gpus_there}), or train the ranks on the CPU with "
                      f"trainer.device=cpu")


def check_one_gpu_per_rank(device: torch.device, requested: str) -> None:
    """Refuse, on every rank alike, ranks that share a GPU under NCCL, which gives each rank a GPU
    of its own and would stop them deep in DDP's first broadcast. That is torchrun with more
    processes on a machine than it has GPUs (``cuda:LOCAL_RANK % count`` wraps around), or
    ``trainer.device=cuda:N`` under several ranks; a rank that sees one GPU of its own (a
    cluster's binding) passes. A process group the caller made with gloo alone is left alone."""
    import torch.distributed as dist

    if "nccl" not in str(dist.get_backend()):
        return
    # The GPU's UUID names the physical device whatever CUDA_VISIBLE_DEVICES says; the machine's
    # GPU count rides with it. A CPU tensor goes through gloo, before NCCL is asked anything.
    uuid = str(torch.cuda.get_device_properties(device).uuid).encode()[:UUID_BYTES]
    mine = torch.zeros(UUID_BYTES + 1, dtype=torch.int64)
    mine[:len(uuid)] = torch.tensor(list(uuid), dtype=torch.int64)
    mine[UUID_BYTES] = torch.cuda.device_count()
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    shared = sharing_ranks([tuple(row[:UUID_BYTES].tolist()) for row in everyone])
    if shared is not None:
        gpus_there = int(everyone[shared[1]][UUID_BYTES])
        raise ConfigError(shared_gpu_message(shared, torch.cuda.get_device_name(device), requested, gpus_there))


class DataParallel:
    """The DDP wrapper of a built run, the step that trains a rank's shard, and the agreement on
    stops; built after the model, optimizer and progress are final (after a resume)."""

    def __init__(self, state: LoopState) -> None:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        run = state.run
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if isinstance(run.optimizer, torch.optim.LBFGS):
            raise ConfigError(f"optimizer lbfgs decides each step from loss values inside its line search, "
                              f"which DDP does not share between ranks; use another optimizer, or "
                              f"{STRATEGY_KEY}=single")
        self.check_batches(run)
        if run.device.type == "cuda":
            check_one_gpu_per_rank(run.device, run.trainer.device)
        self.reduction = rows_reduction(run.loss_fn, run.data.targets)
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        # DDP all-reduces what autograd adds into each parameter's own gradient: a forward pass
        # through the optimizer's flat tensor would leave them unreduced (flat_parameters.lent_column).
        stop_lending(run.optimizer)
        # Constructing it broadcasts rank 0's parameters, and waits for every rank: no rank
        # starts training before every rank has built (and resumed) its run.
        self.module = DistributedDataParallel(run.model, device_ids=device_ids)
        self.share = share = StepShare()
        self.module.register_comm_hook(share, weighted_allreduce)
        loss_fn = run.loss_fn

        def loss_on_shard(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            share.loss = loss = loss_fn(predictions, targets)  # for the hook: it rides with the gradients
            return loss

        # The step plugin gets the wrapper as the model (and the loss that the hook reduces);
        # every other plugin the bare model.
        self.step_state = LoopState(run=dataclasses.replace(run, model=self.module, loss_fn=loss_on_shard),
                                    progress=state.progress)
        self.stop = state.progress.stop
        self.stopped_by = torch.zeros(1, dtype=torch.int64)
        log.info("data-parallel training over %d processes (%s): each takes its block of every batch",
                 self.world, dist.get_backend())

    def check_batches(self, run) -> None:
        """Every rank gets at least one row of every batch (the last one of an epoch included)."""
        rows = len(run.data)
        sizes = {rows} if run.batch_size is None or run.batch_size >= rows else {run.batch_size, rows % run.batch_size}
        smallest = min(size for size in sizes if size)
        if smallest < self.world:
            raise ConfigError(f"a batch of {smallest} rows cannot be split over {self.world} ranks; use "
                              f"data.batch_size of at least {self.world} (and a row count whose last batch "
                              f"has that many), or fewer processes")

    def wrap_step(self, step: Callable) -> Callable:
        """The step on this rank's block of each global batch; it returns the global batch's loss."""
        import torch.distributed as dist

        rank, world, share, mean = self.rank, self.world, self.share, self.reduction == "mean"

        def shard_step(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            rows = len(features)
            start, stop = block(rows, rank, world)
            share.weight = weight = (stop - start) / rows if mean else 1.0
            share.global_loss = None
            loss = step(features[start:stop], targets[start:stop])
            share.loss, global_loss = None, share.global_loss
            if global_loss is None:  # a step plugin's own loss, not run.loss_fn's: reduced on its own
                global_loss = loss.detach() * weight
                dist.all_reduce(global_loss)
            return global_loss

        return shard_step

    def agree_to_go_on(self) -> bool:
        """At a step boundary, on every rank: whether no rank has a stop request. When one has, the
        lowest such rank's request becomes every rank's."""
        import torch.distributed as dist

        stop, flag = self.stop, self.stopped_by
        flag.fill_(0 if stop.reason is None else self.world - self.rank)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        highest = int(flag)
        if highest == 0:
            return True
        reason, signal = _broadcast([stop.reason, stop.signal], source=self.world - highest)
        stop.replace(reason, signal=signal)
        return False
