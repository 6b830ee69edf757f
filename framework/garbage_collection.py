"""Python's cyclic garbage collector kept off objects that live on (issue 10 points 3 and 5,
issue 12 point 7).

CPython collects reference cycles generation by generation, and a full collection (generation 2)
walks every object the collector tracks. Two phases make many objects that outlive them:

- **start-up**: importing torch, Hydra and the plugins (the figure writer: matplotlib) makes
  ≈ 280,000 objects that live as long as the process, and almost no garbage. Making them set off
  ≈ 370 young collections and 3 full ones in a single polyfit run, ≈ 0.18 s, and the collections
  at the process's end walked them again (≈ 0.07 s). The collector is paused while they are
  made, and they are then frozen (``gc.freeze``): moved out of the generations, so that no later
  collection walks them. Measured on the whole process ``+task=polyfit``, six alternating pairs:
  3.19 against 2.58 s (median), more than the collections' own time.
- **a vectorized sweep's plan**: every job's config is composed before the first job runs and
  kept until the last; the full collections during the job runs walked them all. Once the plan
  is made, the young generations are collected (the plan's garbage there is freed) and what is
  left is frozen.

The collector runs as usual on everything made after. The cost: a frozen object that becomes
garbage is freed when the process ends, or by the next launch's full collection
(:func:`freeze_survivors`), not sooner. Start-up objects live that long; a sweep's job configs die
with the launch, and the command line's process ends with the sweep.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def made_for_the_process() -> Iterator[None]:
    """The block makes objects that live as long as the process (start-up): no collection while
    it runs, and what it made is frozen after it, also when it raises (the process then ends)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


class _Launches:
    froze = False  # a launch in this process froze its plan (freeze_survivors)


def freeze_survivors() -> None:
    """Everything alive now lives on (a sweep's job configs): what the young generations hold
    that is garbage is freed, and the rest is frozen.

    A sweeper that launches batch after batch in one process (Optuna's, ``n_jobs`` trials at a
    time) drops each batch's configs and returns once it has read them; frozen, they would stay
    until the process ends. So a later launch first unfreezes everything and collects it all
    (one full collection a batch, which frees what earlier batches left), then freezes what is
    alive. The first launch, the only one of a plain sweep, needs only the young generations."""
    if not gc.isenabled():  # the user turned collections off: there is nothing to spare them
        return
    if _Launches.froze:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(1)
    gc.freeze()
    _Launches.froze = True
