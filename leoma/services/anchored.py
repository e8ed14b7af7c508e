"""The anchored decision: decide epoch E on exactly the events the chain's anchors fix, or hold.

Used by the weight setter when `[anchors] enabled` (and by `leoma replay` to reproduce it):

1. the anchors of E (`anchors_observed`, the chain's `CommitmentOf` of every allowlisted
   validator at E's cutoff block) give each origin's anchored `(size, head)`;
2. if the local log cannot supply one of them (fewer events, or another hash at the anchored
   position) the validator **holds**: `Held` names the peer and why; nothing is decided;
3. otherwise the fold takes, per anchored origin, exactly its events `1..size` (resumed from
   its own checkpoint: sizes only grow, so each decision folds what the new anchors add), reads
   the view origin's observations (`projections.anchors.view_origin`) and decides with the
   no-backdating rule (`projections.anchors.decide`).

Every validator that decides reads the same events and the same view, so all decisions agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog
from leoma.log.events import AnchorsObserved, EpochScored, decode_body
from projections import anchors as pa
from projections.epoch import KINDS, EpochFold, StatePruned

__all__ = ["CHECKPOINT", "Held", "local_positions", "anchored_fold", "decide_anchored"]

CHECKPOINT = "projection/epoch_fold_anchored/v1"


class Held(msgspec.Struct, frozen=True, kw_only=True):
    """A decision not made: the local log lacks what `peer`'s anchor covers."""

    epoch: int
    peer: str
    reason: str
    anchored_size: int
    local_size: int


class _Saved(msgspec.Struct, kw_only=True):
    view: str
    applied: dict[str, int]
    fold: bytes


def local_positions(log_: EventLog, anchored: Mapping[str, pa.Anchored]) -> dict[str, tuple[int, str | None]]:
    """Per anchored origin: the local head's `origin_seq` and the local hash at the anchored size."""
    out: dict[str, tuple[int, str | None]] = {}
    for origin, a in anchored.items():
        have = log_.head(origin).origin_seq
        at = log_.position(origin, a.size) if have >= a.size else None
        out[origin] = (have, at[1] if at is not None else None)
    return out


def anchored_fold(log_: EventLog, view: str, anchored: Mapping[str, pa.Anchored], *,
                  fresh: bool = False) -> tuple[EpochFold, dict[str, int]]:
    """The fold of exactly the anchored events, resumed from its checkpoint unless `fresh`
    (or the checkpoint read another view, or more of an origin than it now anchors)."""
    saved = None if fresh else log_.get_state(CHECKPOINT)
    fold: EpochFold | None = None
    applied: dict[str, int] = {}
    if saved:
        try:
            got = msgspec.msgpack.decode(saved, type=_Saved)
            if got.view == view and all(anchored.get(o, pa.Anchored(0, "", 0)).size >= n for o, n in got.applied.items()):
                fold, applied = EpochFold.load(got.fold), dict(got.applied)
        except (msgspec.DecodeError, msgspec.ValidationError):
            fold = None
    if fold is None:
        fold, applied = EpochFold(view), {}
    names = log_.origin_names()
    oid_of = {name: oid for oid, name in names.items()}
    # Per origin, the local positions of its rows still to fold: (after its `start`, up to its `end`].
    # Within an origin local positions grow with origin_seq, so every row in (max start, min end]
    # is to be folded, whatever its origin (when every origin of the log is anchored): one scan
    # without a per-row check; the rest of each origin's range is read with the check.
    bounds: dict[int, tuple[int, int]] = {}
    spans: list[tuple[int, int]] = []
    for origin in sorted(anchored):
        start, end = applied.get(origin, 0), anchored[origin].size
        applied[origin] = max(start, end)
        if end <= start:
            continue
        lo = log_.position(origin, start)[0] if start else 0  # type: ignore[index]
        hi = log_.position(origin, end)
        assert hi is not None, "local_positions() is checked first"
        bounds[oid_of[origin]] = (start, end)
        spans.append((lo, hi[0]))
    if not spans:
        return fold, applied
    first, last = min(lo for lo, _ in spans), max(hi for _, hi in spans)
    fast_lo, fast_hi = max(lo for lo, _ in spans), min(hi for _, hi in spans)
    every = len(bounds) == len(names) and len(spans) == len(anchored)
    if not (every and fast_lo < fast_hi):
        fast_lo = fast_hi = first

    def checked(rows):  # type: ignore[no-untyped-def]
        for r in rows:
            b = bounds.get(r[1])
            if b is not None and b[0] < r[2] <= b[1]:
                yield r

    if first < fast_lo:
        fold.apply_raw(checked(log_.raw_rows(kinds=KINDS, after=first, until_seq=fast_lo)), names)
    if fast_lo < fast_hi:
        fold.apply_raw(log_.raw_rows(kinds=KINDS, after=fast_lo, until_seq=fast_hi), names)
    if fast_hi < last:
        fold.apply_raw(checked(log_.raw_rows(kinds=KINDS, after=fast_hi, until_seq=last)), names)
    return fold, applied


