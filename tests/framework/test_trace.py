"""FRAMEWORK_TRACE=1: at fit start each hook's implementers in pluggy's call order with their
distribution, at the end the time in each implementation, slowest first; unset, nothing is
printed and nothing is wrapped. A failing plugin is still named when traced."""

from __future__ import annotations

import re
import time

import pytest

import framework
import framework.trace
from framework import hookimpl
from framework.errors import PluginError
from framework.markers import TRACE_ENV
from framework.trace import HOOK_NAMES, TRACED_FUNCTION
from tests.conftest import run_cli
from tests.plugin_site import install_distribution, plugin_env

LISTING = f"{TRACE_ENV}: hook implementations in call order"
REPORT = f"{TRACE_ENV}: time in each hook implementation, slowest first"
ROW = re.compile(r"^\s+(?P<total_ms>[\d.]+)\s+(?P<calls>\d+)\s+(?P<mean_us>[\d.]+)\s+(?P<hook>framework_\w+)\s+"
                 r"(?P<plugin>\S+) \((?P<distribution>.*)\)$")


def listing_of(stderr: str) -> dict[str, list[tuple[str, str]]]:
    """{hook: [(plugin, distribution)]} from the first start-of-fit block in ``stderr``."""
    block = stderr.split(LISTING, 1)[1].split(REPORT, 1)[0]
    listed: dict[str, list[tuple[str, str]]] = {}
    for line in block.splitlines()[1:]:
        hook = re.match(r"^  (framework_\w+):", line)
        if hook:
            listed[hook.group(1)] = []
            continue
        implementer = re.match(r"^\s+\d+\. (\S+)\s+(.*)$", line)
        if implementer:
            listed[list(listed)[-1]].append(implementer.groups())
    return listed


def report_of(stderr: str) -> list[dict[str, str]]:
    """The rows of the first end-of-fit block in ``stderr``, in the order printed."""
    block = stderr.split(REPORT, 1)[1].split(LISTING, 1)[0]
    return [match.groupdict() for match in map(ROW.match, block.splitlines()) if match]


class HookSnapshot:
    """At fit start, who implements the loop's hooks in pluggy's call order, and each
    implementation's function as the loop will call it."""

    def __init__(self, manager) -> None:
        self.manager = manager
        self.order: dict[str, list[str]] = {}
        self.functions: dict[str, list[tuple[object, object, str]]] = {}

    @hookimpl
    def framework_fit_start(self, state):
        for hook_name in HOOK_NAMES:
            impls = getattr(self.manager.hook, hook_name).get_hookimpls()
            self.order[hook_name] = [impl.plugin_name for impl in reversed(impls)]  # pluggy calls the last first
            self.functions[hook_name] = [(impl.function, impl.plugin, impl.plugin_name) for impl in impls]


