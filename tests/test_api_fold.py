"""The owner API's cold start folds the bulk of the log (verdicts) inline and reads decisions
lean: the state it ends with is the state of applying every row through `ApiState.apply`."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from leoma.api.state import ApiState
from leoma.errors import LogError
from leoma.log import decisions
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import EventLog
from tests.builders import NETUID, LogBuilder, decided_api_log

VALS = ["val-A", "val-B", "val-C"]
MINERS = ["m1", "m2", "m3", "m4"]
INTERVAL = 10
LENGTH = DEFAULT.epoch.length


def _network(tasks: int) -> LogBuilder:
    b = LogBuilder()
    for v in VALS:
        b.allowlist(v, VALS, interval=INTERVAL, block=1)
    b.metagraph("val-A", ["owner", *MINERS], block=2)
    for uid, m in enumerate(MINERS, start=1):
        b.checked("val-A", m, uid=uid, block=3, commit_block=uid)
    for task in range(10, 10 + tasks):
        v = VALS[task % 3]
        b.opened(v, task, block=task * INTERVAL + 1, interval=INTERVAL, miners=MINERS)
        for i, m in enumerate(MINERS):
            b.verdict(v, task, m, (task + i) % (i + 2) == 0, block=task * INTERVAL + 3)
        if task % 7 == 0:  # a second word, and a judge failure
            b.verdict(v, task, MINERS[0], task % 2 == 0, block=task * INTERVAL + 6, key=f"again/{task}")
            b.judge_failed(v, task, MINERS[1], block=task * INTERVAL + 7)
    return b


def _slow_refresh(state: ApiState) -> None:
    """Every row through `ApiState.apply`, as the API folded before the inline bulk path."""
    newest = state.log.newest_row("task_opened")
    if newest is not None:
        state.task_floor = max(state.task_floor, state._task_id(newest) - state.keep_tasks + 1)
    for n, (row, at) in enumerate(state.log.stamped_rows(after=state.last_seq), start=1):
        state.apply(row.seq, at, row)
        if n % 50_000 == 0:
            state._bound()
    state._bound()


def _log(tmp_path: Path) -> EventLog:
    return decided_api_log(_network(240), tmp_path, range(3, 14), own="val-A", length=LENGTH)[0]


def test_the_api_cold_start_ends_in_the_state_of_a_row_by_row_fold(tmp_path: Path) -> None:
    api_log = _log(tmp_path)
    fast = ApiState(api_log, own="api", consensus=DEFAULT, keep_tasks=40, keep_decisions=5)
    slow = ApiState(api_log, own="api", consensus=DEFAULT, keep_tasks=40, keep_decisions=5)
    fast.refresh()
    _slow_refresh(slow)
    plain = msgspec.to_builtins
    assert fast.last_seq == slow.last_seq == api_log.last_seq()
    assert plain(fast.origins) == plain(slow.origins)
    assert plain(fast.tasks) == plain(slow.tasks) and len(fast.tasks) == 40
    assert list(fast.samples) == list(slow.samples) and len(fast.samples) == len(slow.samples)
    assert fast.task_floor == slow.task_floor > 10
    assert plain(fast._shared) == plain(slow._shared)
    assert {o: plain(f.state) for o, f in fast._folds.items()} == {o: plain(f.state) for o, f in slow._folds.items()}
    assert plain(fast.decisions) == plain(slow.decisions)
    # The newest decision is served whole: the one the validator recorded, rates and all.
    recorded = decisions.latest(api_log, origin="val-A")
    assert recorded is not None and recorded.body.aggregates and recorded.body.aggregates[0].rates
    for state in (fast, slow):
        newest = state.latest_decision("val-A")
        assert newest is not None and newest[3] == recorded.body
        decided = state.decision("val-A")
        assert decided is not None and decided.reproduced
    assert fast.decision("val-A") == slow.decision("val-A")
    api_log.close()


def _lead_only_by_sort(d):  # type: ignore[no-untyped-def]
    """The lead history's stripping as first written: a stable sort of the eligible by rate."""
    from fractions import Fraction

    eligible = sorted((a for a in d.aggregates if a.eligible), key=lambda a: -Fraction(a.avg_rate))
    win = next((a for a in d.aggregates if a.hotkey == d.winner), None)
    other = next((a for a in eligible if a.hotkey != d.winner), None)
    kept = tuple(msgspec.structs.replace(a, rates=()) for a in (win, other) if a is not None)
    return msgspec.structs.replace(d, aggregates=kept, frontier=(), validators=(), active=(),
                                   window=(d.window[0], d.window[-1]) if d.window else ())


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["1/2", "2/4", "1/3", "0", "1", "3/5", "0.6", "2/3", "07/10"]),
                               st.booleans(), st.sampled_from(MINERS + ["m5", "m6"])), max_size=12),
       winner=st.sampled_from(["", *MINERS]))
