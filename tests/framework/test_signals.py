"""A Ctrl-C or SIGTERM during a run's set-up interrupts it even where a library's code swallows
the KeyboardInterrupt it raised: the fit that follows stops at once, saved and resumable.
tests/cli/test_interrupts.py sends real signals to real processes at moments of start-up."""

from __future__ import annotations

import json
import os
import signal

import pytest

from framework import signals


@pytest.fixture
def set_up_handlers():
    """SIGINT and SIGTERM as the command line sets them after start-up; restored after."""
    previous = {signum: signal.signal(signum, signals.raise_interrupted) for signum in signals.STOP_SIGNALS}
    signals.RAISED_BEFORE_A_FIT.clear()
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    signals.RAISED_BEFORE_A_FIT.clear()


def swallowed(signum: int) -> None:
    """A signal delivered inside code that catches everything (``except BaseException: pass``)."""
    try:
        os.kill(os.getpid(), signum)
        signal.sigtimedwait([], 0)  # nothing to wait for: the handler has run by the next bytecode
    except BaseException:  # noqa: BLE001 - what such a library does
        pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_swallowed_during_set_up_stops_the_fit_at_once(set_up_handlers, train, tmp_path, signum):
    swallowed(signum)
    assert signals.RAISED_BEFORE_A_FIT == [signum]
    with pytest.raises(signals.Interrupted) as stopped:
        train(["+task=linear", "trainer.max_steps=200", "logger=[]"], run_dir=tmp_path)
    assert stopped.value.exit_code == 128 + signum
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted" and result["stop_reason"] == signal.Signals(signum).name, result
    assert result["steps"] < 200 and (tmp_path / "checkpoints").is_dir()
    assert signals.RAISED_BEFORE_A_FIT == []  # acted on once: the next fit runs


def test_without_a_signal_the_fit_runs_to_its_end(set_up_handlers, train, tmp_path):
    result = train(["+task=linear", "trainer.max_steps=20", "logger=[]"], run_dir=tmp_path)
    assert result["status"] == "completed" and result["steps"] == 20


def made_into_an_error(signum: int, *, how: str) -> Exception:
    """What a library's code makes of a signal delivered inside it: an error of its own raised
    from the interrupt (``cause``), while handling it (``context``), or after swallowing it."""
    try:
        try:
            os.kill(os.getpid(), signum)
            signal.sigtimedwait([], 0)
        except KeyboardInterrupt as interrupt:
            if how == "cause":
                raise RuntimeError("Error calling __set_name__ on 'Field' instance") from interrupt
            if how == "context":
                raise ValueError("a half-built node")
        raise ValueError("an error after the interrupt was swallowed")
    except Exception as error:  # noqa: BLE001 - the error the command line would see
        return error


@pytest.mark.parametrize("how", ["cause", "context"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_signal_behind_a_library_error_is_found(set_up_handlers, signum, how):
    error = made_into_an_error(signum, how=how)
    assert signals.interrupt_behind(error) == signum
    with pytest.raises(signals.Interrupted) as raised, signals.interrupts_as_raised():
        raise error
    assert raised.value.signal == signum and raised.value.__cause__ is error


def test_an_error_after_a_swallowed_signal_is_that_error(set_up_handlers):
    """The next fit stops at once for it (above); the error itself is no interruption."""
    error = made_into_an_error(signal.SIGINT, how="swallowed")
    assert signals.interrupt_behind(error) is None
    with pytest.raises(ValueError), signals.interrupts_as_raised():
        raise error


def test_an_error_raised_while_a_script_handles_its_own_ctrl_c_is_that_error():
    """A KeyboardInterrupt that Python's handler raised (no framework handler installed, as in a
    script calling framework.train) is the script's: an error raised while handling it is no
    interruption, nor is an Interrupted the framework raised after a fit stopped."""
    for interrupt in (KeyboardInterrupt(), signals.Interrupted(signal.SIGINT, "interrupted at step 3")):
        try:
            try:
                raise interrupt
            except KeyboardInterrupt:
                raise ValueError("trainer.strategy='bogus' is not a strategy")
        except ValueError as error:
            assert signals.interrupt_behind(error) is None


def test_an_error_no_signal_caused_has_no_signal_behind_it():
    try:
        raise RuntimeError("outer") from ValueError("inner")
    except RuntimeError as error:
        assert signals.interrupt_behind(error) is None
