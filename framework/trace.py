"""``FRAMEWORK_TRACE=1``: which plugin implements each hook, in call order, and how long each
implementation took. It is how a user finds the plugin that slows their loop.

A fit (:func:`framework.run.run_training`, which the command line, each job of a sweep and
``framework.train`` all go through) opens a :class:`HookTrace` once its plugins, per-fit ones
included, are registered: it prints the hooks and their implementers on stderr and puts a timer
around every implementation. When the fit ends it prints the time spent in each implementation,
slowest first, and puts the plugins' own functions back.

pluggy's ``add_hookcall_monitoring`` times a whole hook call, and only the calls that go through
pluggy; the loop calls its closing hooks implementation by implementation
(:func:`framework.hook_calls.call_every`). So the timer goes around each implementation's
function (``HookImpl.function``), which both ways call. With the variable unset nothing is
wrapped and the loop runs the plugins' functions as they are.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from framework import hookspecs
from framework.markers import TRACE_ENV

# The attribute of a timing wrapper that holds the plugin's own function, so that
# framework.hook_calls.failed_plugin still finds the failing plugin by its code.
TRACED_FUNCTION = "__framework_traced__"

# The hooks in the order the framework calls them: the order they are defined in hookspecs.
HOOK_NAMES = tuple(name for name in vars(hookspecs) if name.startswith("framework_"))


# The clock the timers read (a test gives a fake one).
CLOCK = time.perf_counter


def trace_enabled(environ: dict[str, str] | None = None) -> bool:
    """FRAMEWORK_TRACE is set to anything but empty or 0."""
    return (os.environ if environ is None else environ).get(TRACE_ENV, "") not in ("", "0")


def plugin_function(impl: Any) -> Callable:
    """The plugin's own function of a hook implementation, under the trace's timer if it has one."""
    return getattr(impl.function, TRACED_FUNCTION, impl.function)


@dataclass
class Timing:
    """The calls of one hook implementation: how many, and the seconds they took in all."""

    hook: str
    plugin: str
    calls: int = 0
    total_s: float = 0.0

    @property
    def mean_s(self) -> float:
        return self.total_s / self.calls if self.calls else 0.0


def _timed(function: Callable, timing: Timing) -> Callable:
    """``function`` with its calls counted and timed into ``timing``."""
    clock = CLOCK

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            timing.total_s += clock() - started
            timing.calls += 1

    setattr(timed, TRACED_FUNCTION, function)
    return timed


def _timed_wrapper(function: Callable, timing: Timing) -> Callable:
    """A wrapper implementation (``wrapper=True`` or ``hookwrapper=True``, a generator function)
    timed while its own code runs, before its yield and after it, not while the implementations
    it wraps run. pluggy drives it with next(), send(), throw() and close(): each is passed on."""
    clock = CLOCK

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            inner = function(*args, **kwargs)
            sent = next(inner)
        except StopIteration as stop:  # no yield: pluggy says so when this one stops too
            return stop.value
        finally:
            timing.total_s += clock() - started
            timing.calls += 1
        while True:
            try:
                received = yield sent
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as error:  # a wrapped implementation failed: the wrapper sees it
                resume = functools.partial(inner.throw, error)
            else:
                resume = functools.partial(inner.send, received)
            started = clock()
            try:
                sent = resume()
            except StopIteration as stop:
                return stop.value
            finally:
                timing.total_s += clock() - started

    setattr(timed, TRACED_FUNCTION, function)
    return timed


class HookTrace:
    """The trace of one fit: :meth:`start` lists and wraps, :meth:`finish` reports and unwraps."""

    def __init__(self, manager: Any, label: str = "", stream: TextIO | None = None) -> None:
        self.manager = manager
        self.label = label
        self.stream = stream
        self.timings: list[Timing] = []
        self._wrapped: list[tuple[Any, Callable]] = []  # (HookImpl, the plugin's own function)

    def start(self) -> HookTrace:
        self._print(self.listing())
        for hook_name in HOOK_NAMES:
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                timing = Timing(hook_name, impl.plugin_name)
                self.timings.append(timing)
                self._wrapped.append((impl, impl.function))
                # A wrapper is a generator function: calling it only makes the generator.
                timer = _timed_wrapper if impl.hookwrapper or impl.wrapper else _timed
                impl.function = timer(impl.function, timing)
        return self

    def finish(self) -> None:
        """Print the timings and give every implementation its own function back (the manager
        may run another fit: the next job of a sweep)."""
        for impl, function in self._wrapped:
            impl.function = function
        self._wrapped.clear()
        self._print(self.report())

    def listing(self) -> str:
        """Every hook and its implementers in the order pluggy calls them, each with its distribution."""
        lines = [f"{TRACE_ENV}: hook implementations in call order{self._for()}"]
        for hook_name in HOOK_NAMES:
            impls = list(reversed(getattr(self.manager.hook, hook_name).get_hookimpls()))  # pluggy calls the last first
            if not impls:
                lines.append(f"  {hook_name}: none (not called)")
                continue
            lines.append(f"  {hook_name}:")
            width = max(len(impl.plugin_name) for impl in impls)
            for number, impl in enumerate(impls, 1):
                note = " (wrapper)" if impl.hookwrapper or impl.wrapper else ""
                lines.append(f"    {number:>2}. {impl.plugin_name:<{width}}  {self.manager.distribution(impl.plugin_name)}{note}")
        return "\n".join(lines)

    def report(self) -> str:
        """The time spent in each implementation that was called, slowest (in total) first."""
        called = sorted((t for t in self.timings if t.calls), key=lambda t: t.total_s, reverse=True)
        lines = [f"{TRACE_ENV}: time in each hook implementation, slowest first{self._for()}"]
        if not called:
            lines.append("  no hook implementation was called")
            return "\n".join(lines)
        hook_width = max(len(t.hook) for t in called)
        lines.append(f"  {'total ms':>10} {'calls':>8} {'mean µs':>10}  {'hook':<{hook_width}}  plugin (distribution)")
        for t in called:
            lines.append(f"  {t.total_s * 1e3:>10.3f} {t.calls:>8} {t.mean_s * 1e6:>10.1f}  {t.hook:<{hook_width}}  "
                         f"{t.plugin} ({self.manager.distribution(t.plugin)})")
        lines.append(f"  {sum(t.total_s for t in called) * 1e3:>10.3f} {sum(t.calls for t in called):>8} "
                     f"{'':>10}  in all")
        return "\n".join(lines)

    def _for(self) -> str:
        return f" ({self.label})" if self.label else ""

    def _print(self, block: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            print(block, file=stream, flush=True)
        except OSError:  # stderr closed or full: the trace has nowhere to go, and the run goes on
            pass


def trace_fit(manager: Any, run_dir: Path | None = None) -> HookTrace | None:
    """A started :class:`HookTrace` when FRAMEWORK_TRACE is on, else None (and nothing wrapped)."""
    if not trace_enabled():
        return None
    return HookTrace(manager, label=f"run {run_dir}" if run_dir is not None else "").start()
