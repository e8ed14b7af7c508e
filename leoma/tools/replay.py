"""Re-derive recorded decisions from the events they were made from, and compare.

`replay_epoch(log, recorded)` reads exactly the events up to the recorded frontier, in place
from the log (read-only is enough): for every origin the frontier names, the stored event at the
frontier's `origin_seq` must carry the frontier's hash (the chain below it was verified when it
was appended or imported; `leoma verify` re-walks it), and only rows at or below it are read.
It runs the same pure decision (`projections.epoch.EpochFold`) and diffs the result field by
field against the `epoch_scored` event and its detail. An empty diff means "reproduced".

`replay_all` replays many decisions in one pass per origin, in epoch order: one fold, fed the
rows each successive frontier adds, decides each epoch in turn and is pruned as the weight
setter prunes it, so the cost is about one cold decision, not one per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from leoma.errors import LogError
from leoma.log import decisions
from leoma.log.consensus import Consensus, consensus_for
from leoma.log.decisions import Recorded
from leoma.log.eventlog import EventLog, Row, bulk_fold
from leoma.log.events import EpochScored
from projections.epoch import KINDS, EpochFold, StatePruned

__all__ = ["Recorded", "Difference", "ReplayResult", "recorded_epochs", "find_epoch", "rows_at_frontier",
           "diff", "replay_epoch", "replay_all", "download_published", "replay_anchored"]


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


def recorded_epochs(log: EventLog, *, origin: str | None = None, detail: bool = True) -> Iterator[Recorded]:
    """Every `epoch_scored` event in the log (of `origin`, or of every origin), with its detail.

    Without `detail` the aggregates of v2 decisions are not read (replay compares their hash).
    """
    return decisions.recorded(log, origin=origin, detail=detail)


def find_epoch(log: EventLog, epoch: int, *, origin: str | None = None) -> Recorded:
    """The recorded decision for `epoch` (the log's own origin's unless `origin` says otherwise)."""
    found = decisions.find(log, epoch, origin=origin)
    if found is None:
        raise LogError(f"no epoch_scored event for epoch {epoch} in {log.path}" + (f" by {origin}" if origin else ""))
    return found


_PAIRS_PER_QUERY = 400
"""`(origin, origin_seq)` pairs looked up per statement (two variables each)."""


def _positions(log: EventLog, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
    """The local `seq` and hash of each stored `(origin, origin_seq)` in `wanted` (absent ones are
    left out), in one statement per few hundred pairs: one index step each, as `position` takes."""
    names = log.origin_names()
    ids = {name: oid for oid, name in names.items()}
    pairs = sorted({(ids[o], s) for o, s in wanted if s > 0 and o in ids})
    out: dict[tuple[str, int], tuple[int, str]] = {}
    for start in range(0, len(pairs), _PAIRS_PER_QUERY):
        part = pairs[start:start + _PAIRS_PER_QUERY]
        sql = ("WITH f(oid, oseq) AS (VALUES " + ",".join(["(?,?)"] * len(part)) + ") SELECT e.origin_id, "
               "e.origin_seq, e.seq, e.hash FROM f CROSS JOIN events e ON e.origin_id = f.oid AND e.origin_seq = f.oseq")
        for oid, oseq, seq, digest in log.conn.execute(sql, [x for pair in part for x in pair]):
            out[(names[oid], oseq)] = (seq, digest.hex())
    return out


def _bounds(log: EventLog, recorded: Recorded,
            found: dict[tuple[str, int], tuple[int, str]] | None = None) -> tuple[dict[str, int], int]:
    """Each frontier origin's last `origin_seq`, and the highest local seq among them (checked).

    `found` holds the frontier's positions when the caller looked them up already (`_positions`).
    """
    frontier = recorded.body.frontier
    if found is None:
        found = _positions(log, ((e.origin, e.origin_seq) for e in frontier))
    seqs: dict[str, int] = {}
    until = 0
    for entry in frontier:
        at = found.get((entry.origin, entry.origin_seq)) if entry.origin_seq > 0 else (0, "")
        if at is None:
            held = log.head(entry.origin).origin_seq
            raise LogError(
                f"the log holds only {held} events of {entry.origin[:12]}…, the decision read "
                f"{entry.origin_seq}: import the rest (leoma mirror pull) before replaying"
            )
        if entry.origin_seq > 0 and at[1] != entry.hash:
            raise LogError(
                f"{entry.origin[:12]}… #{entry.origin_seq} hash differs from the frontier the decision "
                "recorded: this log's history is not the one that was scored"
            )
        seqs[entry.origin] = entry.origin_seq
        until = max(until, at[0])
    return seqs, until


def rows_at_frontier(log: EventLog, recorded: Recorded, scratch_dir: Path | None = None) -> Iterator[Row]:
    """The decision's input rows, read in place: exactly the frontier's events of the kinds it reads.

    `scratch_dir` is accepted for compatibility and unused (nothing is copied any more).
    """
    seqs, until = _bounds(log, recorded)
    if until == 0:
        return
    for row in log.rows(kinds=KINDS, until_seq=until):
        if row.origin_seq <= seqs.get(row.origin, 0):
            yield row


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


_V2_FIELDS = ("keeps_epoch", "miners", "aggregates_hash", "details")
_FIELDS = tuple(f.name for f in msgspec.structs.fields(EpochScored))


def diff(recorded: EpochScored, replayed: EpochScored, *, v: int = 2) -> list[Difference]:
    """Field-by-field differences; aggregates are compared per miner.

    `replayed` is compared in its stored form (with the detail hashes). A v1 decision had no
    detail, hash or fail-closed fields: those are not compared for it.
    """
    if not replayed.details:
        # The split is deterministic: equal aggregates give equal parts, so the parts are only
        # re-encoded when the aggregates differ (one encoding of the tuple otherwise).
        digest = decisions.aggregates_hash(replayed.aggregates)
        if recorded.details and digest == recorded.aggregates_hash:
            replayed = msgspec.structs.replace(replayed, miners=len(replayed.aggregates), aggregates_hash=digest,
                                               details=recorded.details)
        else:
            replayed = decisions.sealed(replayed)
    # A decision read without its detail (`recorded.details` but no aggregates) is compared
    # through `aggregates_hash` and `details`; the caller reloads it to name the miners.
    lean = bool(recorded.details) and not recorded.aggregates
    out: list[Difference] = []
    for name in _FIELDS:
        if (v < 2 and name in _V2_FIELDS) or (lean and name == "aggregates"):
            continue
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


def _result(log: EventLog, recorded: Recorded, events: int, again: EpochScored) -> ReplayResult:
    found = diff(recorded.body, again, v=recorded.v)
    if found and recorded.body.details and not recorded.body.aggregates:
        full = decisions.find(log, recorded.body.epoch, origin=recorded.origin)
        if full is not None and full.origin_seq == recorded.origin_seq:
            found = diff(full.body, again, v=recorded.v)
    return ReplayResult(recorded.origin, recorded.body.epoch, recorded.block, events, tuple(found))


def _digest_differs(recorded: Recorded, consensus: Consensus) -> ReplayResult | None:
    if consensus.digest == recorded.body.consensus_digest:
        return None
    return ReplayResult(recorded.origin, recorded.body.epoch, recorded.block, 0, (
        Difference("consensus_digest", recorded.body.consensus_digest, consensus.digest),
    ))


def _decide(fold: EpochFold, recorded: Recorded, consensus: Consensus) -> EpochScored:
    body = recorded.body
    # The decision is made for the epoch's boundary block, which the envelope records.
    return fold.decide(body.epoch, recorded.block, body.netuid, consensus, body.frontier)


def replay_epoch(log: EventLog, recorded: Recorded, *, consensus: Consensus | None = None,
                 scratch_dir: Path | None = None) -> ReplayResult:
    """Recompute `recorded` from its frontier's events (read in place) and compare."""
    if consensus is None:
        consensus = consensus_for(log, recorded.body.consensus_digest)
    differs = _digest_differs(recorded, consensus)
    if differs is not None:
        return differs
    if consensus.anchors.enabled:
        return replay_anchored(log, recorded, consensus)
    fold = EpochFold(recorded.origin)
    seqs, until = _bounds(log, recorded)
    pending: list[tuple] = []
    n = _feed(fold, log, seqs, 0, until, pending)
    return _result(log, recorded, n, _decide(fold, recorded, consensus))


