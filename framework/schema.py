"""Config schemas (dataclasses) and the explicit step that stores them in Hydra's ConfigStore.

Component defaults come from the dataclasses the plugins register; YAML under conf/ only holds
the primary config and task presets. Each component is stored under group = kind and
name = component name, with a ``name`` field added so the run's config snapshot says which
component was chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from framework.config_walks import child_config
from framework.errors import ConfigError
from framework.ranges import setting
from framework.registry import KINDS, PER_FIT_KINDS, Registry

SCHEMA_NAME = "framework_schema"
DEVICES_HELP = "auto | cpu | cuda | cuda:N"
DTYPES = ("float32", "float64")


@dataclass
class TolConfig:
    """``trainer.tol.*``: convergence stops, scipy's names (plugins/convergence_stops.py).

    Each is off when null; the first one met ends the run after that step.
    """

    # any number: a loss function may be negative (a log-likelihood)
    loss: Optional[float] = setting(None)  # stop once the step's loss is at or below this
    # stop once |f_old - f| / max(|f_old|, |f|, 1) < this, f_old the loss `window` steps earlier
    rel_loss: Optional[float] = setting(None, gt=0)
    window: int = setting(10, ge=1)  # steps between the two losses rel_loss compares
    grad_norm: Optional[float] = setting(None, gt=0)  # stop once the step's gradient norm is below this
    step: Optional[float] = setting(None, gt=0)  # stop once no parameter element moved by this much


@dataclass
class TrainerConfig:
    """``trainer.*``: how the loop runs, whatever the components."""

    max_steps: Optional[int] = setting(1000, ge=1)  # one step = one optimizer update
    max_epochs: Optional[int] = setting(None, ge=1)  # one epoch = one pass over the data in batches
    # seeds python, numpy and torch before data and model are built (numpy takes 32 bits)
    seed: int = setting(0, ge=0, le=2**32 - 1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float64: parameters and data
    log_every: int = setting(10, ge=1)  # log metrics at step 1, every N steps and at the last step
    grad_clip: Optional[float] = setting(None, gt=0)  # clip the gradient norm to this value
    freeze: List[str] = field(default_factory=list)  # fnmatch patterns of parameter names
    tolerance: Optional[float] = setting(None, ge=0)  # the older name of tol.loss
    tol: TolConfig = field(default_factory=TolConfig)
    # stop after this many seconds of training, counted over resumes
    max_time: Optional[float] = setting(None, gt=0)
    param_log_limit: int = setting(4096, ge=0)  # log values of models with at most this many numbers
    # also save a checkpoint every N steps (always at the end)
    checkpoint_every: Optional[int] = setting(None, ge=1)
    keep_checkpoints: Optional[int] = setting(3, ge=1)  # newest checkpoints kept; null: all
    resume: Optional[str] = None  # a checkpoint file, or a run folder (its latest checkpoint)
    init_from: Optional[str] = None  # model weights only: a run folder, checkpoint or .safetensors
    # log val/loss at step 1, every N steps and at the last step (each such step is a logging
    # step); null: at every logging step. Needs a validation set (data.val_fraction).
    val_every: Optional[int] = setting(None, ge=1)
    # before the first step, report the problem's conditioning and warn when SGD's rate exceeds 2/L
    doctor: bool = True
    # 32 | bf16 | 16-mixed: the forward pass and loss in trainer.dtype, under bfloat16 autocast, or
    # under float16 autocast with a gradient scaler; parameters stay in trainer.dtype
    # (framework/precision.py)
    precision: str = "32"
    # reproducible CUDA runs: torch.use_deterministic_algorithms(True), CUBLAS_WORKSPACE_CONFIG=:4096:8
    # when unset, cudnn.benchmark off (framework/devices.py); false changes nothing
    deterministic: bool = False
    # auto | ddp | single. ddp: data-parallel over the processes torchrun starts (it exports
    # WORLD_SIZE, RANK, ...; README "Scaling out"); auto: ddp when such a launch started more
    # than one process, else single; single: one process, whatever the environment says
    strategy: str = "auto"


def loss_tolerance(trainer: TrainerConfig) -> float | None:
    """``trainer.tol.loss``, or its older name ``trainer.tolerance``; both set differently is refused."""
    tol, alias = trainer.tol.loss, trainer.tolerance
    if tol is not None and alias is not None and tol != alias:
        raise ConfigError(f"trainer.tolerance={alias!r} and trainer.tol.loss={tol!r} are both set: "
                          "trainer.tolerance is the older name of trainer.tol.loss; set only trainer.tol.loss")
    return alias if tol is None else tol


@dataclass
class DataConfig:
    """Settings every data component has (its own config dataclass inherits this)."""

    batch_size: Optional[int] = setting(None, ge=1)  # rows per step; null: the full batch every step
    shuffle: bool = False  # draw minibatches in a new random order every epoch
    # hold out this fraction of the rows (rounded up) as a validation set, chosen at random
    # from trainer.seed; null or 0: no split (framework/data.py: split_off_validation)
    val_fraction: Optional[float] = setting(None, ge=0, lt=1)
    # train on feature columns scaled to zero mean and unit variance; parameters are reported in
    # the data's units (framework/standardize.py)
    standardize: bool = False


@dataclass
class FrameworkConfig:
    """The root of the composed config (the groups are filled by the component entries)."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    logger: Dict[str, Any] = field(default_factory=dict)
    callback: Dict[str, Any] = field(default_factory=dict)


