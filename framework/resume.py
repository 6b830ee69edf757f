"""Going on from a checkpoint (``trainer.resume``) or starting from saved weights
(``trainer.init_from``), and the command that resumes an interrupted run.

A resumed run continues the run it comes from, in that run's folder: its checkpoints, its
TensorBoard curve (one curve, the steps logged after the checkpoint replaced), its log and its
result.json. Hydra's snapshot of the resumed command goes to ``.hydra/resume_<time>/`` beside the
original, which is kept.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from framework.checkpoints import (
    CHECKPOINT_DIR,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    refuse_weights_file,
    restore_host_state,
)
from framework.errors import ConfigError
from framework.outputs import RESULT_FILE
from framework.overrides import hydra_value, last_override_index, override_key
from framework.plugin_manager import PluginManager, call_each
from framework.state import BuiltRun, LoopState
from framework.weights import WEIGHTS_FILE, load_model_weights, read_weights

log = logging.getLogger(__name__)

RESUME_KEY = "trainer.resume"
# The settings that name a run folder or a file of one: where a run starts from.
FOLDER_KEYS = (RESUME_KEY, "trainer.init_from")
# Settings a resumed run may change: how long it runs, what it logs and saves, where it runs.
# Everything else must equal the checkpoint's, or the run would not be the one it continues.
MAY_CHANGE = (
    "trainer.max_steps", "trainer.max_epochs", "trainer.log_every", "trainer.checkpoint_every",
    "trainer.keep_checkpoints", "trainer.resume", "trainer.init_from", "trainer.device",
    "trainer.tolerance", "trainer.tol", "trainer.max_time", "trainer.val_every", "trainer.param_log_limit",
    "trainer.doctor", "trainer.deterministic", "trainer.strategy",
    "logger",
)
# Settings added after checkpoints were first written, with the value every run had before: a
# checkpoint that lacks one was made with that value.
ADDED_SETTINGS = {"trainer.precision": "32"}
# The same for a setting added to one component, by (kind, name).
ADDED_COMPONENT_SETTINGS = {("model", "polynomial"): {"model.form": "terms"}}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer.lr': 0.01, ...} from nested plain containers."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def check_compatible(checkpoint: dict[str, Any], state: LoopState, path: Path) -> None:
    """Refuse a checkpoint of another task, other components or other settings, naming them."""
    run = state.run
    if checkpoint["task"] != run.task:
        raise ConfigError(f"{path} is a checkpoint of task {checkpoint['task']}, not of {run.task}; "
                          f"resume it with +task={checkpoint['task']}")
    differ = [f"{kind} {saved} there, {run.components.get(kind)} here"
              for kind, saved in checkpoint["components"].items() if run.components.get(kind) != saved]
    if differ:
        raise ConfigError(f"{path} was made with other components: {'; '.join(differ)}")
    added = dict(ADDED_SETTINGS)
    for kind, name in checkpoint["components"].items():
        added.update(ADDED_COMPONENT_SETTINGS.get((kind, name), {}))
    saved, current = {**added, **flatten(checkpoint["config"])}, flatten(run.config)
    changed = [key for key in sorted(set(saved) | set(current))
               if saved.get(key) != current.get(key) and not key.startswith(MAY_CHANGE)]
    if changed:
        listed = ", ".join(f"{key}={saved.get(key)!r} there but {current.get(key)!r} here" for key in changed)
        free = [key for key in MAY_CHANGE if key not in FOLDER_KEYS]
        raise ConfigError(
            f"{path} was made with other settings: {listed}. A resumed run keeps the checkpoint's "
            f"settings (only {', '.join(free)} may change); to start a new run from its "
            f"weights, use trainer.init_from={path}"
        )


def load_optimizer_state(optimizer: Any, saved: dict[str, Any], path: Path) -> None:
    """The checkpoint's optimizer state, or a ConfigError saying why it does not fit: a
    checkpoint written before the optimizer got one flat tensor for a small model's parameters
    (framework/flat_parameters.py) numbers them one by one."""
    saved_sizes = [len(group["params"]) for group in saved.get("param_groups", [])]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise ConfigError(
            f"{path}: its optimizer state holds {sum(saved_sizes)} tensor(s) in {len(saved_sizes)} group(s), but this "
            f"run's optimizer updates {sum(sizes)} in {len(sizes)} (a checkpoint written by an earlier version of "
            "the framework, which gave the optimizer a small model's parameters one by one, not as one flat "
            f"tensor). Resume it with that version, or start a new run from its weights with "
            f"trainer.init_from={path}"
        )
    optimizer.load_state_dict(saved)


def load_scaler_state(run: BuiltRun, checkpoint: dict[str, Any], path: Path) -> None:
    """16-mixed's gradient scaler goes on with the saved scale and its count of steps since the
    last skipped one, so the resumed run scales, skips and grows as the uninterrupted one."""
    scaler = None if run.precision is None else run.precision.scaler
    if scaler is None:
        return
    saved = checkpoint.get("scaler")
    if not saved:  # check_compatible has compared trainer.precision: only a damaged file lacks it
        raise ConfigError(f"{path} holds no gradient scaler state, but this trainer.precision=16-mixed run needs it")
    scaler.load_state_dict(saved)


def resume_from(state: LoopState, where: str, manager: PluginManager) -> Path:
    """Load everything a checkpoint holds into the built run, the progress and the plugins."""
    path = find_checkpoint(where, RESUME_KEY)
    checkpoint = load_checkpoint(path)
    check_compatible(checkpoint, state, path)
    run = state.run
    load_model_weights(run.model, checkpoint["model"], str(path))
    load_optimizer_state(run.optimizer, checkpoint["optimizer"], path)
    restore_host_state(run.optimizer, checkpoint.get("optimizer_host_state", []))
    if run.scheduler is not None:
        run.scheduler.load_state_dict(checkpoint["scheduler"])
    load_scaler_state(run, checkpoint, path)
    state.progress.load_state_dict(checkpoint["progress"])
    if state.progress.step >= run.max_steps:
        log.warning("the checkpoint is at step %d, which trainer.max_steps=%s (or max_epochs) has reached: "
                    "nothing is left to train; raise it to go on", state.progress.step, run.trainer.max_steps)
    for name, saved in checkpoint["plugins"].items():
        if not call_each(manager, "framework_load_state_dict", only=[name], state=state, state_dict=saved):
            log.warning("%s holds a state of plugin %r, which this run does not have; it is ignored", path, name)
    log.info("resumed from %s at step %d", path, state.progress.step)
    return path


def initial_weights(where: str) -> tuple[dict[str, Any], str]:
    """(weights, where they came from) for ``trainer.init_from``: a run folder (its
    model.safetensors, else its latest checkpoint), a .safetensors file or a checkpoint."""
    path = Path(where).expanduser()
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        path = path / WEIGHTS_FILE
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"trainer.init_from={where}: no such file")
        return read_weights(path)[0], str(path)
    path = find_checkpoint(path, "trainer.init_from")
    return load_checkpoint(path)["model"], str(path)


def warm_start(state: LoopState, where: str) -> None:
    """Load only the model's weights; the optimizer, scheduler and progress start afresh."""
    weights, source = initial_weights(where)
    load_model_weights(state.run.model, weights, source)
    log.info("model weights loaded from %s", source)


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def override_value(args: list[str], key: str) -> str | None:
    """The string ``args`` give ``key`` (with or without ``+``/``++``), or None."""
    parser = OverridesParser.create()
    for arg in args:
        if override_key(arg) == key and "=" in arg:
            try:
                value = parser.parse_override(arg).value()
            except Exception:  # Hydra itself reports a malformed override
                return None
            return value if isinstance(value, str) else None
    return None


