"""State bounded by the window: a pruned fold decides what a cold fold decides, and stays small."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import Draft, EventLog
from projections.epoch import EpochFold, StatePruned, score_epoch
from tests.builders import NETUID, LogBuilder

VALS = ["val-A", "val-B", "val-C"]
MINERS = ["m1", "m2", "m3", "m4"]
INTERVAL = 10
LENGTH = DEFAULT.epoch.length
SMALL = msgspec.structs.replace(DEFAULT, window=msgspec.structs.replace(DEFAULT.window, tasks=12, max_lookback_blocks=0))


def network(tasks: int, *, skip: set[int] = frozenset()) -> LogBuilder:  # type: ignore[assignment]
    """Three validators, four miners, a task every rotation from block 100 (minus `skip`)."""
    b = LogBuilder()
    b.allowlist("val-A", VALS, interval=INTERVAL, block=1)
    b.metagraph("val-A", ["owner", *MINERS], block=2)
    for uid, m in enumerate(MINERS, start=1):
        b.checked("val-A", m, uid=uid, block=3, commit_block=uid)
    for task in range(10, 10 + tasks):
        if task in skip:
            continue
        v = VALS[task % 3]
        b.opened(v, task, block=task * INTERVAL + 1, interval=INTERVAL, miners=MINERS)
        for i, m in enumerate(MINERS):
            b.verdict(v, task, m, (task + i) % (i + 2) == 0, block=task * INTERVAL + 3)
        if task % 18 == 0:  # a heartbeat check every few rotations: observations pile up too
            for uid, m in enumerate(MINERS, start=1):
                b.checked("val-A", m, uid=uid, block=task * INTERVAL + 4, commit_block=uid)
    return b


def _cold(rows: list, block: int, consensus=SMALL):  # type: ignore[no-untyped-def]
    return score_epoch([r for r in rows if r.block <= block], own="val-A", epoch=block // LENGTH,
                       epoch_block=block, netuid=NETUID, consensus=consensus)


def _warm_epochs(rows: list, epochs: range, consensus=SMALL, *, step: int = LENGTH) -> tuple[EpochFold, list]:  # type: ignore[no-untyped-def]
    fold, out, i = EpochFold("val-A"), [], 0
    for epoch in epochs:
        block = epoch * step
        while i < len(rows) and rows[i].block <= block:
            fold.apply(rows[i])
            i += 1
        out.append(fold.decide(block // LENGTH, block, NETUID, consensus))
        fold.prune(block, consensus)
        fold = EpochFold.load(fold.dump())  # every step resumes from its checkpoint, as the weight setter does
    return fold, out


def test_a_pruned_fold_decides_every_epoch_as_a_cold_fold_does() -> None:
    rows = network(400).rows()
    _, warm = _warm_epochs(rows, range(2, 24))
    assert warm == [_cold(rows, e * LENGTH) for e in range(2, 24)]
    assert any(d.winner for d in warm)


def test_the_checkpoint_stays_the_size_of_the_window_not_of_history() -> None:
    short_fold, _ = _warm_epochs(network(150).rows(), range(2, 9))
    long_fold, _ = _warm_epochs(network(600).rows(), range(2, 34))
    tasks = SMALL.window.tasks + 2 * SMALL.window.settle_margin + LENGTH // INTERVAL
    assert len(long_fold.state.verdicts) <= tasks and len(long_fold.state.claims) <= tasks
    assert max(len(c) for c in long_fold.state.miners.checks.values()) <= 2  # type: ignore[union-attr]
    assert len(long_fold.dump()) <= 1.2 * len(short_fold.dump())


def test_a_pruned_fold_refuses_what_it_forgot() -> None:
    rows = network(300).rows()
    fold, _ = _warm_epochs(rows, range(2, 16))
    with pytest.raises(StatePruned):
        fold.decide(10, 10 * LENGTH, NETUID, SMALL)  # an earlier epoch: its observations are gone
    # A window that is no longer full could reach below the floor: refused, not silently wrong.
    bigger = msgspec.structs.replace(SMALL, window=msgspec.structs.replace(SMALL.window, tasks=60))
    with pytest.raises(StatePruned):
        fold.decide(16, 16 * LENGTH, NETUID, bigger)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.integers(10, 250), max_size=120), st.integers(0, 600), st.sampled_from([10, 20, 70, LENGTH]))
def test_pruning_never_changes_a_decision(skip: set[int], lookback: int, step: int) -> None:
    consensus = msgspec.structs.replace(SMALL, window=msgspec.structs.replace(SMALL.window, max_lookback_blocks=lookback))
    rows = network(240, skip=skip).rows()
    epochs = range(2, 2500 // step)
    _, warm = _warm_epochs(rows, epochs, consensus, step=step)
    assert warm == [_cold(rows, e * step, consensus) for e in epochs]


def test_the_log_reads_heads_newest_rows_and_what_followed_a_key(tmp_path: Path) -> None:
    b = network(40)
    log = b.to_log(tmp_path / "l.db", own="val-A")
    try:
        assert {o: tuple(h) for o, h in log.frontier().items()} == b.heads()
        middle = log.last_seq() // 2
        expected = {}
        for row in log.rows(until_seq=middle):
            expected[row.origin] = row.origin_seq
        assert {o: h.origin_seq for o, h in log.frontier(until_seq=middle).items()} == expected
        newest = log.newest_row("task_opened", origin="val-B")
        assert newest is not None and newest.key == f"task/{max(t for t in range(10, 50) if t % 3 == 1)}"
        assert log.newest_row("task_opened", origin="nobody") is None
        after = list(log.rows_since_key("val-A", "task/48", ["verdict_recorded"]))
        assert after and {r.key.split("/")[1] for r in after} == {"48"}
        assert list(log.rows_since_key("val-A", "task/999", ["verdict_recorded"])) == []
    finally:
        log.close()


def test_a_readonly_log_replays_in_place(tmp_path: Path) -> None:
    """Replay reads the frontier from the live log, read-only: nothing is copied or written."""
    from leoma.log import decisions
    from leoma.tools.replay import find_epoch, replay_all, replay_epoch

    b = network(300)
    path = tmp_path / "l.db"
    log = EventLog(path, own="val-A")
    fold = EpochFold("val-A")
    seen, i = 0, 0
    for epoch in range(3, 12):
        block = epoch * LENGTH
        j = i
        while j < len(b.events) and b.events[j].block <= block:
            j += 1
        # The network's events arrive as the chain advances; the own ones are appended.
        log.import_events([e for e in b.events[i:j] if e.origin != "val-A"])
        own = [Draft(e.key, e.block, e.payload()) for e in b.events[i:j] if e.origin == "val-A"]
        if own:
            log.append_many(own)
        i = j
        # The validator's own step: fold what is new, decide, append (the chain grows as it goes).
        fold.apply_many(log.rows(after=seen))
        seen = log.last_seq()
        frontier = log.frontier(until_seq=seen)
        decision = fold.decide(epoch, block, NETUID, DEFAULT, frontier)
        log.append_many(decisions.drafts(decision, block=block))
    log.close()
    size = path.stat().st_size
    ro = EventLog(path, readonly=True)
    try:
        one = replay_epoch(ro, find_epoch(ro, 7, origin="val-A"), consensus=DEFAULT)
        assert one.reproduced, one.differences
        every = replay_all(ro, list(decisions.recorded(ro, detail=False)), lambda r: DEFAULT)
        assert [r.epoch for r in every] == list(range(3, 12)) and all(r.reproduced for r in every)
        assert every[4] == one
        # The same chains imported origin by origin (as a mirror download does): local order
        # no longer follows the frontiers, and replay still reads exactly what each one covers.
        other = EventLog(tmp_path / "mirror.db")
        for origin in sorted(ro.origins(), reverse=True):
            other.import_events(list(ro.chain(origin)))
        again = replay_all(other, list(decisions.recorded(other, detail=False)), lambda r: DEFAULT)
        assert [r.epoch for r in again] == list(range(3, 12)) and all(r.reproduced for r in again)
        assert replay_epoch(other, find_epoch(other, 7, origin="val-A"), consensus=DEFAULT).reproduced
        other.close()
    finally:
        ro.close()
    assert path.stat().st_size == size


@pytest.mark.parametrize("step", [5, 10, 30])
def test_a_window_that_moves_one_task_at_a_time_keeps_its_oldest_task(step: int) -> None:
    rows = network(200).rows()
    epochs = range(200 // step, 2000 // step)
    _, warm = _warm_epochs(rows, epochs, step=step)
    assert warm == [_cold(rows, e * step) for e in epochs]


def test_the_api_keeps_what_it_serves_and_decides_as_the_validator_did(tmp_path: Path) -> None:
    """The owner's API folds incrementally: bounded tasks and decisions, the same decision."""
    from leoma.api.state import ApiState
    from tests.builders import decided_api_log

    api_log, decision = decided_api_log(network(300), tmp_path, range(3, 17), own="val-A", length=LENGTH)
    state = ApiState(api_log, own="api", consensus=DEFAULT, keep_tasks=40, keep_decisions=5)
    half = api_log.last_seq() // 2
    state.refresh()
    assert state.last_seq == api_log.last_seq() > half
    assert len(state.tasks) <= 40 and min(state.tasks) == state.task_floor > 10
    assert len(state.samples) == 4 * 300 and len(list(state.samples)) <= 4 * 40  # every verdict counted, few kept
    assert len(state.decisions["val-A"]) == 5
    newest = state.latest_decision("val-A")
    assert newest is not None and newest[3].epoch == 16 and newest[3].aggregates == decision.aggregates
    decided = state.decision("val-A")
    assert decided is not None and decided.reproduced and decided.decision.winner == decision.winner
    assert state.refresh() == 0
    api_log.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(300, 2600))
