"""Decisions stored small: `epoch_scored` v2 plus `epoch_detail` parts, joined back by key."""

from __future__ import annotations

import pathlib

import msgspec
import pytest

from leoma.errors import LogError
from leoma.log import decisions
from leoma.log.eventlog import EventLog
from leoma.log.events import (
    MAX_BODY_BYTES,
    EpochScored,
    FrontierEntry,
    MinerAggregate,
    ValidatorRate,
    WeightEntry,
    decode_event,
    encode_body,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _big(validators: int = 64, miners: int = 256, epoch: int = 7) -> EpochScored:
    vals = tuple(f"5V{i:046d}" for i in range(validators))
    aggs = tuple(
        MinerAggregate(hotkey=f"5M{m:046d}", uid=m + 1, commit_block=m * 3,
                       rates=tuple(ValidatorRate(validator=v, passed=(m + i) % 3, evaluated=3) for i, v in enumerate(vals)),
                       passed=validators, evaluated=3 * validators, tasks=100, avg_rate=f"{m % 7}/9",
                       completeness="1", eligible=m % 5 != 0, reason="" if m % 5 else "too few validators: 1 < 32",
                       rank=m + 1)
        for m in range(miners))
    return EpochScored(epoch=epoch, netuid=1, consensus_digest="c" * 64,
                       frontier=tuple(FrontierEntry(origin=v, origin_seq=1000 + i, hash=f"{i:064x}") for i, v in enumerate(vals)),
                       interval=10, validators=vals, window=tuple(range(100)), active=vals, aggregates=aggs,
                       winner=aggs[1].hotkey, winner_uid=2, weights=(WeightEntry(uid=2, weight=65535),))


def test_a_real_size_decision_does_not_fit_in_one_body_but_its_parts_do() -> None:
    full = _big()
    assert len(msgspec.json.encode(full)) > MAX_BODY_BYTES
    small, parts = decisions.split(full)
    assert len(parts) > 1 and small.miners == 256 and not small.aggregates
    for body in (small, *parts):
        assert len(encode_body(body)) <= MAX_BODY_BYTES  # encode_body refuses anything larger
    joined = decisions.join(small, [(decisions.detail_key(full.epoch, p.part), encode_body(p)) for p in parts])
    assert joined.aggregates == full.aggregates
    assert joined == decisions.sealed(full)


def test_a_detail_part_that_was_swapped_or_dropped_is_refused() -> None:
    small, parts = decisions.split(_big(validators=16))
    data = [(decisions.detail_key(small.epoch, p.part), encode_body(p)) for p in parts]
    with pytest.raises(LogError, match="does not hash"):
        decisions.join(small, [data[1], data[0], *data[2:]])
    with pytest.raises(LogError, match="incomplete"):
        decisions.join(small, data[:-1])
    forged = msgspec.structs.replace(small, aggregates_hash="0" * 64)
    with pytest.raises(LogError, match="aggregates_hash"):
        decisions.join(forged, data)


def test_appended_decisions_are_read_back_by_key_and_by_index(tmp_path: pathlib.Path) -> None:
    log = EventLog(tmp_path / "l.db", own="5Own")
    for epoch in (3, 4, 5):
        log.append_many(decisions.drafts(_big(validators=8, miners=64, epoch=epoch), block=epoch * 180))
    newest = decisions.latest(log, origin="5Own")
    assert newest is not None and newest.body.epoch == 5 and len(newest.body.aggregates) == 64
    assert decisions.find(log, 4).body.aggregates == _big(validators=8, miners=64, epoch=4).aggregates  # type: ignore[union-attr]
    lean = decisions.find(log, 4, detail=False)
    assert lean is not None and not lean.body.aggregates and lean.body.details
    assert [r.body.epoch for r in decisions.recorded(log)] == [3, 4, 5]
    assert decisions.find(log, 9) is None and decisions.latest(log, origin="5Nobody") is None
    log.close()


def test_v1_decision_with_inline_aggregates_still_reads() -> None:
    line = next(x for x in (FIXTURES / "events_v1.jsonl").read_bytes().splitlines() if b'"epoch_scored"' in x)
    event = decode_event(line)
    body = event.payload()
    assert isinstance(body, EpochScored) and event.v == 1 and body.aggregates and not body.details
    assert decisions.join(body, []) is body


def test_v2_fixture_joins_its_detail() -> None:
    events = [decode_event(x) for x in (FIXTURES / "events_v2.jsonl").read_bytes().splitlines()]
    scored = events[-1].payload()
    assert isinstance(scored, EpochScored) and events[-1].v == 2 and len(scored.details) == 2
    joined = decisions.join(scored, [(e.key, bytes(e.body)) for e in events[:-1]])
    assert len(joined.aggregates) == scored.miners == 3


def test_a_lean_read_is_the_full_read_without_the_rates(tmp_path: pathlib.Path) -> None:
    """`detail="lean"` (get-rank, explain): the same aggregates but their rates, each one whole
    on request, under the same checks as `join` (a lean read of a bad detail falls back to it)."""
    log = EventLog(tmp_path / "l.db", own="5Own")
    for epoch in (3, 4):
        log.append_many(decisions.drafts(_big(validators=16, miners=200, epoch=epoch), block=epoch * 180))
    full = decisions.latest(log)
    lean = decisions.latest(log, detail="lean")
    assert full is not None and lean is not None and len(lean.raw) == 200
    assert lean.body.aggregates == tuple(msgspec.structs.replace(a, rates=()) for a in full.body.aggregates)
    assert msgspec.structs.replace(lean.body, aggregates=()) == msgspec.structs.replace(full.body, aggregates=())
    for a in full.body.aggregates:
        assert decisions.aggregate(lean, a.hotkey) == a == decisions.aggregate(full, a.hotkey)
    assert decisions.find(log, 3, detail="lean").body.epoch == 3  # type: ignore[union-attr]
    # The stored JSON of the aggregates is exactly what aggregates_hash was made of.
    small, parts = decisions.split(_big(validators=16, miners=200))
    data = [(decisions.detail_key(small.epoch, p.part), encode_body(p)) for p in parts]
    joined = decisions.join_lean(small, data)
    assert joined is not None and joined[0].aggregates_hash == decisions.aggregates_hash(decisions.join(small, data).aggregates)
    assert decisions.join_lean(small, [data[1], data[0], *data[2:]]) is None
    assert decisions.join_lean(small, data[:-1]) is None
    assert decisions.join_lean(msgspec.structs.replace(small, aggregates_hash="0" * 64), data) is None
    log.close()


def test_a_lean_read_of_a_forged_detail_says_what_join_says(tmp_path: pathlib.Path) -> None:
    log = EventLog(tmp_path / "l.db", own="5Own")
    small, parts = decisions.split(_big(validators=8, miners=64, epoch=5))
    forged = msgspec.structs.replace(small, aggregates_hash="0" * 64)
    from leoma.log.eventlog import Draft

    log.append_many([*(Draft(decisions.detail_key(5, p.part), 900, p) for p in parts),
                     Draft(decisions.scored_key(5), 900, forged)])
    with pytest.raises(LogError, match="aggregates_hash"):
        decisions.latest(log, detail="lean")
    log.close()


def test_get_rank_and_explain_show_the_full_decision(tmp_path: pathlib.Path) -> None:
    """The commands read the newest decision lean; what they print is the full decision's."""
    import json

    from click.testing import CliRunner

    from leoma.log.consensus import DEFAULT
    from leoma_cmd.main import cli

    log = EventLog(tmp_path / "l.db", own="5Own")
    for epoch in (3, 4):
        big = msgspec.structs.replace(_big(validators=16, miners=120, epoch=epoch), consensus_digest=DEFAULT.digest)
        log.append_many(decisions.drafts(big, block=epoch * 180))
    full = decisions.latest(log)
    assert full is not None
    log.close()
    runner = CliRunner()
    rank = runner.invoke(cli, ["get-rank", "--json", "--db", str(tmp_path / "l.db")])
    assert rank.exit_code == 0, rank.output
    shown = json.loads(rank.output)
    assert shown["epoch"] == 4 and [(r["miner_hotkey"], r["passed_count"], r["pass_rate"], r["eligible"], r["reason"])
                                    for r in shown["ranks"]] == [
        (a.hotkey, a.passed, a.avg_rate, a.eligible, a.reason) for a in full.body.aggregates]
    miner = full.body.aggregates[7]
    why = runner.invoke(cli, ["explain", miner.hotkey, "--json", "--db", str(tmp_path / "l.db")])
    assert why.exit_code == 0, why.output
    data = json.loads(why.output)
    assert data["rates"] == [{"validator": r.validator, "passed": r.passed, "evaluated": r.evaluated}
                             for r in miner.rates] and len(data["rates"]) == 16
    assert (data["rank"], data["avg_rate"], data["eligible"]) == (miner.rank, miner.avg_rate, miner.eligible)
