"""framework/garbage_collection.py: start-up's objects and a sweep's plan are kept off the
collector's walks; in a real process, a run's start-up sets off no full collection."""

from __future__ import annotations

import gc
import textwrap
import weakref

import pytest

from framework import garbage_collection
from framework.garbage_collection import freeze_survivors, made_for_the_process
from tests.conftest import run_cli_watched


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def collections_seen():
    """The generations of the collections that run during the test; what the test froze is
    unfrozen after it, as the pytest process goes on."""
    seen: list[int] = []

    def count(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    froze = garbage_collection._Launches.froze
    garbage_collection._Launches.froze = False
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
        gc.enable()
        garbage_collection._Launches.froze = froze


def test_objects_made_for_the_process_are_made_without_collections_and_frozen(collections_seen):
    frozen_before = gc.get_freeze_count()
    with made_for_the_process():
        assert not gc.isenabled()
        made = [[index] for index in range(5000)]  # enough allocations for dozens of collections
    assert collections_seen == []
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(made)


def test_a_disabled_collector_stays_disabled(collections_seen):
    gc.disable()
    with made_for_the_process():
        pass
    assert not gc.isenabled()


def test_the_collector_comes_back_when_the_block_raises(collections_seen):
    with pytest.raises(RuntimeError), made_for_the_process():
        raise RuntimeError("an import failed")
    assert gc.isenabled()


def test_survivors_are_frozen_and_young_garbage_freed(collections_seen):
    gc.collect()
    kept = [Node() for _ in range(100)]
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    frozen_before = gc.get_freeze_count()
    freeze_survivors()
    assert gone() is None
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    assert gc.isenabled()


def test_a_collector_turned_off_is_left_alone(collections_seen):
    gc.disable()
    frozen_before = gc.get_freeze_count()
    freeze_survivors()
    assert gc.get_freeze_count() == frozen_before and collections_seen == [] and not gc.isenabled()


def test_a_later_launch_frees_what_an_earlier_one_froze(collections_seen):
    """Optuna's sweeper launches batch after batch in one process, dropping each batch's configs."""
    batch = [Node() for _ in range(100)]
    first_batch = weakref.ref(batch[0])
    freeze_survivors()  # the first launch's plan
    del batch  # the sweeper is done with the batch: a frozen cycle, freed by no collection
    gc.collect()
    assert first_batch() is not None
    freeze_survivors()  # the next launch's plan
    assert first_batch() is None
    assert gc.get_freeze_count() > 0


def test_a_runs_start_up_sets_off_no_full_collection(tmp_path):
    """Without the pause, importing torch and Hydra set off 3 full collections in every run."""
    watch = textwrap.dedent("""
        import atexit, gc, sys
        full = []
        gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 2 and full.append(1))
        atexit.register(lambda: print("full collections:", len(full), file=sys.stderr))
    """)
    done = run_cli_watched(watch, "+task=linear", "trainer.max_steps=5", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "full collections: 0" in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "run" / "result.json").exists()
