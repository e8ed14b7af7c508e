"""Re-derive recorded decisions from the events they were made from, and compare.

`replay_epoch(log, recorded)` copies exactly the events up to the recorded frontier into a
scratch log (re-verifying every hash on the way: `import_events` refuses anything that does
not chain), runs the same pure decision (`projections.epoch.score_epoch`) and diffs the result
field by field against the `epoch_scored` event. An empty diff means "reproduced".
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from leoma.consensus import Consensus, consensus_for
from leoma.errors import LogError
from leoma.events import EpochScored, decode_body
from leoma.log import EventLog, Row
from projections.epoch import KINDS, score_epoch


class Recorded(msgspec.Struct, frozen=True):
    """An `epoch_scored` event as found in a log."""

    origin: str
    origin_seq: int
    block: int
    body: EpochScored


class Difference(msgspec.Struct, frozen=True):
    """One field that did not reproduce."""

    field: str
    recorded: Any
    replayed: Any


class ReplayResult(msgspec.Struct, frozen=True):
    """The outcome of replaying one epoch."""

    origin: str
    epoch: int
    block: int
    events: int
    differences: tuple[Difference, ...]
    chain_weights: tuple[tuple[int, int], ...] | None = None
    chain_note: str = ""

    @property
    def reproduced(self) -> bool:
        return not self.differences


def recorded_epochs(log: EventLog, *, origin: str | None = None) -> Iterator[Recorded]:
    """Every `epoch_scored` event in the log (of `origin`, or of every origin)."""
    for row in log.rows(kinds=["epoch_scored"], origin=origin):
        body = decode_body(row.body, row.v)
        assert isinstance(body, EpochScored)
        yield Recorded(row.origin, row.origin_seq, row.block, body)


def find_epoch(log: EventLog, epoch: int, *, origin: str | None = None) -> Recorded:
    """The recorded decision for `epoch` (the log's own origin's unless `origin` says otherwise)."""
    found = [r for r in recorded_epochs(log, origin=origin) if r.body.epoch == epoch]
    if not found:
        raise LogError(f"no epoch_scored event for epoch {epoch} in {log.path}" + (f" by {origin}" if origin else ""))
    return found[-1]


def rows_at_frontier(log: EventLog, recorded: Recorded, scratch_dir: Path) -> list[Row]:
    """The decision's input rows, rebuilt in a scratch log from exactly the frontier's events."""
    scratch = EventLog(scratch_dir / f"replay-{recorded.origin[:8]}-{recorded.body.epoch}.db")
    try:
        for entry in recorded.body.frontier:
            events = list(log.chain(entry.origin, limit=entry.origin_seq))
            if len(events) < entry.origin_seq:
                raise LogError(
                    f"the log holds only {len(events)} events of {entry.origin[:12]}…, the decision read "
                    f"{entry.origin_seq}: import the rest (leoma mirror pull) before replaying"
                )
            if events and events[-1].hash != entry.hash:
                raise LogError(
                    f"{entry.origin[:12]}… #{entry.origin_seq} hash differs from the frontier the decision "
                    "recorded: this log's history is not the one that was scored"
                )
            scratch.import_events(events)
        return list(scratch.rows(kinds=KINDS))
    finally:
        scratch.close()


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


def diff(recorded: EpochScored, replayed: EpochScored) -> list[Difference]:
    """Field-by-field differences; aggregates are compared per miner."""
    out: list[Difference] = []
    for field in msgspec.structs.fields(EpochScored):
        name = field.name
        a, b = getattr(recorded, name), getattr(replayed, name)
        if a == b:
            continue
        if name == "aggregates":
            left = {x.hotkey: x for x in a}
            right = {x.hotkey: x for x in b}
            for hotkey in sorted(set(left) | set(right)):
                if left.get(hotkey) != right.get(hotkey):
                    out.append(Difference(f"aggregates[{hotkey}]", _plain(left.get(hotkey)), _plain(right.get(hotkey))))
        else:
            out.append(Difference(name, _plain(a), _plain(b)))
    return out


def replay_epoch(log: EventLog, recorded: Recorded, *, consensus: Consensus | None = None,
                 scratch_dir: Path | None = None) -> ReplayResult:
    """Recompute `recorded` from its frontier's events and compare.

    Without `consensus`, the decision's own (by its digest: the log's `consensus_recorded`, or the
    packaged one); `UnknownConsensus` when the log does not hold it.
    """
    if consensus is None:
        consensus = consensus_for(log, recorded.body.consensus_digest)
    if consensus.digest != recorded.body.consensus_digest:
        return ReplayResult(recorded.origin, recorded.body.epoch, recorded.block, 0, (
            Difference("consensus_digest", recorded.body.consensus_digest, consensus.digest),
        ))
    with tempfile.TemporaryDirectory(dir=scratch_dir) as tmp:
        rows = rows_at_frontier(log, recorded, Path(tmp))
    body = recorded.body
    epoch_block = _epoch_block(recorded)
    again = score_epoch(rows, own=recorded.origin, epoch=body.epoch, epoch_block=epoch_block,
                        netuid=body.netuid, consensus=consensus, frontier=body.frontier)
    return ReplayResult(recorded.origin, body.epoch, recorded.block, len(rows), tuple(diff(body, again)))


def _epoch_block(recorded: Recorded) -> int:
    # The decision is made for the epoch's boundary block, which the envelope records.
    return recorded.block


async def download_published(bucket_url: str, hotkey: str, db_path: str, *, peers: Sequence[Any] = ()) -> int:
    """Rebuild a validator's decisions' inputs from public mirrors into a fresh log at `db_path`.

    The validator's own chain comes from `bucket_url`; every other origin its decisions read
    (their frontiers) comes from the same bucket when it holds that origin's log, else from
    that origin's entry in `peers` (`leoma.peers.PeerEntry`, as `PEER_VALIDATORS` gives them). Every checkpoint signature, segment and chain is verified on the way.
    Returns how many events were imported.
    """
    from leoma.mirror import DEFAULT_MAX_SEGMENT_BYTES, fetch_checkpoint, fetch_segment, segment_ranges
    from leoma.peers import peer_store
    from leoma.storage import open_store

    stores: dict[str, Any] = {bucket_url: open_store(bucket_url)}
    by_hotkey = {p.hotkey: p for p in peers}

    def store_for(url: str) -> Any:
        if url not in stores:
            stores[url] = peer_store(by_hotkey[url])
        return stores[url]

    async def chain_of(origin: str, url: str, upto: int | None) -> list:  # type: ignore[type-arg]
        store = store_for(url)
        cp = await fetch_checkpoint(store, origin)
        if cp is None:
            raise LogError(f"no published log of {origin[:12]}… in {url}")
        size = cp.size if upto is None else upto
        if size > cp.size:
            raise LogError(f"{origin[:12]}… has published {cp.size} events in {url}; the decision read {size}")
        events = []
        for first, last in segment_ranges(0, cp.size, cp.segment_size):
            if first > size:
                break
            events.extend(await fetch_segment(store, origin, first, last, DEFAULT_MAX_SEGMENT_BYTES))
        return [e for e in events if e.origin_seq <= size]

    log = EventLog(db_path)
    try:
        total = log.import_events(await chain_of(hotkey, bucket_url, None))
        needed: dict[str, int] = {}
        for recorded in recorded_epochs(log, origin=hotkey):
            for entry in recorded.body.frontier:
                if entry.origin != hotkey:
                    needed[entry.origin] = max(needed.get(entry.origin, 0), entry.origin_seq)
        for origin, upto in sorted(needed.items()):
            try:
                events = await chain_of(origin, bucket_url, upto)
            except LogError:
                if origin not in by_hotkey:
                    raise LogError(
                        f"the decisions read {origin[:12]}…'s events, which {bucket_url} does not hold: "
                        "name that validator's bucket with --peers (PEER_VALIDATORS JSON)"
                    ) from None
                events = await chain_of(origin, origin, upto)
            total += log.import_events(events)
    finally:
        log.close()
        for store in stores.values():
            await store.close()
    return total
