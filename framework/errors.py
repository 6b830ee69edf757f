"""The errors the framework reports to users.

Each is a user-facing, one-paragraph message: the CLI prints ``str(error)`` and exits non-zero,
without a traceback unless HYDRA_FULL_ERROR=1 asks for one.
"""

from __future__ import annotations

# What a Ctrl-C before any run started prints (framework/__main__.py while torch and Hydra
# import, framework/cli.py until the first job's task function runs).
STARTUP_INTERRUPTED = "interrupted during start-up; nothing was run"


def user_message(error: BaseException) -> str:
    """The one paragraph a user is shown for ``error`` (and result.json's ``error``)."""
    if isinstance(error, FrameworkError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


class FrameworkError(Exception):
    """Base of every error whose message is meant for the user as it stands."""

    exit_code = 1


class ConfigError(FrameworkError):
    """The composed configuration asks for something that cannot be built."""

    exit_code = 2


class DataError(FrameworkError):
    """The training data is missing, malformed or unusable."""

    exit_code = 3


class PluginError(FrameworkError):
    """A plugin failed to import, register or run; the message names the plugin."""

    exit_code = 4


class TrainingError(FrameworkError):
    """The loop could not go on (for example a loss that is not a finite number)."""

    exit_code = 5


class OutputError(FrameworkError):
    """A file of the run could not be written: a full disk, a quota, an unwritable folder."""

    exit_code = 6

    def __init__(self, path, error: OSError, what: str = "") -> None:
        self.path = path
        reason = error.strerror or str(error)
        super().__init__(
            f"cannot write {what + ' ' if what else ''}{path}: {reason}. Nothing is left half written under "
            "a final name, and what was written before is kept; a run stops at the end of its step. Free "
            "some space (or choose a writable folder with hydra.run.dir), then resume or run again."
        )


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the run stops at that step."""

    def __init__(self, step: int, value: float, last_finite_loss: float | None, last_finite_step: int | None):
        self.step = step
        self.value = value
        self.last_finite_loss = last_finite_loss
        self.last_finite_step = last_finite_step
        if last_finite_loss is None:
            before = "no step before it had a finite loss"
        else:
            before = f"the last finite loss was {last_finite_loss:.6g} at step {last_finite_step}"
        super().__init__(
            f"training diverged: the loss is {value} at step {step} ({before}). "
            "The run stopped there; what was logged up to that step is kept. "
            "Try a smaller optimizer.lr, gradient clipping (trainer.grad_clip=1.0) or another optimizer."
        )
