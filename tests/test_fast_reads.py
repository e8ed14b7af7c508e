"""The fast paths of `replay --all` and the API's cold start give what the plain ones give: a
batched frontier lookup equals one `position` per pair, the log's bulk-marked rows are the
stamped rows with a sign, a prune that reuses its decision's window prunes the same, and the
window tally's column path scores as the plain tally does."""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import given, settings, strategies as st

from leoma.log.events import VERSIONS
from leoma.tools.replay import _exact, _positions
from projections.epoch import EpochFold
from projections.scores import tally
from tests.builders import NETUID, LogBuilder
from tests.test_bounded_state import LENGTH, SMALL, network


def test_a_batched_position_lookup_equals_one_lookup_per_pair(tmp_path: Path) -> None:
    log = network(150).to_log(tmp_path / "v.db")
    # More pairs than one statement takes, present and absent, and origins the log never saw.
    wanted = [(o, s) for o in ("val-A", "val-B", "val-C", "nobody") for s in range(0, 160)]
    found = _positions(log, wanted)
    assert len(wanted) > 400 and found
    for origin, seq in wanted:
        assert found.get((origin, seq)) == (log.position(origin, seq) if seq > 0 else None), (origin, seq)
    # `_exact` answers from the batch as it does with its own lookups.
    heads = {o: h.origin_seq for o, h in log.frontier(until_seq=300).items()}
    names = log.origin_names().values()
    for until in (300, 299, log.last_seq()):
        nexts = [(o, heads.get(o, 0) + 1) for o in names]
        assert _exact(log, heads, until, names, _positions(log, nexts)) == _exact(log, heads, until, names)
    log.close()


def test_the_bulk_marked_rows_are_the_stamped_rows_with_every_other_rows_header(tmp_path: Path) -> None:
    from leoma.log.events import JudgeFailed

    b = network(30)
    b.judge_failed("val-B", 11, "m1", block=200)
    # A key with spaces, a version-like word and unicode: the header keeps it whole.
    b.add("val-B", JudgeFailed(task_id=12, miner="m2", judge_model="j", prompt_version="p", attempts=1, reason="x"), block=201, key="judgefail/12/m2 1 é \u2028 end")
    log = b.to_log(tmp_path / "v.db")
    current = VERSIONS["verdict_recorded"]
    marked = list(log.bulk_marked_rows("verdict_recorded", current, after=5))
    stamped = list(log.stamped_raw_rows(after=5))
    assert len(marked) == len(stamped) > 100
    bulk = 0
    for (seq, oid, oseq, block, body, at, header), (s2, o2, os2, key, kind, v, b2, body2, at2) in zip(marked, stamped):
        assert (seq, oid, oseq, block, body, at) == (s2, o2, os2, b2, body2, at2)
        assert log.row_header(seq) == (key, kind, v)
        if kind == "verdict_recorded" and v == current:
            assert header is None
            bulk += 1
        else:
            assert header is not None and log.split_header(header) == (key, kind, v)
    assert 0 < bulk < len(marked)
    log.close()


def test_a_prune_after_its_decision_reuses_the_window_and_prunes_the_same() -> None:
    rows = network(120).rows()
    fast, plain = EpochFold("val-A"), EpochFold("val-A")
    i = 0
    for epoch in range(1, 8):
        block = epoch * LENGTH
        while i < len(rows) and rows[i].block <= block:
            fast.apply(rows[i])
            plain.apply(rows[i])
            i += 1
        assert fast.decide(epoch, block, NETUID, SMALL) == plain.decide(epoch, block, NETUID, SMALL)
        fast.prune(block, SMALL, after_decide=True)
        plain.prune(block, SMALL)
        assert msgspec.to_builtins(fast.state) == msgspec.to_builtins(plain.state)
    assert fast.state.floor_task > 0


