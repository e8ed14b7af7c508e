"""Epoch decisions in the log: a small `epoch_scored` event and its `epoch_detail` parts.

A decision at real size (64 validators x 256 miners) is about 1.5 MB of per-miner aggregates,
far over the 64 KiB body limit. So it is stored as:

* `epoch/<E>/detail/<i>` for i = 0, 1, ...: `epoch_detail` events, each holding a run of the
  aggregates (in rank order) that fits under the body limit;
* `epoch/<E>/scored`: the `epoch_scored` (v2) event itself, with the frontier, digest, window,
  winner and weights, the sha256 of each detail body (`details`) and the sha256 of the
  canonical JSON of the whole aggregates tuple (`aggregates_hash`).

All parts are appended in one transaction, details first, so any prefix of the chain that holds
the `epoch_scored` event holds its details, and a peer importing the chain imports both. The
decision's own hash covers the details' hashes, and each detail is an event of the same chain.

`split` and `join` are pure; the rest reads the log by key or by the kind index, never the
whole history: `latest` finds the newest decision of an origin through the `(kind, block)`
index (the envelope's block is the epoch's boundary), `find` reads `epoch/<E>/scored` by key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from leoma.errors import LogError
from leoma.log.events import MAX_BODY_BYTES, EpochDetailRecorded, EpochScored, MinerAggregate, decode_body

__all__ = ["Recorded", "split", "join", "join_lean", "checked_raws", "checked_heads", "head_aggregate", "aggregate",
           "aggregates_hash", "drafts", "find", "latest", "recorded", "detail_key", "scored_key", "load", "stored_parts"]

_encoder = msgspec.json.Encoder(order="deterministic")
_SLACK: Final = 256
"""Room left under the body limit for the detail's own fields."""


class Recorded(msgspec.Struct, frozen=True):
    """An `epoch_scored` event as found in a log, with its aggregates joined back in.

    Read with `detail="lean"`, each aggregate's `rates` is left out (empty) and `raw` holds every
    aggregate's stored JSON by hotkey: `aggregate(recorded, hotkey)` decodes one in full.
    """

    origin: str
    origin_seq: int
    block: int
    body: EpochScored
    v: int = 2
    raw: dict[str, bytes] = {}


def scored_key(epoch: int) -> str:
    """The natural key of an epoch's decision."""
    return f"epoch/{epoch}/scored"


def detail_key(epoch: int, part: int) -> str:
    """The natural key of part `part` of an epoch decision's detail."""
    return f"epoch/{epoch}/detail/{part}"


def aggregates_hash(aggregates: tuple[MinerAggregate, ...]) -> str:
    """sha256 of the canonical JSON of a decision's aggregates tuple."""
    return hashlib.sha256(_encoder.encode(aggregates)).hexdigest()


def split(decision: EpochScored, *, limit: int = MAX_BODY_BYTES) -> tuple[EpochScored, tuple[EpochDetailRecorded, ...]]:
    """The small stored body and its detail parts, for a decision held in memory.

    Parts are filled greedily in rank order (deterministic: the same decision always splits the
    same way). A single aggregate larger than a body is refused with `LogError`.
    """
    parts: list[EpochDetailRecorded] = []
    run: list[MinerAggregate] = []
    size = 0
    budget = limit - _SLACK
    for agg in decision.aggregates:
        n = len(_encoder.encode(agg)) + 1
        if n > budget:
            raise LogError(f"the aggregate of {agg.hotkey} is {n} bytes: it cannot fit in one event body")
        if run and size + n > budget:
            parts.append(EpochDetailRecorded(epoch=decision.epoch, part=len(parts), aggregates=tuple(run)))
            run, size = [], 0
        run.append(agg)
        size += n
    if run:
        parts.append(EpochDetailRecorded(epoch=decision.epoch, part=len(parts), aggregates=tuple(run)))
    digests = tuple(hashlib.sha256(_encoder.encode(p)).hexdigest() for p in parts)
    small = msgspec.structs.replace(decision, aggregates=(), miners=len(decision.aggregates),
                                    aggregates_hash=aggregates_hash(decision.aggregates), details=digests)
    return small, tuple(parts)


