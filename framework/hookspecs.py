"""Every hook the framework calls, in the order it calls them. The docstrings are the contract.

All arguments are keyword-only and opt-in: an implementation names only the arguments it uses, so
arguments can be added later without breaking anyone. Arguments are never renamed.

Call order for one run::

    framework_components            (once per plugin manager, fills the registry)
    framework_autograd_functions    (only by the gradcheck helper)
    framework_fit_plugins           (once per fit, after the build: per-fit plugin objects)
    framework_load_state_dict       (only when the fit resumes from a checkpoint)
    framework_configure_step        (once per fit, first non-None wins)
    framework_fit_start
    framework_step_end              (every step, only if some plugin implements it)
    framework_metrics               (at logging steps, only if some plugin implements it)
    framework_log                   (at logging steps)
    framework_state_dict            (at every checkpoint)
    framework_exception             (only when the fit fails or is interrupted)
    framework_result                (always, before result.json is written)
    framework_fit_end               (always, last)

The ``state`` every fit hook receives is a :class:`framework.LoopState`:

- ``state.run`` (:class:`framework.BuiltRun`): the components and settings, built once and never
  replaced: ``model``, ``loss_fn``, ``optimizer``, ``scheduler``, ``data``, ``trainable``
  (the parameters being trained, by name), ``trainer`` (the ``trainer.*`` settings), ``device``,
  ``dtype``, ``max_steps``, ``task``, ``run_dir``, ``components`` (kind -> chosen name),
  ``config`` (the composed config as plain containers) and ``precision``
  (:class:`framework.precision.MixedPrecision` for ``trainer.precision`` bf16 or 16-mixed, None
  for 32).
- ``state.progress`` (:class:`framework.Progress`): where the loop is: ``step`` (optimizer
  updates done), ``epoch``, ``batch_index``, ``last_loss`` and ``stop``, the stop request. Any
  plugin may call ``state.progress.stop.request(reason)``; the loop finishes the current step
  and ends the run cleanly (checkpoint, loggers' end, result.json with ``stop_reason``).

A plugin whose hook raises (``SystemExit`` included) fails the run with a
:class:`framework.PluginError` that names the plugin, the hook and the components being
trained; a :class:`framework.FrameworkError` it raises is its own message to the user and is
kept as it is. ``framework_exception`` and ``framework_fit_end`` are called implementation by
implementation: one that fails does not keep the others from running (so these two take no
``hookwrapper``/``wrapper`` implementations; such a wrapper is not called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from framework.markers import hookspec

if TYPE_CHECKING:
    import torch

    from framework.registry import AutogradCheck, Component
    from framework.state import LoopState


# --------------------------------------------------------------------------------------------
# Registration: what a plugin contributes
# --------------------------------------------------------------------------------------------


@hookspec
def framework_components() -> list[Component]:
    """Contribute components: models, losses, optimizers, schedulers, data sources, loggers.

    Called once per plugin manager, after every plugin is registered, for each plugin in turn.

    Return a list of :class:`framework.Component`, each naming its ``kind`` (one of
    ``framework.KINDS``), its ``name`` (what users type, e.g. ``model=polynomial``), its
    ``factory`` and its ``config`` dataclass. The dataclass's fields and defaults are the
    component's settings; they are stored in Hydra's ConfigStore under group = kind and
    name = name, so ``model=polynomial model.degree=3`` selects and validates them.

    Every int or float field (and list of them) should declare its valid range with
    ``framework.setting(default, gt=, ge=, lt=, le=)`` or a :class:`framework.Range` in the
    field's metadata under ``"range"``. Each run checks the composed config against these
    ranges before any work, naming the key, the value and the range (ConfigError, exit 2);
    NaN and infinity are refused unless the range allows them, null is "off" for an Optional
    field. ``framework.undeclared_ranges(config)`` lists the numbers declaring none.

    Results are collected from every plugin. Two components with the same kind and name are an
    error that names both providers. Factories are called as follows (keyword arguments):

    - data: ``factory(config, dtype=torch.dtype)`` returns :class:`framework.Dataset`, optionally
      with its own held-out ``validation`` Dataset (then ``data.val_fraction`` must stay null).
    - model: ``factory(config, data=Dataset)`` returns a ``torch.nn.Module`` whose
      ``forward(features)`` gives predictions shaped like ``data.targets``. Build it from the
      data's shapes only: ``framework.load_run`` rebuilds a trained model with a Dataset of
      zero rows (the same column counts) and then loads its weights.
    - loss: ``factory(config)`` returns ``loss(predictions, targets) -> scalar tensor``.
    - optimizer: ``factory(config, params=list)`` returns a ``torch.optim.Optimizer``.
    - scheduler: ``factory(config, optimizer=Optimizer, max_steps=int)`` returns an object
      with ``step()`` (called after every optimizer step) or ``None`` for a constant rate.
    - logger: ``factory(config, run_dir=pathlib.Path | None, run_config=DictConfig,
      run_overrides=list[str])`` returns an object implementing any of the lifecycle hooks
      below; it is registered as a plugin for the length of one fit, then unregistered.
      ``run_overrides`` are the job's command-line overrides (``["optimizer=adam", ...]``).
    """


@hookspec
def framework_autograd_functions() -> list[AutogradCheck]:
    """Declare the custom ``torch.autograd.Function`` classes this plugin contributes.

    Called only by the gradcheck helper (``python -m framework.gradcheck`` and
    :func:`framework.gradcheck.check_all`), never during training. Return a list of
    :class:`framework.AutogradCheck` (a name, the Function, and a callable making
    double-precision example inputs). Results are collected from every plugin.
    """


# --------------------------------------------------------------------------------------------
# The fit: from start to end
# --------------------------------------------------------------------------------------------


@hookspec
def framework_fit_plugins(state: LoopState) -> list[object]:
    """Return plugin objects to take part in this fit only, e.g. a stop rule a setting turns on.

    Called once per fit, after the build and before any other fit hook, with ``state.progress``
    at step 0 (a resumed fit's progress is loaded after this). Results are collected from every
    plugin; each object is registered as a plugin named ``<plugin>.<ClassName>`` for the length
    of the fit, then unregistered. Return an empty list when the plugin has nothing to add:
    a hook no object implements is never called, so a feature that is off costs nothing.
    """


@hookspec
def framework_load_state_dict(state: LoopState, state_dict: dict[str, Any]) -> None:
    """Take back the state this plugin gave to the checkpoint a fit resumes from.

    Called once when a fit resumes, after ``framework_fit_plugins`` and after the model,
    optimizer, scheduler and progress are loaded, before ``framework_configure_step``; only for
    plugins whose name has a saved state in the checkpoint. ``state_dict`` is what this
    plugin's ``framework_state_dict`` returned. Results are ignored.
    """


@hookspec(firstresult=True)
def framework_configure_step(state: LoopState) -> Callable[[Any, Any], torch.Tensor] | None:
    """Return the function that performs one optimizer step.

    Called once at the start of each fit, before ``framework_fit_start``, with the built
    ``state`` (``state.run``: model, loss function, optimizer and trainer settings). The first
    non-None result
    is used; the built-in ``default_step`` plugin is ``trylast`` and steps aside for any other.

    The returned ``step(features, targets)`` must zero the gradients, run forward, the loss and
    backward inside a closure passed to ``optimizer.step(closure)`` (so closure optimizers such as
    LBFGS work), and return the loss computed in that step's first forward pass, as a tensor,
    without synchronising with the device. If it clips gradients it sets
    ``state.progress.grad_norm`` to the norm before clipping. When ``state.run.precision`` is not
    None it runs the forward pass and the loss under ``precision.autocast()`` and, when
    ``precision.scaler`` is set (16-mixed), backpropagates the scaled loss, unscales the gradients
    before clipping, and updates through ``scaler.step(optimizer)`` and ``scaler.update()``
    (without a closure: 16-mixed refuses optimizers that need one). It is called on every step:
    keep it lean.

    Under DDP (``trainer.strategy``, framework/distributed.py) ``state.run.model`` here is the
    ``DistributedDataParallel`` wrapper of the model (its forward prepares the gradients'
    all-reduce) and ``state.run.loss_fn`` the loss whose value the all-reduce carries; ``step`` is
    given this rank's block of each global batch. Every other hook sees the bare model.
    """


@hookspec
def framework_fit_start(state: LoopState) -> None:
    """The fit is about to take its first step.

    Called once, after the model, data, optimizer and step function are built and the initial
    parameters are in place. ``state.progress.step`` is 0, or the checkpoint's step when the
    fit resumes. Implementations may read anything on ``state``; they must not replace the
    model, optimizer or data. Results are ignored.
    """


@hookspec
def framework_step_end(state: LoopState, loss: torch.Tensor) -> None:
    """One optimizer step has finished.

    Called after every step, after the scheduler has stepped and before the loss is checked
    for NaN (so also for the step whose loss is not finite), only if some plugin implements this
    hook (the loop skips it otherwise, so an unused hook costs nothing).
    ``state.progress.step`` is the
    number of steps done; ``loss`` is the step's loss as a device tensor: reading it
    (``.item()``) forces a device synchronisation, so prefer ``framework_log``. Results are
    ignored.
    """


@hookspec
def framework_metrics(state: LoopState, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
    """Add metrics to a logging step, before any ``framework_log`` sees them.

    Called at every logging step, before ``framework_log``, only if some plugin implements it.
    ``state`` is the fit's state at the end of ``step``; ``metrics`` holds what the loop measured
    (``train/loss``, ``train/lr``, ``train/grad_norm``);
    implementations must not mutate it. Return a dict of TensorBoard tag -> plain float (e.g.
    ``{"val/loss": 0.12}``), or None for nothing at this ``step``. Results are merged into the
    metrics every ``framework_log`` receives; a tag the loop or another
    plugin already gives is refused (a :class:`framework.PluginError`).
    """


@hookspec
def framework_log(state: LoopState, step: int, metrics: dict[str, float]) -> None:
    """Metrics are ready at a logging step.

    Called at step 1, every ``trainer.log_every`` steps, every ``trainer.val_every`` steps (when
    it is set), at the last step and at the step where a stop request ends the run (a stop rule:
    ``trainer.tol.*``, ``trainer.max_time``, a callback; not an interruption, which is resumed),
    only if some plugin implements this hook (the metrics are not computed otherwise). ``step``
    is the step number (one step = one optimizer
    update); ``metrics`` maps TensorBoard tags to plain floats: ``train/loss`` (the loss of that
    step's forward pass, before its update), ``train/lr`` and ``train/grad_norm``, and what
    plugins add through ``framework_metrics`` (``val/loss`` at validation steps). Parameter values are read from
    ``state.run.model``.
    Implementations must not mutate ``metrics``. Results are ignored.
    """


@hookspec
def framework_state_dict(state: LoopState) -> dict[str, Any] | None:
    """This plugin's own state, to be saved in a checkpoint (e.g. a logger's loss history).

    Called at every checkpoint, for each plugin that implements it. A logger that buffers
    should flush here, so that what it logged up to the checkpoint survives a kill. Return
    tensors and plain
    containers only (dicts, lists, tuples, numbers, strings, None): checkpoints load with
    ``torch.load(weights_only=True)``. Return None to save nothing. Each plugin's result is
    kept under its plugin name (``logger.tensorboard`` for a logger) and given back to the
    plugin of the same name by ``framework_load_state_dict``.
    """


@hookspec
def framework_exception(state: LoopState, error: BaseException) -> None:
    """The fit failed or was interrupted.

    Called once, with ``state`` as it was when the fit stopped and the exception as ``error``
    (a :class:`framework.errors.FrameworkError`, a ``KeyboardInterrupt`` or any other exception),
    before ``framework_fit_end``. The exception is always re-raised afterwards: returning does
    not swallow it (an exception the implementation raises itself propagates instead, chained
    to the original). Results are ignored.
    """


@hookspec
def framework_result(state: LoopState, result: dict[str, Any]) -> dict[str, Any] | None:
    """Add fields to ``result.json``: e.g. ``final_val_loss``, ``optimal_loss``, ``optimality_gap``.

    Called once per fit (one that failed or was interrupted too), with the final ``state``, after
    ``framework_exception`` and before ``result.json`` is written and ``framework_fit_end`` is
    called. ``result`` holds the fields the loop wrote; implementations must not mutate it. Return a dict of field -> plain JSON
    value (numbers, strings, lists, None), or None. Results are merged into the result; a
    field the loop owns (``task``, ``status``, ``steps``, ``final_loss``, ``params``,
    ``wall_s``, ``device``, ``stop_reason``, ``error``) cannot be replaced.
    """


@hookspec
def framework_fit_end(state: LoopState, result: dict[str, Any]) -> None:
    """The fit is over, whether it completed, failed or was interrupted.

    Called exactly once per fit, last, with the final ``state``. ``result`` holds what
    ``result.json`` (already written when a run folder exists) holds
    (``task``, ``status``, ``steps``, ``final_loss``, ``params``, ``wall_s``, ``device``,
    ``stop_reason``, ``error``). Loggers flush and close here. Implementations must not mutate
    ``result``. Results are ignored. Every implementation is called even when another raised;
    the first failure marks the run failed (``result`` says so to the implementations called
    after it, and result.json is rewritten), and the run exits non-zero.
    """