def replay_anchored(log: EventLog, recorded: Recorded, consensus: Consensus) -> ReplayResult:
    """Replay a decision made under the anchored rule (`[anchors] enabled`): from the anchors its
    maker recorded (`anchors_observed`), the anchored events of every origin, the view origin's
    observations and the no-backdating rule (`leoma.services.anchored`). A decision whose
    frontier is not what the anchors fixed, or whose anchored events the log cannot supply,
    does not reproduce."""
    from leoma.services.anchored import Held, replay_anchored as again

    body = recorded.body
    out = again(log, body.epoch, recorded.block, body.netuid, consensus, recorded.origin)
    if out is None:
        return ReplayResult(recorded.origin, body.epoch, recorded.block, 0, (
            Difference("anchors", "a decision under the anchored rule", "no anchors_observed recorded for its epoch"),))
    if isinstance(out, Held):
        return ReplayResult(recorded.origin, body.epoch, recorded.block, 0, (
            Difference("anchors", f"decided on {out.peer[:12]}…'s events up to #{out.anchored_size}",
                       f"this log holds {out.reason} (#{out.local_size})"),))
    n = sum(f.origin_seq for f in out.frontier)
    return _result(log, recorded, n, out)


def _exact(log: EventLog, seqs: dict[str, int], until: int, origins: Iterable[str],
           found: dict[tuple[str, int], tuple[int, str]] | None = None) -> bool:
    """Whether the rows up to local `until` are exactly the frontier `seqs` (one index step per origin).

    `found` holds the positions of each origin's next event when the caller looked them up already.
    """
    origins = list(origins)
    nexts = [(origin, seqs.get(origin, 0) + 1) for origin in origins]
    if found is None:
        found = _positions(log, nexts)
    for pair in nexts:
        after = found.get(pair)
        if after is not None and after[0] <= until:
            return False
    return True