def unknown_keys(node: Any, path: str = "") -> list[tuple[str, list[str]]]:
    """[(key, the settings that exist beside it)] for keys no schema declares.

    Hydra lets ``+model.lrr=0.01`` append a key even to a typed node, where it would be ignored
    without a word; the run refuses it instead.
    """
    if not isinstance(node, DictConfig):
        return []
    found = []
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        where = f"{path}.{key}" if path else str(key)
        if declared is not None and key not in declared:
            found.append((where, sorted(declared)))
        elif not OmegaConf.is_missing(node, key):
            found.extend(unknown_keys(child_config(node, key), where))
    return found


def null_group_overrides(args: list[str]) -> list[str]:
    """``logger=null`` chooses no logger, as ``logger=[]`` does; ``model=null`` (any other kind)
    is refused by name. Hydra itself accepts only a name or a list for a group and fails on null
    with an unexplained ValueError."""
    rewritten = []
    for arg in args:
        kind, equals, value = arg.partition("=")
        if equals and kind in KINDS and value.strip().lower() == "null":
            if kind not in PER_FIT_KINDS:
                constant = " (scheduler=none keeps the learning rate constant)" if kind == "scheduler" else ""
                raise ConfigError(f"{arg} chooses no {kind}, but a run needs one; choose one with {kind}=NAME "
                                  f"(python -m framework --help lists them){constant}")
            arg = f"{kind}=[]"
        rewritten.append(arg)
    return rewritten


def named_schema(config_cls: type, name: str) -> type:
    """The component's dataclass with a ``name`` field fixed to the component's name."""
    return dataclasses.make_dataclass(
        config_cls.__name__,
        [("name", str, field(default=name))],
        bases=(config_cls,),
    )


def store_configs(registry: Registry, store: ConfigStore | None = None) -> None:
    """Put the root schema and every registered component into the ConfigStore.

    Groups of our kinds are emptied first, so what is selectable is exactly what the registry
    holds (the store is a process-wide singleton, and tests build several registries).
    """
    store = store or ConfigStore.instance()
    for kind in KINDS:
        store.repo.pop(kind, None)
    store.store(name=SCHEMA_NAME, node=FrameworkConfig)
    for component in registry:
        # Loggers are chosen several at a time (logger=[console,tensorboard]); each keeps its
        # own node under logger.<name>.
        package = f"{component.kind}.{component.name}" if component.kind in PER_FIT_KINDS else component.kind
        store.store(
            group=component.kind,
            name=component.name,
            node=named_schema(component.config, component.name),
            package=package,
        )