def run_folder_of(where: str) -> Path | None:
    """The run folder a checkpoint belongs to: the folder itself, or <run>/checkpoints/<file>'s run."""
    path = Path(where).expanduser()
    if path.is_dir():
        return path
    if path.parent.name == CHECKPOINT_DIR:
        return path.parent.parent
    return None


def holds_a_trained_run(folder: Path) -> bool:
    """Whether a run that took steps has written into ``folder`` (a refused run has not)."""
    if latest_checkpoint(folder) is not None:
        return True
    try:
        return json.loads((folder / RESULT_FILE).read_text()).get("steps", 0) > 0
    except (OSError, ValueError, AttributeError):
        return False


def quoted_folder_overrides(args: list[str]) -> list[str]:
    """``trainer.resume=`` and ``trainer.init_from=`` naming an existing folder or file whose
    name Hydra would read as syntax, quoted for Hydra: a sweep job's folder is named after its
    overrides (``optimizer.lr=0.01,trainer.seed=1``), and typed as it is listed it would not
    parse. Other values are left for Hydra to read (or refuse) as written."""
    quoted = []
    for arg in args:
        key, equals, value = arg.partition("=")
        if (equals and override_key(arg) in FOLDER_KEYS and value[:1] not in ("'", '"')
                and hydra_value(value) != value and os.path.exists(os.path.expanduser(value))):
            arg = f"{key}={hydra_value(value)}"
        quoted.append(arg)
    return quoted


