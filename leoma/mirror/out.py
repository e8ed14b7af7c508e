"""Mirror out: the own log's new events to the own bucket, as immutable objects and a signed checkpoint.

The layout and its limits are `leoma.mirror.segments`'s. A push writes its new events as one
level-0 object, merges and seals as the layout says, writes the checkpoint after its objects,
and records around it what it wrote, so a crash anywhere re-does the work.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec

from leoma.adapters.signing import Checkpoint, Signer, sign_checkpoint
from leoma.adapters.storage import ObjectStore
from leoma.errors import ChainBroken, ConflictError, EventError, GapError, MirrorError, ObjectExists
from leoma.log.eventlog import EventLog
from leoma.log.events import ZERO_HASH
from leoma.mirror.segments import (
    DEFAULT_MAX_SEGMENT_BYTES,
    DEFAULT_SEGMENT_SIZE,
    LEGACY_LEVEL,
    MAX_EVENTS_PER_OBJECT,
    MAX_LEVEL,
    OBJECT_NAME,
    REWRITTEN,
    TAIL_FANOUT,
    Range,
    checkpoint_key,
    encode_segment,
    fetch_checkpoint,
    fetch_segment,
    named_objects,
    next_object,
    segment_key,
)

__all__ = [
    "MirrorOut",
    "PushReport",
    "uploaded_position",
]

log = logging.getLogger("leoma.mirror")


class PushReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one push did."""

    origin: str
    size: int
    head: str
    previous_size: int
    segments_written: int = 0
    segments_already_there: int = 0
    objects_replaced: int = 0
    objects_deleted: int = 0
    bytes_written: int = 0
    checkpoint_written: bool = False


class _Uploaded(msgspec.Struct, frozen=True):
    """The own mirror's local record: what the last checkpoint written names, and what is in
    flight (`pending`: being written, not yet named) or left to delete (`garbage`)."""

    size: int
    head: str
    segment_size: int
    layout: int = 1
    tail: tuple[tuple[int, int, int], ...] = ()
    extra: tuple[Range, ...] = ()
    garbage: tuple[Range, ...] = ()
    pending: tuple[Range, ...] = ()

    def checkpoint(self, origin: str, digest: str, block: int) -> Checkpoint:
        return Checkpoint(origin=origin, size=self.size, head=self.head, consensus_digest=digest,
                          segment_size=self.segment_size, block=block, layout=self.layout,
                          tail=self.tail, extra=self.extra)


def _state_name(origin: str) -> str:
    return f"mirror/out/{origin}"


def mirrored_origins(log: EventLog) -> list[str]:
    """The origins this log has published to a bucket at least once, sorted."""
    prefix = _state_name("")
    return [name[len(prefix):] for name in log.state_names(prefix)]


def uploaded_position(log: EventLog, origin: str) -> int:
    """How many own events of `origin` the log records as published (0 before the first push)."""
    raw = log.get_state(_state_name(origin))
    return msgspec.json.decode(raw, type=_Uploaded).size if raw else 0


def _as_layout2(done: _Uploaded) -> _Uploaded:
    """A layout-1 record as layout 2: its partial object becomes the one tail object."""
    if done.layout >= 2:
        return done
    sealed = done.size // done.segment_size * done.segment_size
    tail = ((sealed + 1, done.size, LEGACY_LEVEL),) if done.size > sealed else ()
    return msgspec.structs.replace(done, layout=2, tail=tail, extra=())


class _Plan(NamedTuple):
    writes: list[Range]
    record: _Uploaded
    garbage: set[Range]