def test_a_window_kept_for_another_block_is_not_reused() -> None:
    rows = network(120).rows()
    fold, fresh = EpochFold("val-A"), EpochFold("val-A")
    fold.apply_many(rows)
    fresh.apply_many(rows)
    fold.decide(3, 3 * LENGTH, NETUID, SMALL)
    fold.prune(5 * LENGTH, SMALL, after_decide=True)  # decided block 3's window, pruned at block 5
    fresh.prune(5 * LENGTH, SMALL)
    assert msgspec.to_builtins(fold.state) == msgspec.to_builtins(fresh.state)


def test_a_bulk_fold_pauses_the_collector_and_restores_it() -> None:
    import gc

    from leoma.log.eventlog import bulk_fold

    assert gc.isenabled()
    with bulk_fold():
        assert not gc.isenabled()
        with bulk_fold():  # nested: the inner block leaves it paused
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk_fold():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
    try:
        with bulk_fold():
            raise KeyError("boom")
    except KeyError:
        pass
    assert gc.isenabled()


def test_a_frozen_bulk_fold_leaves_what_it_built_out_of_the_collectors_walks(tmp_path: Path) -> None:
    """The owner API's cold start freezes what it folded; its later refreshes do not."""
    import gc

    from leoma.api.state import ApiState
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import bulk_fold

    gc.unfreeze()
    try:
        with bulk_fold():
            made = [[i] for i in range(1000)]
        assert gc.get_freeze_count() == 0
        with bulk_fold(freeze=True):
            made = [[i] for i in range(1000)]
        assert gc.get_freeze_count() >= len(made) and gc.isenabled()
        gc.unfreeze()
        log = network(30).to_log(tmp_path / "v.db")
        state = ApiState(log, own="api", consensus=DEFAULT)
        assert state.refresh() > 100 and gc.get_freeze_count() > 0
        gc.unfreeze()
        assert state.refresh() == 0 and gc.get_freeze_count() == 0  # a later refresh freezes nothing
        log.close()
    finally:
        gc.unfreeze()


def _tally_fold(tasks: int, passes: list[bool], missing: set[int]) -> EpochFold:
    vals, miners = ["val-A", "val-B", "val-C", "val-D"], ["m1", "m2", "m3", "m4", "m5"]
    b = LogBuilder()
    for task in range(tasks):
        v = vals[(task * 5) % 7 % 4]  # uneven: validators with one, two or three tasks
        b.opened(v, task, block=task * 10 + 1, interval=10, miners=miners)
        for i, m in enumerate(miners):
            if task * 5 + i in missing:
                continue  # no verdict on this miner: not every validator evaluated every miner
            b.verdict(v, task, m, passes[(task * 5 + i) % len(passes)], block=task * 10 + 3)
    fold = EpochFold("val-A")
    fold.apply_many(b.rows())
    return fold


@settings(max_examples=40, deadline=None)
@given(tasks=st.integers(1, 12), passes=st.lists(st.booleans(), min_size=1, max_size=17),
       missing=st.sets(st.integers(0, 60), max_size=3), shifts=st.lists(st.integers(0, 6), min_size=1, max_size=4))
def test_the_window_tally_equals_the_plain_tally(tasks, passes, missing, shifts) -> None:  # type: ignore[no-untyped-def]
    """Kept across windows, with every miner evaluated by every validator (the column path) or
    not (the general path): the scores of `projections.scores.tally` over the window's verdicts."""
    fold = _tally_fold(tasks + 6, passes, missing)
    vals = ["val-A", "val-B", "val-C", "val-D"]
    for shift in shifts:
        window = list(range(shift, shift + tasks))
        samplers = {t: vals[(t * 5) % 7 % 4] for t in window}
        fast = fold.window_tally(window, samplers, 10_000)
        plain = tally(fold.window_verdicts(window, 10_000), window, samplers)
        assert fast.scores == plain.scores
        assert fast.existing_tasks == plain.existing_tasks