def run_folder_overrides(args: list[str]) -> list[str]:
    """Where a run writes, decided before Hydra writes anything there.

    A single run given ``trainer.resume`` writes into the run folder it resumes (unless
    ``hydra.run.dir`` says otherwise), keeping that folder's original Hydra snapshot, and takes
    that run's own overrides for the keys not given (:func:`own_overrides`). A new run
    never writes into a folder that holds a trained run (it would overwrite its record and
    double its curves); a sweep resumes no job (each job's log has its own resume command).
    """
    args = quoted_folder_overrides(args)
    where = override_value(args, RESUME_KEY)
    if any(arg in ("-m", "--multirun") for arg in args):
        if where is not None:
            raise ConfigError(f"{RESUME_KEY} resumes one run, not a sweep: resume each interrupted job "
                              "with the command its log ends with")
        return args
    chosen = override_value(args, "hydra.run.dir")
    if where is None:
        if chosen is not None and holds_a_trained_run(Path(chosen)):
            raise ConfigError(
                f"hydra.run.dir={chosen} already holds a run; resume it with {RESUME_KEY}={chosen}, "
                "or choose another folder"
            )
        return args
    refuse_weights_file(RESUME_KEY, where)  # before Hydra makes a run folder for it
    resumed = run_folder_of(where)
    extra = [] if resumed is None else own_overrides(resumed, given=args)
    folder = Path(chosen) if chosen is not None else resumed
    if folder is not None and holds_a_trained_run(folder):  # else a new folder: Hydra's own, or the one named
        if chosen is None:
            extra.append(f"hydra.run.dir={hydra_value(str(folder.resolve()))}")
        if not any(arg.startswith("hydra.output_subdir=") for arg in args):
            extra.append("hydra.output_subdir=.hydra/resume_${now:%Y-%m-%d_%H-%M-%S}")
    # After the last override given: options after it (--cfg job) keep their place.
    end = last_override_index(args) + 1
    return [*args[:end], *extra, *args[end:]]


def own_overrides(run_dir: Path, given: list[str]) -> list[str]:
    """The overrides of the command that wrote the run's latest checkpoint (:func:`overrides_file`)
    that ``given`` does not set: ``trainer.resume=RUN`` alone resumes the run as its own command
    would, and any override given again, or added, goes on top. A key given also drops the saved
    ones under it (``logger=[]`` drops ``logger.console.lines=2``). Not taken: how the run started
    (``trainer.resume``, ``trainer.init_from``: the checkpoint holds what came of it), and
    ``hydra.*`` (where it writes: the resume decides)."""
    import yaml

    try:
        saved = yaml.safe_load(overrides_file(run_dir).read_text())
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(saved, list):
        return []
    keys = {override_key(arg) for arg in given if not arg.startswith("-")}
    taken = []
    for item in map(str, saved):
        key = override_key(item)
        covered = key in keys or any(key.startswith(given_key + ".") for given_key in keys)
        if not covered and key not in FOLDER_KEYS and not key.startswith("hydra."):
            taken.append(item)
    return taken


def overrides_file(run_dir: Path) -> Path:
    """The overrides of the command that wrote the run's latest checkpoint: the newest snapshot
    of a resume (``.hydra/resume_<time>/``) made before that checkpoint, else the run's own
    (``.hydra/``). A resume that was refused left a snapshot and no checkpoint: not taken."""
    original = run_dir / ".hydra" / "overrides.yaml"
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return original
    written = latest.stat().st_mtime
    made = [(path.stat().st_mtime, path) for path in run_dir.glob(".hydra/resume_*/overrides.yaml")]
    before = [path for when, path in sorted(made) if when <= written]
    return before[-1] if before else original


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The exact command that resumes the run in ``run_dir`` (an interrupted one)."""
    folder = os.path.relpath(run_dir)
    if folder.startswith(".."):
        folder = str(run_dir)
    kept = [item for item in overrides if not item.startswith((RESUME_KEY + "=", "hydra."))]
    words = ["python", "-m", "framework", *kept, f"{RESUME_KEY}={hydra_value(folder)}"]
    return " ".join(shlex.quote(word) for word in words)