def _feed(fold: EpochFold, log: EventLog, seqs: dict[str, int], after: int, until: int, pending: list[tuple],
          exact: bool | None = None) -> int:
    """Apply the rows in `(after, until]` that the frontier `seqs` covers; keep the others in `pending`.

    When every origin's head at `until` is exactly its frontier entry (a decision the weight
    setter made: its frontier is the log's heads), every row up to `until` is covered and the
    rows go to the fold without a per-row check. `exact` is that answer when the caller knows it.
    """
    if until <= after:
        return 0
    names = log.origin_names()
    before = fold.applied
    if exact is None:
        exact = _exact(log, seqs, until, names.values())
    if exact:
        fold.apply_raw(log.raw_rows(kinds=KINDS, after=after, until_seq=until), names)
        return fold.applied - before
    bound = {oid: seqs.get(name, 0) for oid, name in names.items()}

    def covered(rows):  # type: ignore[no-untyped-def]
        for r in rows:
            if r[2] <= bound.get(r[1], 0):
                yield r
            else:
                pending.append(r)

    fold.apply_raw(covered(log.raw_rows(kinds=KINDS, after=after, until_seq=until)), names)
    return fold.applied - before


def replay_all(log: EventLog, targets: Iterable[Recorded],
               consensus_for: Callable[[Recorded], Consensus]) -> list[ReplayResult]:
    """Replay every target: one pass over the log per origin, in epoch order (see the module docstring).

    Results come back in the order of `targets`.
    """
    with bulk_fold():
        return _replay_all(log, list(targets), consensus_for)