def sealed(decision: EpochScored) -> EpochScored:
    """A decision in memory with the hashes its stored form carries (aggregates kept)."""
    small, _ = split(decision)
    return msgspec.structs.replace(small, aggregates=decision.aggregates)


def join(small: EpochScored, parts: list[tuple[str, bytes]]) -> EpochScored:
    """The decision with its aggregates, from the stored body and `(key, body bytes)` of each part.

    Each part must hash to the digest the decision lists, and together they must reproduce
    `aggregates_hash`; anything else is a `LogError` naming what is wrong.
    """
    if not small.details:
        return small  # a v1 body: aggregates are inline
    if len(parts) != len(small.details):
        raise LogError(f"epoch {small.epoch}'s decision names {len(small.details)} detail parts, "
                       f"the log holds {len(parts)}: the log is incomplete")
    aggregates: list[MinerAggregate] = []
    for i, ((key, data), digest) in enumerate(zip(parts, small.details)):
        if hashlib.sha256(data).hexdigest() != digest:
            raise LogError(f"{key} does not hash to the digest epoch {small.epoch}'s decision recorded")
        body = decode_body(data)
        if not isinstance(body, EpochDetailRecorded) or body.epoch != small.epoch or body.part != i:
            raise LogError(f"{key} is not part {i} of epoch {small.epoch}'s detail")
        aggregates.extend(body.aggregates)
    whole = tuple(aggregates)
    if aggregates_hash(whole) != small.aggregates_hash:
        raise LogError(f"epoch {small.epoch}'s detail does not reproduce its aggregates_hash")
    return msgspec.structs.replace(small, aggregates=whole)


class _PartRaw(msgspec.Struct):
    """An `epoch_detail` body with each aggregate left as its stored JSON."""

    epoch: int
    part: int
    aggregates: list[msgspec.Raw]
    kind: str = ""


class _AggHead(msgspec.Struct, kw_only=True):
    """`MinerAggregate` without its per-validator `rates` (skipped while decoding)."""

    hotkey: str
    uid: int = -1
    commit_block: int = -1
    passed: int = 0
    evaluated: int = 0
    tasks: int = 0
    avg_rate: str = "0"
    completeness: str = "0"
    eligible: bool = False
    reason: str = ""
    rank: int = 0


_part_raw = msgspec.json.Decoder(_PartRaw)
_agg_head = msgspec.json.Decoder(_AggHead)
_agg_full = msgspec.json.Decoder(MinerAggregate)
_HEAD_FIELDS = tuple(f for f in _AggHead.__struct_fields__)


def checked_raws(small: EpochScored, parts: list[tuple[str, bytes]]) -> list[msgspec.Raw] | None:
    """The stored JSON of every aggregate in `small`'s detail parts, or None when anything does
    not check out: each part's digest, epoch, index and kind, then `aggregates_hash` over the
    aggregates as they stand in the parts (the canonical encoding it was made of), hashed in place."""
    if not small.details or len(parts) != len(small.details):
        return None
    raws: list[msgspec.Raw] = []
    for i, ((_, data), digest) in enumerate(zip(parts, small.details)):
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        try:
            body = _part_raw.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if body.epoch != small.epoch or body.part != i or body.kind != "epoch_detail":
            return None
        raws.extend(body.aggregates)
    whole = hashlib.sha256(b"[")
    for j, raw in enumerate(raws):
        if j:
            whole.update(b",")
        whole.update(raw)
    whole.update(b"]")
    return raws if whole.hexdigest() == small.aggregates_hash else None


def head_aggregate(head: _AggHead) -> MinerAggregate:
    """The `MinerAggregate` of a decoded head: every field but the per-validator `rates`."""
    return MinerAggregate(**{f: getattr(head, f) for f in _HEAD_FIELDS})


def checked_heads(small: EpochScored, parts: list[tuple[str, bytes]]) -> list[_AggHead] | None:
    """`checked_raws`, with each aggregate decoded without its rates (None when anything does
    not check out)."""
    raws = checked_raws(small, parts)
    return None if raws is None else [_agg_head.decode(raw) for raw in raws]


