"""bench/measure.py's interleaving and its per-unit estimates, on sides whose times are known:
each run costs a fixed amount (set-up, a first step, the end of a fit) plus a cost per unit."""

from __future__ import annotations

import pytest

from bench.measure import Outcome, Side, interleaved


def known_side(label: str, fixed: float, per_unit: float, calls: list, method: str = "difference") -> Side:
    def run(units: int):
        calls.append((label, units))
        return fixed + per_unit * units, Outcome(final_loss=float(units), params=[])

    return Side(label, label, run, method=method)


def test_a_difference_cancels_what_each_run_pays_once():
    calls = []
    sides = [known_side("framework", 0.5, 0.002, calls), known_side("plain", 0.1, 0.001, calls)]
    timed = interleaved(sides, 1000, repeats=3, warmups=0)
    assert timed["framework"]["samples"] == pytest.approx([0.002] * 3)
    assert timed["plain"]["median"] == pytest.approx(0.001)
    # The outcome is the long run's, the one the trained check compares.
    assert timed["framework"]["outcome"].final_loss == 1000.0


def test_a_direct_side_divides_one_run_by_its_units():
    calls = []
    sides = [known_side("framework", 0.2, 0.002, calls), known_side("DataLoader", 1.0, 2.0, calls, method="direct")]
    timed = interleaved(sides, 2, repeats=2, warmups=0)
    assert timed["DataLoader"]["samples"] == pytest.approx([2.5, 2.5])
    assert timed["framework"]["median"] == pytest.approx(0.002)
    assert ("DataLoader", 1) not in calls  # a direct side runs no short run


def test_sides_take_turns_and_each_short_run_follows_the_long_ones():
    calls = []
    sides = [known_side("a", 0.0, 1.0, calls), known_side("b", 0.0, 1.0, calls)]
    interleaved(sides, 10, repeats=2, warmups=1, base=3)
    assert calls == [("a", 10), ("b", 10),  # the warm-up round
                     ("a", 10), ("b", 10), ("a", 3), ("b", 3),  # A B
                     ("b", 10), ("a", 10), ("b", 3), ("a", 3)]  # then B A


@pytest.mark.parametrize("units, base", [(1, 1), (5, 0), (3, 4)])
def test_a_difference_needs_a_shorter_run(units, base):
    with pytest.raises(ValueError, match="0 < base < units"):
        interleaved([known_side("a", 0.0, 1.0, [])], units, repeats=1, warmups=0, base=base)