def test_the_one_pass_tally_equals_tally_of_the_window_verdicts(rnd, block: int) -> None:  # type: ignore[no-untyped-def]
    from projections.scores import tally
    from projections.window import canonical_tasks, settled_window

    b = network(120)
    for _ in range(30):  # intruders, judge failures and second words, anywhere
        task, miner = rnd.randrange(10, 130), rnd.choice(MINERS)
        who = rnd.choice(VALS)
        if rnd.random() < 0.3:
            b.judge_failed(who, task, miner, block=task * INTERVAL + rnd.randrange(1, 300))
        else:
            b.verdict(who, task, miner, rnd.random() < 0.5, block=task * INTERVAL + rnd.randrange(1, 300),
                      key=f"again/{rnd.random()}")
    events = b.events[:]
    rnd.shuffle(events)
    from tests.builders import rows_of

    fold = EpochFold("val-A").apply_many(rows_of(events))
    canonical = canonical_tasks(fold.claims_at(block), VALS, INTERVAL, DEFAULT.grace_blocks(INTERVAL))
    w = SMALL.window
    window = settled_window(canonical, block, INTERVAL, w.tasks, w.settle_margin, w.max_lookback_blocks)
    slow = tally(fold.window_verdicts(window.tasks, block), window.tasks, window.samplers)
    fast = fold.window_tally(window.tasks, window.samplers, block)
    assert fast.scores == slow.scores and fast.existing_tasks == slow.existing_tasks
    assert fold.window_tally(window.tasks, window.samplers, block) == fast  # from its cache