def join_lean(small: EpochScored, parts: list[tuple[str, bytes]]) -> tuple[EpochScored, dict[str, bytes]] | None:
    """`join` without decoding the per-validator rates: the aggregates with `rates=()`, and each
    aggregate's stored JSON by hotkey.

    The same checks as `join` (`checked_raws`). None when anything does not check out: `join`
    then says what is wrong.
    """
    raws = checked_raws(small, parts)
    if raws is None:
        return None
    aggregates = []
    by_hotkey: dict[str, bytes] = {}
    for raw in raws:
        head = _agg_head.decode(raw)
        aggregates.append(head_aggregate(head))
        by_hotkey[head.hotkey] = bytes(raw)
    return msgspec.structs.replace(small, aggregates=tuple(aggregates)), by_hotkey


def aggregate(recorded: Recorded, hotkey: str) -> MinerAggregate | None:
    """One miner's aggregate in full (with its rates), whether `recorded` was read lean or not."""
    raw = recorded.raw.get(hotkey)
    if raw is not None:
        return _agg_full.decode(raw)
    return next((a for a in recorded.body.aggregates if a.hotkey == hotkey), None)


def drafts(decision: EpochScored, *, block: int) -> list[Any]:
    """The `Draft`s that append a decision: its detail parts, then the small `epoch_scored`."""
    from leoma.log.eventlog import Draft

    small, parts = split(decision)
    out = [Draft(detail_key(decision.epoch, p.part), block, p) for p in parts]
    out.append(Draft(scored_key(decision.epoch), block, small))
    return out


# -- reading -----------------------------------------------------------------------------------


def stored_parts(log: Any, origin: str, small: EpochScored) -> tuple[list[tuple[str, bytes]], str]:
    """The `(key, body bytes)` of each detail part `small` names, read from `origin`'s chain by
    key, up to the first missing one; with that one's key ("" when all are there)."""
    parts: list[tuple[str, bytes]] = []
    for i in range(len(small.details)):
        key = detail_key(small.epoch, i)
        data = log.body_of(origin, key)
        if data is None:
            return parts, key
        parts.append((key, data))
    return parts, ""


def load(log: Any, origin: str, seq: int, block: int, v: int, body: bytes | str, *,
         detail: bool | str = True) -> Recorded:
    """A stored `epoch_scored` row as a `Recorded`, its parts read by key (when `detail`;
    `detail="lean"` leaves the rates out, see `Recorded`)."""
    small = decode_body(body, v)
    assert isinstance(small, EpochScored)
    if detail and small.details:
        parts, missing = stored_parts(log, origin, small)
        if missing:
            raise LogError(f"{origin[:12]}…'s log holds epoch {small.epoch}'s decision but not {missing}")
        if detail == "lean":
            lean = join_lean(small, parts)
            if lean is not None:
                return Recorded(origin, seq, block, lean[0], v, lean[1])
        small = join(small, parts)
    return Recorded(origin, seq, block, small, v)


def find(log: Any, epoch: int, *, origin: str | None = None, detail: bool | str = True) -> Recorded | None:
    """The decision of `origin` (default: any origin, the newest in the log) for `epoch`, by key."""
    origins = [origin] if origin is not None else log.origins()
    best = None
    for o in origins:
        row = log.row_of(o, scored_key(epoch))
        if row is not None and row.kind == "epoch_scored" and (best is None or row.seq > best.seq):
            best = row
    if best is None:
        return None
    return load(log, best.origin, best.origin_seq, best.block, best.v, best.body, detail=detail)


def latest(log: Any, *, origin: str | None = None, detail: bool | str = True) -> Recorded | None:
    """The newest decision (highest epoch block, then latest in the log) of `origin`, by index."""
    row = log.newest_row("epoch_scored", origin=origin)
    if row is None:
        return None
    return load(log, row.origin, row.origin_seq, row.block, row.v, row.body, detail=detail)


def recorded(log: Any, *, origin: str | None = None, detail: bool = True) -> Iterator[Recorded]:
    """Every decision in the log (of `origin`, or of every origin), in local order."""
    for row in log.rows(kinds=["epoch_scored"], origin=origin):
        yield load(log, row.origin, row.origin_seq, row.block, row.v, row.body, detail=detail)