def view_history(log_: EventLog, view: str, upto: int, epoch: int) -> list[AnchorsObserved]:
    """The view origin's `anchors_observed` of epochs before `epoch` among its first `upto` events."""
    out = []
    for row in log_.rows(kinds=["anchors_observed"], origin=view):
        if row.origin_seq > upto:
            break
        body = decode_body(row.body, row.v)
        assert isinstance(body, AnchorsObserved)
        if body.epoch < epoch:
            out.append(body)
    return out


def decide_anchored(log_: EventLog, *, epoch: int, epoch_block: int, netuid: int, consensus: Consensus,
                    observed: AnchorsObserved, history: Sequence[AnchorsObserved] | None = None,
                    save: bool = True, fresh: bool = False) -> EpochScored | Held:
    """Epoch `epoch`'s anchored decision from the local log, or why this validator holds.

    The no-backdating rule reads the anchors seen at earlier cutoffs. Every decider must read
    the same ones, so they are the view origin's `anchors_observed` among its anchored events
    (plus `observed`, this epoch's, read from the chain by everyone alike); where this
    validator recorded its own observation of an epoch, the two must agree, else it holds
    (`anchors_differ`): the view recorded anchors the chain did not hold. `history` replaces
    them (a benchmark on a log without observations).
    """
    anchored = pa.frontier(observed)
    if not anchored:  # nobody anchored yet (the switch just went on): nothing is fixed, keep the weights
        return Held(epoch=epoch, peer="", reason=pa.NO_ANCHORS, anchored_size=0, local_size=0)
    gap = pa.missing(anchored, local_positions(log_, anchored))
    if gap is not None:
        peer, reason, size, have = gap
        return Held(epoch=epoch, peer=peer, reason=reason, anchored_size=size, local_size=have)
    view = pa.view_origin(anchored) or ""
    if history is None:
        earlier = view_history(log_, view, anchored[view].size, epoch)
        if log_.own and log_.own != view:
            from leoma.mirror.anchors import observations

            mine = {o.epoch: o for o in observations(log_)}
            for o in earlier:
                if o.epoch in mine and mine[o.epoch] != o:
                    return Held(epoch=epoch, peer=view, reason=pa.DIFFERS, anchored_size=anchored[view].size,
                                local_size=anchored[view].size)
        history = [*earlier, observed]
    hist = pa.history(history, upto_epoch=epoch)
    fold, applied = anchored_fold(log_, view, anchored, fresh=fresh)
    try:
        decision = pa.decide(fold, epoch=epoch, epoch_block=epoch_block, netuid=netuid, consensus=consensus,
                             anchored=anchored, hist=hist)
    except StatePruned:
        fold, applied = anchored_fold(log_, view, anchored, fresh=True)
        decision = pa.decide(fold, epoch=epoch, epoch_block=epoch_block, netuid=netuid, consensus=consensus,
                             anchored=anchored, hist=hist)
    if save:
        fold.prune(epoch_block, consensus)
        log_.set_state(CHECKPOINT, msgspec.msgpack.encode(_Saved(view=view, applied=applied, fold=fold.dump())))
    return decision


def replay_anchored(log_: EventLog, epoch: int, epoch_block: int, netuid: int, consensus: Consensus,
                    origin: str) -> EpochScored | Held | None:
    """`origin`'s anchored decision of `epoch` recomputed from scratch from `log_` (its recorded
    `anchors_observed` give the inputs); None when it recorded none for that epoch."""
    from leoma.mirror.anchors import observations

    found = [o for o in observations(log_, origin=origin) if o.epoch == epoch]
    if not found:
        return None
    return decide_anchored(log_, epoch=epoch, epoch_block=epoch_block, netuid=netuid, consensus=consensus,
                           observed=found[-1], save=False, fresh=True)


def explain(log_: EventLog, epoch: int, *, origin: str | None = None) -> list[dict[str, Any]]:
    """Per validator of epoch `epoch`'s anchors (as `origin`, default own, observed them): its
    anchored head, the block of its anchor, and whether the log shows it decided or held (why)."""
    from leoma.log import decisions
    from leoma.mirror.anchors import observations

    seen = [o for o in observations(log_, origin=origin) if o.epoch == epoch]
    if not seen:
        return []
    rows = []
    for a in sorted(seen[-1].anchors, key=lambda a: a.origin):
        held = [r for r in log_.rows(kinds=["epoch_held"], origin=a.origin)
                if r.key.startswith(f"epoch/{epoch}/held/")]
        decided = decisions.find(log_, epoch, origin=a.origin, detail=False) is not None
        why = ""
        if held and not decided:
            body = held[-1]
            from leoma.log.events import decode_body

            h = decode_body(body.body, body.v)
            why = f"{getattr(h, 'reason', '')} {getattr(h, 'peer', '')[:12]}"
        rows.append({"validator": a.origin, "anchored_size": a.size, "anchored_head": a.head,
                     "anchor_block": a.block,
                     "status": "decided" if decided else ("held: " + why.strip() if held else "unknown")})
    return rows