class FakeClock:
    """A clock that moves only when told to: timings a test can predict exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Slow:
    """A third-party style plugin that sleeps at every step end."""

    def __init__(self, seconds: float, sleep=time.sleep) -> None:
        self.seconds, self.sleep = seconds, sleep

    @hookimpl
    def framework_step_end(self, state, loss):
        self.sleep(self.seconds)

    @hookimpl
    def framework_fit_end(self, state, result):  # called through call_every, not pluggy
        pass


@pytest.fixture
def traced(monkeypatch):
    monkeypatch.setenv(TRACE_ENV, "1")


def test_the_start_listing_names_each_implementer_in_pluggy_call_order(traced, manager, train, tmp_path, capsys):
    snapshot = HookSnapshot(manager)
    manager.register_plugin(snapshot, "snapshot", "test")
    train(["+task=polyfit", "trainer.max_steps=3", "trainer.log_every=1"], run_dir=tmp_path)
    listed = listing_of(capsys.readouterr().err)

    assert list(listed) == list(HOOK_NAMES)
    # The built-in loggers (per-fit plugins) implement framework_log; several implementers, so the order says something.
    assert {"logger.console", "logger.tensorboard"} <= set(snapshot.order["framework_log"])
    for hook_name, order in snapshot.order.items():
        assert [plugin for plugin, _ in listed[hook_name]] == order, hook_name
    for plugin, distribution in listed["framework_log"] + listed["framework_fit_start"]:
        assert distribution == ("no distribution: test" if plugin == "snapshot" else "built-in")
    assert ("default_step", "built-in") in listed["framework_configure_step"]


def test_the_slowest_implementation_comes_first_with_a_call_per_step(traced, manager, train, tmp_path, capsys):
    manager.register_plugin(Slow(seconds=0.05), "slow_plugin", "test", "slow-dist 1.0")
    steps = 8
    result = train(["+task=linear", f"trainer.max_steps={steps}", "logger=[]"], run_dir=tmp_path)
    assert result["steps"] == steps
    rows = report_of(capsys.readouterr().err)

    assert (rows[0]["hook"], rows[0]["plugin"], rows[0]["distribution"]) == (
        "framework_step_end", "slow_plugin", "slow-dist 1.0")
    assert int(rows[0]["calls"]) == steps
    assert float(rows[0]["total_ms"]) >= steps * 50  # sleep sleeps at least that long
    # Hooks the loop calls one implementation at a time are timed too.
    closing = [row for row in rows if (row["hook"], row["plugin"]) == ("framework_fit_end", "slow_plugin")]
    assert [row["calls"] for row in closing] == ["1"]


def test_unset_nothing_is_printed_and_the_loop_calls_the_plugins_own_functions(monkeypatch, manager, train,
                                                                               tmp_path, capsys):
    monkeypatch.delenv(TRACE_ENV, raising=False)
    snapshot = HookSnapshot(manager)
    manager.register_plugin(snapshot, "snapshot", "test")
    manager.register_plugin(Slow(seconds=0), "slow_plugin", "test")
    train(["+task=polyfit", "trainer.max_steps=3"], run_dir=tmp_path)

    assert TRACE_ENV not in capsys.readouterr().err
    assert snapshot.functions["framework_step_end"] and snapshot.functions["framework_log"]
    for hook_name, implementations in snapshot.functions.items():
        for function, plugin, name in implementations:
            assert function == getattr(plugin, hook_name), (hook_name, name)
            assert not hasattr(function, TRACED_FUNCTION)


def test_a_traced_fit_gives_every_implementation_its_own_function_back(traced, manager, train, tmp_path, capsys):
    before = {name: [impl.function for impl in getattr(manager.hook, name).get_hookimpls()] for name in HOOK_NAMES}
    train(["+task=linear", "trainer.max_steps=2"], run_dir=tmp_path)
    after = {name: [impl.function for impl in getattr(manager.hook, name).get_hookimpls()] for name in HOOK_NAMES}
    assert after == before  # the next job of a sweep is neither timed twice nor timed into this one's report
    assert REPORT in capsys.readouterr().err


class Failing:
    """Two instances of one class: only the one told to fails, in a hook pluggy calls or in one
    the loop calls implementation by implementation."""

    def __init__(self, fail_in: str | None) -> None:
        self.fail_in = fail_in

    @hookimpl
    def framework_step_end(self, state, loss):
        if self.fail_in == "framework_step_end":
            raise RuntimeError("boom")

    @hookimpl
    def framework_fit_end(self, state, result):
        if self.fail_in == "framework_fit_end":
            raise RuntimeError("boom")


@pytest.mark.parametrize("hook_name", ["framework_step_end", "framework_fit_end"])
def test_a_failing_plugin_is_named_when_traced(hook_name, traced, manager, train, tmp_path, capsys):
    manager.register_plugin(Failing(hook_name), "broken", "test")
    manager.register_plugin(Failing(None), "calm", "test")  # pluggy calls it first
    with pytest.raises(PluginError, match=f"plugin 'broken' failed in {hook_name}.*boom"):
        train(["+task=linear", "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    assert REPORT in capsys.readouterr().err  # the failed fit is reported too


def test_framework_train_prints_both_blocks(traced, tmp_path, capsys):
    framework.train(["+task=linear", "trainer.max_steps=2", "trainer.device=cpu"], run_dir=tmp_path / "run")
    stderr = capsys.readouterr().err
    assert ("framework.api", "built-in") in listing_of(stderr)["framework_fit_end"]
    assert any(row["plugin"] == "framework.api" for row in report_of(stderr))


SLOW_DISTRIBUTION = '''
    import time

    from framework import hookimpl


    @hookimpl
    def framework_step_end(state, loss):
        time.sleep(0.02)
'''


def test_the_command_line_prints_both_blocks_naming_the_distribution(tmp_path):
    site = install_distribution(tmp_path / "site", distribution="acme-slow", package="acme_slow",
                                source=SLOW_DISTRIBUTION, entry_point="acme_slow")
    done = run_cli("+task=linear", "trainer.max_steps=4", cwd=tmp_path,
                   env=plugin_env(site, **{TRACE_ENV: "1"}))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(LISTING) == 1 and done.stderr.count(REPORT) == 1
    listed = listing_of(done.stderr)
    assert listed["framework_step_end"] == [("acme_slow", "acme-slow 0.1")]
    assert ("logger.tensorboard", "built-in") in listed["framework_log"]
    step_end = [row for row in report_of(done.stderr) if row["hook"] == "framework_step_end"]
    assert [(row["plugin"], row["distribution"], row["calls"]) for row in step_end] == [
        ("acme_slow", "acme-slow 0.1", "4")]
    assert TRACE_ENV not in done.stdout


def test_each_job_of_a_sweep_prints_both_blocks(tmp_path):
    done = run_cli("-m", "+task=linear", "trainer.max_steps=2", "trainer.seed=1,2", "logger=[]", cwd=tmp_path,
                   env={TRACE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(LISTING) == 2 and done.stderr.count(REPORT) == 2
    jobs = sorted(path.parent for path in (tmp_path / "multirun").glob("*/*/*/result.json"))
    assert len(jobs) == 2
    for job in jobs:  # each job's blocks say which run they are about
        assert f"{LISTING} (run {job})" in done.stderr


class Wrapping:
    """pluggy wrappers, new style and old style: each sees the wrapped implementations' results,
    and the new-style one their failure."""

    def __init__(self, seconds: float, sleep=time.sleep) -> None:
        self.seconds, self.sleep = seconds, sleep
        self.step_results: list[object] = []
        self.log_results: list[object] = []
        self.failures: list[BaseException] = []

    @hookimpl(wrapper=True)
    def framework_step_end(self, state, loss):
        self.sleep(self.seconds)  # its own time: before the wrapped implementations run
        try:
            result = yield
        except RuntimeError as failure:
            self.failures.append(failure)
            raise
        self.step_results.append(result)
        return result

    @hookimpl(hookwrapper=True)
    def framework_log(self, state, step, metrics):
        outcome = yield
        self.log_results.append(outcome.get_result())


class Answering:
    @hookimpl
    def framework_step_end(self, state, loss):
        return state.progress.step

    @hookimpl
    def framework_log(self, state, step, metrics):
        return step


def test_wrappers_are_timed_for_their_own_code_and_still_wrap(traced, manager, recorder, train, tmp_path, capsys,
                                                              monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(framework.trace, "CLOCK", clock)
    manager.register_plugin(Slow(seconds=0.02, sleep=clock.sleep), "slow_plugin", "test")
    manager.register_plugin(Answering(), "answering", "test")
    wrapping = Wrapping(seconds=0.001, sleep=clock.sleep)
    manager.register_plugin(wrapping, "wrapping", "test")
    steps = 4
    train(["+task=linear", f"trainer.max_steps={steps}", "trainer.log_every=2", "logger=[]"], run_dir=tmp_path)
    stderr = capsys.readouterr().err

    assert wrapping.step_results == [[step] for step in range(1, steps + 1)]
    logged_steps = list(recorder.logged("train/loss"))
    assert wrapping.log_results == [[step] for step in logged_steps]
    assert ("wrapping", "no distribution: test (wrapper)") == listing_of(stderr)["framework_step_end"][0]
    rows = {(row["hook"], row["plugin"]): row for row in report_of(stderr)}
    assert rows[("framework_step_end", "wrapping")]["calls"] == str(steps)
    assert rows[("framework_log", "wrapping")]["calls"] == str(len(logged_steps))
    # The wrapper's own time, without the slow implementation it wraps.
    assert float(rows[("framework_step_end", "wrapping")]["total_ms"]) == pytest.approx(steps * 1.0)
    assert float(rows[("framework_step_end", "slow_plugin")]["total_ms"]) == pytest.approx(steps * 20.0)


def test_a_plugin_failing_inside_a_wrapper_is_named_when_traced(traced, manager, train, tmp_path):
    manager.register_plugin(Failing("framework_step_end"), "broken", "test")
    wrapping = Wrapping(seconds=0)
    manager.register_plugin(wrapping, "wrapping", "test")
    with pytest.raises(PluginError, match="plugin 'broken' failed in framework_step_end.*boom"):
        train(["+task=linear", "trainer.max_steps=3", "logger=[]"], run_dir=tmp_path)
    assert [str(failure) for failure in wrapping.failures] == ["boom"]
