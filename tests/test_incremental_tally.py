"""The window tally kept between decisions: counting only the tasks that changed gives the counts
of a fresh tally, whatever order windows come in (replay --all, the weight setter, the API)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.epoch import EpochFold
from tests.builders import LogBuilder

VALS = ["val-A", "val-B", "val-C"]
MINERS = ["m1", "m2", "m3", "m4", "m5"]
INTERVAL = 10


def _fold(tasks: int, flips: set[int], failed: set[int]) -> EpochFold:
    b = LogBuilder()
    b.allowlist("val-A", VALS, interval=INTERVAL, block=1)
    for task in range(tasks):
        v = VALS[task % 3]
        b.opened(v, task, block=task * INTERVAL + 1, interval=INTERVAL, miners=MINERS)
        for i, m in enumerate(MINERS):
            b.verdict(v, task, m, (task + i) % 3 == 0, block=task * INTERVAL + 3)
            if (task * 7 + i) in flips:  # a later word on the same miner, some after later blocks
                b.verdict(v, task, m, (task + i) % 3 != 0, block=task * INTERVAL + 3 + (task % 4) * 25)
            if (task * 7 + i) in failed:
                b.judge_failed(v, task, m, block=task * INTERVAL + 5)
    fold = EpochFold("val-A")
    for row in b.rows():
        fold.apply(row)
    return fold


windows = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 12), st.integers(0, 2), st.integers(0, 400)),
                   min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(windows=windows, flips=st.sets(st.integers(0, 250), max_size=40), failed=st.sets(st.integers(0, 250), max_size=20))
def test_a_kept_tally_equals_a_fresh_one(windows, flips, failed) -> None:  # type: ignore[no-untyped-def]
    kept = _fold(40, flips, failed)
    for start, size, shift, block in windows:
        tasks = list(range(start, start + size))
        # Samplers as a window names them: usually the rotation's, sometimes shifted or missing.
        samplers = {t: VALS[(t + shift) % 3] for t in tasks if (t + shift) % 5 != 4}
        fresh = _fold(40, flips, failed)
        assert kept.window_tally(tasks, samplers, block) == fresh.window_tally(tasks, samplers, block)


def test_a_task_whose_word_changed_after_a_block_is_counted_again() -> None:
    """Task 3's later word (block 80) is not seen at block 50 and is at block 90: the kept
    counts follow, and going back to block 50 gives the first tally again."""
    b = LogBuilder()
    b.allowlist("val-A", VALS, interval=INTERVAL, block=1)
    for task in range(6):
        v = VALS[task % 3]
        b.opened(v, task, block=task * INTERVAL + 1, interval=INTERVAL, miners=MINERS)
        for m in MINERS:
            b.verdict(v, task, m, True, block=task * INTERVAL + 3)
    b.verdict(VALS[0], 3, "m1", False, block=80)
    fold = EpochFold("val-A")
    for row in b.rows():
        fold.apply(row)
    samplers = {t: VALS[t % 3] for t in range(6)}
    early = fold.window_tally(range(6), samplers, 50)
    late = fold.window_tally(range(6), samplers, 90)
    assert (early.scores["m1"].passed, early.scores["m1"].evaluated) == (5, 5)
    assert (late.scores["m1"].passed, late.scores["m1"].evaluated, late.scores["m2"].passed) == (5, 6, 6)
    assert fold.window_tally(range(6), samplers, 50) == early
