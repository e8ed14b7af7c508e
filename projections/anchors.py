"""Decisions fixed by the chain: which events an epoch's decision may read, and which tasks count.

Pure functions over `AnchorsObserved` bodies (what the chain's `CommitmentOf` held at each
epoch's cutoff block) and over what the local log holds; no clock, no I/O.

* `frontier(observed)`: for each allowlisted validator with an anchor, `(size, head)`: the
  decision reads exactly that origin's events `1..size`, whose last hash must be `head`.
* `missing(frontier, local)`: the first peer whose anchored events the local log cannot supply
  (fewer events, or another event at the anchored position): the validator holds, naming it.
* `view_origin(frontier, validators)`: whose own observations (allowlist, metagraph, miner
  commitments and checks) the decision reads: every decider must read the same ones, so it is
  the first validator in code-point order that anchored anything.
* `history(observations)` and `first_anchor(...)`: per origin, the anchors seen at each cutoff;
  the first one covering an event is the one with the lowest block among those of size >= its
  `origin_seq` (sizes only grow for an honest validator; a smaller one later changes nothing).
* `admit(...)`: the no-backdating rule: a `task_opened` counts only if its first anchor was
  committed by the end of the rotation slot its block claims plus the grace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from leoma.log.consensus import Consensus
from leoma.log.events import AnchorEntry, AnchorsObserved, EpochScored, FrontierEntry, LateTask
from projections.epoch import EpochFold

__all__ = ["Anchored", "frontier", "missing", "view_origin", "history", "first_anchor", "slot_deadline", "admit",
           "BEHIND", "FORKED", "NO_ANCHORS", "DIFFERS", "decide", "entry"]

BEHIND = "behind"
"""The local log holds fewer of the peer's events than its anchor covers (its bucket is slow or down)."""
FORKED = "head_mismatch"
"""The local log holds the anchored position with another hash: the anchor names a head its bucket
does not serve."""
NO_ANCHORS = "no_anchors"
"""No allowlisted validator has anchored anything yet."""
DIFFERS = "anchors_differ"
"""The view origin recorded earlier anchors that differ from this validator's own observation."""


class Anchored(NamedTuple):
    size: int
    head: str
    block: int


def frontier(observed: AnchorsObserved) -> dict[str, Anchored]:
    """Each allowlisted validator's anchored `(size, head, block)` at the cutoff, sorted by origin
    (validators without an anchor are left out: none of their events count)."""
    allowed = set(observed.validators)
    out: dict[str, Anchored] = {}
    for a in sorted(observed.anchors, key=lambda a: a.origin):
        if a.origin in allowed and a.size > 0:
            out[a.origin] = Anchored(a.size, a.head, a.block)
    return out


def missing(anchored: Mapping[str, Anchored], local: Mapping[str, tuple[int, str | None]]) -> tuple[str, str, int, int] | None:
    """The first origin (code-point order) the local log cannot supply, as `(peer, reason,
    anchored size, local size)`; None when every anchored event is held.

    `local[origin]` is `(the local head's origin_seq, the local hash at the anchored size or None)`.
    """
    for origin in sorted(anchored):
        a = anchored[origin]
        have, hash_at = local.get(origin, (0, None))
        if have < a.size:
            return origin, BEHIND, a.size, have
        if hash_at != a.head:
            return origin, FORKED, a.size, have
    return None


def view_origin(anchored: Mapping[str, Anchored]) -> str | None:
    """Whose own observations the decision reads: the first anchored validator by code point."""
    return min(anchored) if anchored else None


def history(observations: Iterable[AnchorsObserved], *, upto_epoch: int | None = None) -> dict[str, list[tuple[int, int]]]:
    """origin -> sorted distinct `(block, size)` of every anchor seen at a cutoff (of epochs <= `upto_epoch`)."""
    seen: dict[str, set[tuple[int, int]]] = {}
    for obs in observations:
        if upto_epoch is not None and obs.epoch > upto_epoch:
            continue
        for a in obs.anchors:
            if a.size > 0:
                seen.setdefault(a.origin, set()).add((a.block, a.size))
    return {o: sorted(v) for o, v in sorted(seen.items())}


def first_anchor(entries: Sequence[tuple[int, int]], origin_seq: int) -> int | None:
    """The block of the first anchor (lowest block) whose size covers `origin_seq`, or None."""
    for block, size in entries:  # sorted by block
        if size >= origin_seq:
            return block
    return None


def slot_deadline(block: int, interval: int, grace: int) -> int:
    """The last block an anchor may land at for a task claiming `block`: its slot's end + grace."""
    return (block // max(1, interval) + 1) * max(1, interval) - 1 + grace


def admit(hist: Mapping[str, Sequence[tuple[int, int]]], origin: str, origin_seq: int, block: int,
          interval: int, grace: int) -> tuple[bool, int]:
    """Whether a `task_opened` (origin, origin_seq) claiming `block` counts, and its first anchor's
    block (-1 when no anchor covers it yet)."""
    first = first_anchor(hist.get(origin, ()), origin_seq)
    if first is None:
        return False, -1
    return first <= slot_deadline(block, interval, grace), first


def entry(origin: str, a: Anchored | None) -> AnchorEntry:
    """The `AnchorEntry` of an anchor (or of none)."""
    return AnchorEntry(origin=origin) if a is None else AnchorEntry(origin=origin, size=a.size, head=a.head, block=a.block)


def decide(fold: EpochFold, *, epoch: int, epoch_block: int, netuid: int, consensus: Consensus,
           anchored: Mapping[str, Anchored], hist: Mapping[str, Sequence[tuple[int, int]]]) -> EpochScored:
    """The anchored decision, from a fold (`projections.epoch.EpochFold`) that holds exactly the
    anchored events and reads the view origin's own observations.

    Sets the fold's no-backdating check (kept for its `prune`), decides with the anchored
    frontier, and reports the claims within reach of the window that were anchored too late.
    """
    allow = fold.allowlist_at(epoch_block)
    interval = allow.interval if allow is not None and allow.interval > 0 else consensus.rotation.interval
    grace = consensus.anchor_grace

    def counts(origin: str, origin_seq: int, block: int, _task_id: int) -> bool:
        return admit(hist, origin, origin_seq, block, interval, grace)[0]

    fold.admit = counts
    entries = [FrontierEntry(origin=o, origin_seq=a.size, hash=a.head) for o, a in sorted(anchored.items())]
    decision = fold.decide(epoch, epoch_block, netuid, consensus, entries)
    reach = min(decision.window) if decision.window else fold.state.floor_task
    late = tuple(LateTask(origin=o, task_id=t, block=b, anchored_at=admit(hist, o, seq, b, interval, grace)[1])
                 for (o, seq, b, t) in fold.refused_claims(epoch_block) if t >= reach)
    if not late:
        return decision
    return msgspec.structs.replace(decision, late_tasks=late)
