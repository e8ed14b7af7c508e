"""Dominance ranking (seed-spec §6.6; fix §12.8: exact threshold comparison)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from projections.ranking import Standing, dominant_winner, explain, rank_order

T = Fraction(1, 20)


def s(hotkey: str, rate: str, block: int | None, passed: int = 0) -> Standing:
    return Standing(hotkey=hotkey, rate=Fraction(rate), passed=passed, commit_block=block)


@pytest.mark.parametrize(
    ("field", "winner"),
    [
        ([], None),
        ([s("only", "0.1", 5)], "only"),
        ([s("early", "0.70", 1000), s("late", "0.80", 1001)], "late"),
        ([s("early", "0.70", 1000), s("late", "0.74", 1001)], "early"),
        ([s("a", "0.90", 1000), s("b", "0.80", 1001), s("c", "0.85", 1002)], "a"),
        ([s("A", "0.5", 1), s("B", "0.9", 2), s("C", "0.93", 3)], "B"),
    ],
)
def test_dominance_vectors(field: list[Standing], winner: str | None) -> None:
    assert dominant_winner(field, T) == winner


def test_rank_order_low_mid_high() -> None:
    field = [s("low", "0.10", 1000, 10), s("mid", "0.50", 1001, 50), s("high", "0.90", 1002, 90)]
    assert rank_order(field, T) == ["high", "mid", "low"]


def test_equal_blocks_order_by_hotkey_and_unknown_block_last() -> None:
    field = [s("Z", "0.3", 100, 3), s("A", "0.9", 100, 9), s("M", "0.2", None, 7)]
    assert rank_order(field, T) == ["A", "M", "Z"]


def test_hundred_miners_latest_dominates() -> None:
    rnd = random.Random(42)
    field = [s(f"m{i:03d}", str(Fraction(rnd.randint(0, 84), 100)), 1000 + i, i) for i in range(99)]
    field.append(s("m099", "0.90", 1099, 5))
    order = rank_order(field, T)
    assert order[0] == "m099" and len(order) == 100 == len(set(order))


def test_fix_exact_threshold_comparison() -> None:
    # The seed's 0.55 + 0.05 = 0.6000000000000001 in floats kept A; exactly, B reaches the margin.
    assert dominant_winner([s("A", "0.55", 1), s("B", "0.60", 2)], T) == "B"
    assert dominant_winner([s("A", "0.75", 1), s("B", "0.80", 2)], T) == "B"
    assert dominant_winner([s("A", "0.55", 1), s("B", "0.5999", 2)], T) == "A"


def test_explain_gives_each_comparison_and_the_margin_needed() -> None:
    field = [s("A", "0.5", 1), s("B", "0.9", 2), s("C", "0.93", 3)]
    e = explain(field, T, "C")
    assert e.winner == "B" and not e.dominates and e.position == 2
    assert [(c.earlier, c.needed, c.beaten) for c in e.comparisons] == [
        ("A", Fraction(11, 20), True), ("B", Fraction(19, 20), False)]
    assert e.comparisons[1].margin == Fraction(-1, 50)
    assert explain(field, T, "A").dominates and explain(field, T, "A").comparisons == ()
    with pytest.raises(KeyError):
        explain(field, T, "nobody")