class MirrorOut:
    """Publishes the own chain of `log` to `store` as objects plus a signed checkpoint."""

    def __init__(self, log: EventLog, store: ObjectStore, signer: Signer, consensus_digest: str,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
                 segments_per_checkpoint: int = 64) -> None:
        self.origin = signer.ss58_address
        if log.own != self.origin:
            raise MirrorError(f"the log's own hotkey {log.own} is not the signer's {self.origin}: open it with own=")
        if not 1 <= segment_size <= MAX_EVENTS_PER_OBJECT:
            raise MirrorError(f"segment_size must be 1..{MAX_EVENTS_PER_OBJECT}, got {segment_size}")
        self.log, self.store, self.signer = log, store, signer
        self.consensus_digest = consensus_digest
        self.segment_size = segment_size
        self.max_segment_bytes = max_segment_bytes
        self.segments_per_checkpoint = max(1, segments_per_checkpoint)

    def uploaded(self) -> _Uploaded | None:
        """What the log says was published last (None before the first push)."""
        raw = self.log.get_state(_state_name(self.origin))
        return msgspec.json.decode(raw, type=_Uploaded) if raw else None

    def _record(self, done: _Uploaded) -> None:
        self.log.set_state(_state_name(self.origin), msgspec.json.encode(done))

    def _local_hash(self, seq: int) -> str:
        if seq == 0:
            return ZERO_HASH
        found = next(self.log.chain(self.origin, after=seq - 1, limit=1), None)
        return found.hash if found else ""

    async def _start(self) -> _Uploaded:
        """Where the bucket is, trusting the local record, else the bucket's checkpoint."""
        done = self.uploaded()
        if done is None:
            cp = await fetch_checkpoint(self.store, self.origin)
            if cp is None:
                return _Uploaded(0, ZERO_HASH, self.segment_size, layout=2)
            self._adopt(cp)
            head = self.log.head(self.origin)
            if cp.size > head.origin_seq:
                raise MirrorError(
                    f"the own bucket holds {cp.size} events, the local log only {head.origin_seq}: "
                    "run restore first (`MirrorOut.restore`) so no seq is reused"
                )
            if self._local_hash(cp.size) != cp.head:
                raise MirrorError(f"the own bucket's event #{cp.size} differs from the local one: the chains forked")
            done = _Uploaded(cp.size, cp.head, cp.segment_size, cp.layout, cp.tail, cp.extra)
        self.segment_size = done.segment_size
        return _as_layout2(done)

    def _adopt(self, cp: Checkpoint) -> None:
        if cp.segment_size != self.segment_size:
            log.warning("own bucket uses segment_size=%d (configured %d); keeping the published layout",
                        cp.segment_size, self.segment_size)
            self.segment_size = cp.segment_size

    def _plan(self, done: _Uploaded, target: int, head_hash: str) -> _Plan:
        """The objects that take the published log from `done.size` to `target` events."""
        s = done.segment_size
        tail = list(done.tail)
        sealed = tail[0][0] - 1 if tail else done.size
        pos = done.size
        writes: list[Range] = []
        garbage: set[Range] = set(done.extra)  # shortcuts serve one push, then go
        extra: list[Range] = []
        while pos < target:
            end = sealed + s
            if target >= end:
                writes.append((sealed + 1, end))
                if pos > sealed:
                    # Readers at `pos` fetch only the new events (one object, across the boundary
                    # when they are few), not the whole new segment.
                    reach = target if target - pos <= s else end
                    writes.append((pos + 1, reach))
                    extra.append((pos + 1, reach))
                garbage |= {(f, last) for f, last, _ in tail}
                tail, sealed, pos = [], end, end
                continue
            # Older objects merge first, so the new events are always an object of their own.
            while len(tail) >= TAIL_FANOUT and len({lvl for _, _, lvl in tail[-TAIL_FANOUT:]}) == 1:
                group = tail[-TAIL_FANOUT:]
                merged = (group[0][0], group[-1][1], min(MAX_LEVEL, group[0][2] + 1))
                writes.append(merged[:2])
                garbage |= {(f, last) for f, last, _ in group}
                tail[-TAIL_FANOUT:] = [merged]
            writes.append((pos + 1, target))
            tail.append((pos + 1, target, 0))
            pos = target
        record = _Uploaded(target, head_hash, s, 2, tuple(tail), tuple(dict.fromkeys(extra)))
        return _Plan(writes, record, garbage)

    async def _put_object(self, first: int, last: int, signed_size: int) -> tuple[str, int]:
        """Write one object; returns ("new" | "there" | "replaced", bytes written)."""
        events = list(self.log.chain(self.origin, after=first - 1, limit=last - first + 1))
        if len(events) != last - first + 1:
            raise MirrorError(f"the local log lost own events #{first}-#{last}: cannot publish them")
        data = encode_segment(events)
        key = segment_key(self.origin, first, last)
        try:
            await self.store.put(key, data, content_type="application/zstd", if_absent=True)
            return "new", len(data)
        except ObjectExists:
            try:
                theirs = await fetch_segment(self.store, self.origin, first, last, self.max_segment_bytes)
                same = [e.hash for e in theirs] == [e.hash for e in events]
            except MirrorError:
                same = False
            if same:
                return "there", 0
            if last <= signed_size:
                raise MirrorError(
                    f"{REWRITTEN}: {key} already holds other events than the local log: "
                    "someone rewrote the bucket or the local chain forked; stop and investigate"
                ) from None
        # Past the signed checkpoint: written before a crash, never published, replaced now.
        log.warning("mirror replaces %s: it lies past the signed checkpoint (#%d) and holds other events",
                    key, signed_size)
        await self.store.delete(key)
        await self.store.put(key, data, content_type="application/zstd", if_absent=True)
        return "replaced", len(data)

    async def _collect(self, done: _Uploaded) -> int:
        """Delete what `done` lists as garbage or left pending, unless the checkpoint names it."""
        named = named_objects(done.checkpoint(self.origin, self.consensus_digest, 0))
        doomed = sorted((set(done.garbage) | set(done.pending)) - named)
        for first, last in doomed:
            await self.store.delete(segment_key(self.origin, first, last))
        if done.garbage or done.pending:
            self._record(msgspec.structs.replace(done, garbage=(), pending=()))
        return len(doomed)

    async def push(self) -> PushReport:
        """Upload new own events as objects, then the signed checkpoint, then record it locally."""
        done = await self._start()
        start = done.size
        head = self.log.head(self.origin)
        if head.origin_seq < start:
            raise MirrorError(f"the local log ({head.origin_seq} own events) is behind the bucket ({start}): run restore")
        written = existing = replaced = deleted = nbytes = 0
        wrote_checkpoint = False
        if head.origin_seq == start:  # nothing new: no request, unless a crash left work behind
            deleted = await self._collect(done) if done.garbage or done.pending else 0
        while done.size < head.origin_seq:
            s = done.segment_size
            sealed = done.tail[0][0] - 1 if done.tail else done.size
            target = min(head.origin_seq, sealed + self.segments_per_checkpoint * s)
            tip = next(self.log.chain(self.origin, after=target - 1, limit=1))
            plan = self._plan(done, target, tip.hash)
            in_flight = tuple(dict.fromkeys(done.pending + tuple(plan.writes)))
            self._record(msgspec.structs.replace(done, pending=in_flight))
            for first, last in dict.fromkeys(plan.writes):
                outcome, size = await self._put_object(first, last, done.size)
                written += outcome == "new"
                existing += outcome == "there"
                replaced += outcome == "replaced"
                nbytes += size
            cp = plan.record.checkpoint(self.origin, self.consensus_digest, tip.block)
            blob = sign_checkpoint(self.signer, cp)
            await self.store.put(checkpoint_key(self.origin), blob, content_type="application/json")
            nbytes += len(blob)
            wrote_checkpoint = True
            # Only now is it published: a crash before this line re-does the work idempotently.
            garbage = plan.garbage | set(done.garbage) | set(in_flight)
            done = msgspec.structs.replace(plan.record, garbage=tuple(sorted(garbage)))
            self._record(done)
            deleted += await self._collect(done)
            done = msgspec.structs.replace(done, garbage=(), pending=())
            log.info("mirror pushed origin=%s size=%d objects=%d", self.origin[:12], target, len(plan.writes))
        return PushReport(origin=self.origin, size=done.size, head=done.head, previous_size=start,
                          segments_written=written, segments_already_there=existing, objects_replaced=replaced,
                          objects_deleted=deleted, bytes_written=nbytes, checkpoint_written=wrote_checkpoint)

    async def _sweep_unsigned(self, signed: int) -> int:
        """Delete own objects past the signed checkpoint (the one LIST, when no local record says
        what a crash may have left: a new disk). Never signed, so no reader ever took them."""
        swept = 0
        async for info in self.store.list(f"log/{self.origin}/seg/"):
            found = OBJECT_NAME.search(info.key)
            if found and int(found.group(2)) > signed:
                await self.store.delete(info.key)
                swept += 1
        return swept

    async def restore(self) -> int:
        """Import own events the bucket has and the local log lost; returns how many.

        Call before appending on start: a restored machine must not reuse a published seq.
        `MirrorError` if the bucket's chain disagrees with the local one.
        """
        cp = await fetch_checkpoint(self.store, self.origin)
        if cp is None:
            return 0
        self._adopt(cp)
        head = self.log.head(self.origin)
        imported = 0
        after = head.origin_seq
        while after < cp.size:
            first, last = next_object(cp, after)
            events = await fetch_segment(self.store, self.origin, first, last, self.max_segment_bytes)
            try:
                imported += self.log.import_events(events)
            except (ChainBroken, GapError, ConflictError, EventError) as exc:
                raise MirrorError(f"the own bucket's chain disagrees with the local log: {exc}") from None
            after = last
        if self._local_hash(cp.size) != cp.head:
            raise MirrorError(f"the own bucket's checkpoint head #{cp.size} differs from the local chain: refusing")
        done = self.uploaded()
        if done is None:
            swept = await self._sweep_unsigned(cp.size)
            if swept:
                log.warning("mirror deleted %d own objects past the signed checkpoint #%d (left by a crash)",
                            swept, cp.size)
        if done is None or done.size < cp.size:
            keep = done.garbage + done.pending if done else ()
            self._record(_Uploaded(cp.size, cp.head, cp.segment_size, cp.layout, cp.tail, cp.extra, garbage=keep))
        if imported:
            log.warning("mirror restored %d own events from the bucket (origin=%s, size=%d)",
                        imported, self.origin[:12], cp.size)
        return imported