def _replay_all(log: EventLog, targets: list[Recorded],
                consensus_for: Callable[[Recorded], Consensus]) -> list[ReplayResult]:
    results: dict[int, ReplayResult] = {}
    by_origin: dict[str, list[int]] = {}
    for i, r in enumerate(targets):
        by_origin.setdefault(r.origin, []).append(i)
    for origin, indices in sorted(by_origin.items()):
        indices.sort(key=lambda i: (targets[i].body.epoch, targets[i].block, targets[i].origin_seq))
        fold, scanned, count = EpochFold(origin), 0, 0
        seen: dict[Any, Any] = {}
        pending: list[Any] = []
        for i in indices:
            recorded = targets[i]
            consensus = consensus_for(recorded)
            differs = _digest_differs(recorded, consensus)
            if differs is not None:
                results[i] = differs
                continue
            if consensus.anchors.enabled:
                results[i] = replay_anchored(log, recorded, consensus)
                continue
            # One lookup for the frontier's positions and each origin's next event (`_exact`).
            names = log.origin_names()
            frontier = [(e.origin, e.origin_seq) for e in recorded.body.frontier]
            after_frontier = {e.origin: e.origin_seq for e in recorded.body.frontier}
            nexts = [(o, after_frontier.get(o, 0) + 1) for o in names.values()]
            found = _positions(log, frontier + nexts)
            seqs, until = _bounds(log, recorded, found)
            if any(seqs.get(o, 0) < s for o, s in seen.items()) or recorded.block < fold.state.floor_block:
                results[i] = replay_epoch(log, recorded, consensus=consensus)
                continue
            ready = [r for r in pending if r[2] <= seqs.get(names[r[1]], 0)]
            pending = [r for r in pending if r[2] > seqs.get(names[r[1]], 0)]
            fold.apply_raw(ready, names)
            count += len(ready)
            if until > scanned:
                exact = _exact(log, seqs, until, names.values(), found)
                count += _feed(fold, log, seqs, scanned, until, pending, exact)
                scanned = until
            seen = seqs
            try:
                again = _decide(fold, recorded, consensus)
            except StatePruned:
                results[i] = replay_epoch(log, recorded, consensus=consensus)
                continue
            results[i] = _result(log, recorded, count, again)
            fold.prune(recorded.block, consensus, after_decide=True)  # nothing applied since `_decide`
    return [results[i] for i in range(len(targets))]


async def download_published(bucket_url: str, hotkey: str, db_path: str, *, peers: Sequence[Any] = ()) -> int:
    """Rebuild a validator's decisions' inputs from public mirrors into a fresh log at `db_path`.

    The validator's own chain comes from `bucket_url`; every other origin its decisions read
    (their frontiers) comes from the same bucket when it holds that origin's log, else from
    that origin's entry in `peers` (`leoma.mirror.peers.PeerEntry`, as `PEER_VALIDATORS` gives them). Every checkpoint signature, segment and chain is verified on the way.
    Returns how many events were imported.
    """
    from leoma.adapters.storage import open_store
    from leoma.errors import MirrorError
    from leoma.mirror.peers import peer_store
    from leoma.mirror.segments import read_published

    stores: dict[str, Any] = {bucket_url: open_store(bucket_url)}
    by_hotkey = {p.hotkey: p for p in peers}

    def store_for(url: str) -> Any:
        if url not in stores:
            stores[url] = peer_store(by_hotkey[url])
        return stores[url]

    async def chain_of(origin: str, url: str, upto: int | None) -> list:  # type: ignore[type-arg]
        try:  # either mirror layout, every object verified (leoma.mirror.segments.read_published)
            cp, events = await read_published(store_for(url), origin, upto)
        except MirrorError as exc:
            raise LogError(f"the published log of {origin[:12]}… in {url} does not verify: {exc}") from None
        if cp is None:
            raise LogError(f"no published log of {origin[:12]}… in {url}")
        if upto is not None and upto > cp.size:
            raise LogError(f"{origin[:12]}… has published {cp.size} events in {url}; the decision read {upto}")
        return events

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