def test_the_lead_history_keeps_the_winner_and_the_best_other_eligible(rows, winner) -> None:  # type: ignore[no-untyped-def]
    """Ties keep the decision's order; unreduced and decimal rates compare by value."""
    from leoma.api.state import _lead_only
    from leoma.log.events import EpochScored, MinerAggregate, ValidatorRate

    aggregates = tuple(MinerAggregate(hotkey=h, avg_rate=r, eligible=e, rank=i,
                                      rates=(ValidatorRate(validator="val-A", passed=1, evaluated=2),))
                       for i, (r, e, h) in enumerate(rows))
    d = EpochScored(epoch=3, netuid=NETUID, consensus_digest="x", frontier=(),
                    winner=winner, window=(1, 2, 3), aggregates=aggregates)
    assert _lead_only(d) == _lead_only_by_sort(d)


def test_the_api_checks_a_decisions_parts_as_join_lean_does(tmp_path: Path) -> None:
    """Heads checked in place give the lean read's lead entry; an edited, swapped or missing
    part is refused by both."""
    from leoma.api.state import _lead_of_heads, _lead_only
    from leoma.log.decisions import checked_heads

    api_log = _log(tmp_path)
    recorded = decisions.latest(api_log, origin="val-A", detail=False)
    assert recorded is not None and recorded.body.details
    small = recorded.body
    parts = [(decisions.detail_key(small.epoch, i), api_log.body_of("val-A", decisions.detail_key(small.epoch, i)))
             for i in range(len(small.details))]
    lean = decisions.join_lean(small, parts)  # type: ignore[arg-type]
    heads = checked_heads(small, parts)  # type: ignore[arg-type]
    assert lean is not None and heads is not None
    assert [h.hotkey for h in heads] == [a.hotkey for a in lean[0].aggregates]
    assert _lead_of_heads(small, heads) == _lead_only(lean[0])
    key, data = parts[0]
    edited = data.replace(b'"rank":1', b'"rank":2')  # type: ignore[union-attr]
    assert edited != data
    for bad in ([(key, edited), *parts[1:]], parts[:-1] if len(parts) > 1 else [],
                list(reversed(parts)) if len(parts) > 1 else [(key, data + b" ")]):
        assert decisions.join_lean(small, bad) is None  # type: ignore[arg-type]
        assert checked_heads(small, bad) is None  # type: ignore[arg-type]
    # The aggregates hash is checked too: a decision naming another one is refused.
    other = msgspec.structs.replace(small, aggregates_hash="0" * 64)
    assert decisions.join_lean(other, parts) is None and checked_heads(other, parts) is None  # type: ignore[arg-type]
    api_log.close()


def _hostile_decisions_log(tmp_path: Path) -> EventLog:
    """val-A decides epochs 3..13; its epoch 10 names a part it never appended, its epoch 12
    lists a digest its part does not hash to, and its epoch 13 (the newest) has parts that hash
    right but do not reproduce its aggregates_hash."""
    def stored(epoch, small, parts):  # type: ignore[no-untyped-def]
        if epoch == 10:
            small = msgspec.structs.replace(small, details=(*small.details, "0" * 64))
        if epoch == 12:
            first = parts[0]
            parts = (msgspec.structs.replace(first, aggregates=tuple(reversed(first.aggregates))), *parts[1:])
        if epoch == 13:
            small = msgspec.structs.replace(small, aggregates_hash="0" * 64)
        return small, parts

    return decided_api_log(_network(240), tmp_path, range(3, 14), own="val-A", length=LENGTH, stored=stored)[0]


