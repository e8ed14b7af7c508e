"""Decisions stored small: `epoch_scored` v2 plus `epoch_detail` parts, joined back by key."""

from __future__ import annotations

import pathlib

import msgspec
import pytest

from leoma import decisions
from leoma.errors import LogError
from leoma.events import (
    MAX_BODY_BYTES,
    EpochScored,
    FrontierEntry,
    MinerAggregate,
    ValidatorRate,
    WeightEntry,
    decode_event,
    encode_body,
)
from leoma.log import EventLog

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