def test_a_decision_whose_detail_does_not_check_out_is_never_shown(tmp_path: Path) -> None:
    """Folding counts a decision's parts; its detail is read back by key where it is served and
    checked as `join` checks it, and a decision whose detail does not join is dropped there."""
    from leoma.api.state import _lead_only

    api_log = _hostile_decisions_log(tmp_path)
    state = ApiState(api_log, own="api", consensus=DEFAULT)
    state.refresh()
    # Epoch 10 names a part the log does not hold: a read by key says which, and the API refuses
    # the decision as it is folded.
    small10 = decisions.find(api_log, 10, origin="val-A", detail=False)
    assert small10 is not None and len(small10.body.details) == 2
    parts, missing = decisions.stored_parts(api_log, "val-A", small10.body)
    assert missing == "epoch/10/detail/1" and [key for key, _ in parts] == ["epoch/10/detail/0"]
    with pytest.raises(LogError, match="holds epoch 10's decision but not epoch/10/detail/1"):
        decisions.find(api_log, 10, origin="val-A")
    # The agreement
    # strip reads the other decisions' small bodies (signed winner and weights) as they are.
    assert [d[3].epoch for d in state.decisions["val-A"]] == [*range(3, 10), 11, 12, 13]
    # The agreement views read the newest small body as signed, and no detail.
    from leoma.api import views

    assert [(r["validator_hotkey"], r["epoch"]) for r in views.epochs(state)["validators"]] == [("val-A", 13)]
    assert [d[3].epoch for d in state.decisions["val-A"]] == [*range(3, 10), 11, 12, 13]
    # Epoch 13 hashes right but does not join, nor does epoch 12's altered part: asked for, the
    # newest is epoch 11, whole, and the two leave the history.
    newest = state.latest_decision("val-A")
    recorded = decisions.find(api_log, 11, origin="val-A")
    assert newest is not None and recorded is not None and newest[3] == recorded.body
    assert newest[3].aggregates and newest[3].aggregates[0].rates
    assert [d[3].epoch for d in state.decisions["val-A"]] == [*range(3, 10), 11]
    # The lead history reads each kept decision's winner and runner-up from its detail.
    leads = state.lead_decisions("val-A")
    assert [d[3].epoch for d in leads] == [*range(3, 10), 11]
    for _, _, _, lead in leads:
        whole = decisions.find(api_log, lead.epoch, origin="val-A")
        assert whole is not None and lead == _lead_only(whole.body) and lead.aggregates
    assert state.lead_decisions("val-A") == leads  # read once, then served from memory
    api_log.close()


def test_the_lead_history_drops_a_decision_whose_detail_does_not_join(tmp_path: Path) -> None:
    """Asked for before the newest decision is, the lead history drops epochs 12 and 13 on its own."""
    api_log = _hostile_decisions_log(tmp_path)
    state = ApiState(api_log, own="api", consensus=DEFAULT)
    state.refresh()
    assert [d[3].epoch for d in state.lead_decisions("val-A")] == [*range(3, 10), 11]
    assert [d[3].epoch for d in state.decisions["val-A"]] == [*range(3, 10), 11]
    api_log.close()


def test_the_api_says_how_far_its_log_is_from_the_recorded_decisions_frontier(tmp_path: Path) -> None:
    """A difference from a recorded decision can come from events on either side of its frontier:
    the API counts the events it holds past it and those of it it does not hold yet."""
    api_log = _log(tmp_path)
    recorded = decisions.latest(api_log, origin="val-A", detail=False)
    assert recorded is not None
    heads = {f.origin: f.origin_seq for f in recorded.body.frontier}
    assert set(heads) == set(VALS)
    state = ApiState(api_log, own="api", consensus=DEFAULT)
    state.refresh()
    whole = state.decision("val-A")
    assert whole is not None and whole.reproduced and whole.short_of_frontier == 0
    # What the validator appended after reading its frontier: the decision's own parts and body.
    assert whole.past_frontier == len(recorded.body.details) + 1
    # An API that has not yet imported val-B's last three events of that frontier, nor any of val-C.
    short_log = EventLog(tmp_path / "short.db", own="api")
    short_log.import_events([s.event for s in api_log.events() if s.event.origin != "val-C" and (
        s.event.origin != "val-B" or s.event.origin_seq <= heads["val-B"] - 3)])
    behind = ApiState(short_log, own="api", consensus=DEFAULT)
    behind.refresh()
    lagging = behind.decision("val-A")
    assert lagging is not None and lagging.short_of_frontier == 3 + heads["val-C"]
    assert lagging.past_frontier == whole.past_frontier
    short_log.close()
    api_log.close()
