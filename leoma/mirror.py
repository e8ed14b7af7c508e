"""The log's mirror: own events out to the own bucket, peers' events in from theirs.

Layout of one origin's published log (no LIST is ever needed to read it):

    log/<origin>/checkpoint.json                         signed Checkpoint (the only mutable object)
    log/<origin>/seg/<first:09d>-<last:09d>.jsonl.zst    immutable segments, zstd JSON lines

The naming rule. With `S = checkpoint.segment_size` and `N = checkpoint.size`, segment `k`
(k = 0, 1, 2, ...) holds origin_seq `kS+1 .. (k+1)S`. When `(k+1)S <= N` that object is
*full*; the last, unfinished segment is published as a *partial* object named by the range it
holds, `kS+1 .. N`. Every object starts on a segment boundary; a partial is never changed, a
later upload of the same segment writes a new, longer partial (`kS+1 .. N'`) and finally the
full object. A reader that has imported through `X` computes the keys it needs from
`(X, N, S)` alone (`segment_ranges`): segments `k = X // S, X // S + 1, ...` while `kS < N`,
each ending at `min((k+1)S, N)`. Every object it fetches therefore holds events `> X`; the first
may repeat up to `S - 1` events it already has, which must match what it stored.

Writers put segments with `If-None-Match: *`, so published bytes are never replaced: an
`ObjectExists` whose events equal ours is a retry after a crash; different events mean someone
rewrote the bucket and the mirror stops. The checkpoint is written after its segments, and the
local record of what was uploaded after the checkpoint, so a crash anywhere re-does the work.

Readers verify the checkpoint's signature, refuse an unknown consensus digest, cap every
object's size before download and its decompressed size while inflating, check ranges, origins,
overlap, links and hashes, and stop at the first bad object. A peer's refusal is recorded as a
`peer_segment_rejected` event with its reason; the peer's position never advances past it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Collection, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import zstandard

from leoma.consensus import DEFAULT, Consensus
from leoma.errors import (
    ChainBroken,
    ConflictError,
    EventError,
    GapError,
    LeomaError,
    LogError,
    MirrorError,
    ObjectExists,
    ObjectNotFound,
    ObjectTooLarge,
    SignatureError,
    StorageError,
)
from leoma.events import (
    MAX_BODY_BYTES,
    ZERO_HASH,
    Event,
    PeerSegmentImported,
    PeerSegmentRejected,
    TaskOpened,
    VerdictRecorded,
    encode_event,
    verify_chain,
)
from leoma.log import EventLog
from leoma.signing import Checkpoint, Signer, read_checkpoint, sign_checkpoint
from leoma.storage import ObjectStore

__all__ = [
    "MirrorIn",
    "MirrorOut",
    "PeerSync",
    "PushReport",
    "checkpoint_key",
    "decode_segment",
    "encode_segment",
    "segment_key",
    "segment_ranges",
    "uploaded_position",
    "verify_published",
]

log = logging.getLogger("leoma.mirror")

DEFAULT_SEGMENT_SIZE: Final = 1000
MAX_SEGMENT_SIZE: Final = 1_000_000
MAX_CHECKPOINT_BYTES: Final = 64 * 1024
DEFAULT_MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024
# An event line is its body plus an envelope of a few hundred bytes; 4 KiB is generous.
MAX_LINE_BYTES: Final = MAX_BODY_BYTES + 4096
_INFLATE_STEP: Final = 1024  # compressed bytes fed per step: bounds how far one step can overshoot
SS58_RE: Final = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{47,48}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Reason categories recorded in peer_segment_rejected (the text after ':' gives the detail).
BAD_SIGNATURE = "bad signature"
UNKNOWN_DIGEST = "unknown consensus digest"
BROKEN_CHAIN = "broken chain"
MALFORMED = "malformed object"
OVERSIZED = "oversized object"
MISSING = "missing segment"
REWRITTEN = "rewritten segment"
NOT_ENTITLED = "not entitled"
BAD_HOTKEY = "invalid hotkey"


# -- naming and format ----------------------------------------------------------------------


def checkpoint_key(origin: str) -> str:
    """Key of `origin`'s signed checkpoint."""
    return f"log/{origin}/checkpoint.json"


def segment_key(origin: str, first: int, last: int) -> str:
    """Key of the segment of `origin` holding origin_seq `first..last`."""
    return f"log/{origin}/seg/{first:09d}-{last:09d}.jsonl.zst"


def segment_ranges(after: int, size: int, segment_size: int) -> list[tuple[int, int]]:
    """The `(first, last)` ranges a reader at `after` fetches to reach `size` (see module doc)."""
    if segment_size < 1:
        raise MirrorError(f"segment_size must be >= 1, got {segment_size}")
    ranges: list[tuple[int, int]] = []
    if after >= size:
        return ranges
    k = max(0, after) // segment_size
    while k * segment_size < size:
        ranges.append((k * segment_size + 1, min((k + 1) * segment_size, size)))
        k += 1
    return ranges


def encode_segment(events: Sequence[Event]) -> bytes:
    """Events as zstd-compressed canonical JSON lines (one frame, content size in the header)."""
    raw = b"".join(encode_event(e) + b"\n" for e in events)
    return zstandard.ZstdCompressor(level=3).compress(raw)


_lines_decoder = msgspec.json.Decoder(Event)


def _inflate(data: bytes, cap: int) -> bytes:
    # Fed in small steps so a decompression bomb is stopped near `cap`, whatever its header says.
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out: list[bytes] = []
    total = 0
    try:
        for pos in range(0, len(data), _INFLATE_STEP):
            chunk = dobj.decompress(data[pos:pos + _INFLATE_STEP])
            total += len(chunk)
            if total > cap:
                raise MirrorError(f"{OVERSIZED}: inflates to more than {cap} bytes")
            out.append(chunk)
            if dobj.eof:
                if dobj.unused_data or pos + _INFLATE_STEP < len(data):
                    raise MirrorError(f"{MALFORMED}: trailing bytes after the zstd frame")
                break
    except zstandard.ZstdError as exc:
        raise MirrorError(f"{MALFORMED}: not zstd ({exc})") from None
    if not dobj.eof:
        raise MirrorError(f"{MALFORMED}: the zstd frame is truncated")
    return b"".join(out)


def decode_segment(data: bytes, *, origin: str, first: int, last: int) -> list[Event]:
    """Decode and check the shape of one segment: origin, contiguous range `first..last`.

    Hashes and links are not checked here (`verify_chain`, or the log's import, does that).
    Raises `MirrorError` whose message starts with the reason category.
    """
    count = last - first + 1
    raw = _inflate(data, count * MAX_LINE_BYTES)
    if not raw.endswith(b"\n"):
        raise MirrorError(f"{MALFORMED}: segment does not end with a complete line (truncated)")
    try:
        events = _lines_decoder.decode_lines(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MirrorError(f"{MALFORMED}: a line is not a Leoma event ({exc})") from None
    if len(events) != count:
        raise MirrorError(f"{MALFORMED}: holds {len(events)} events, its name says {count}")
    for i, e in enumerate(events):
        if e.origin != origin:
            raise MirrorError(f"{MALFORMED}: event #{e.origin_seq} names origin {e.origin[:16]}, not the peer")
        if e.origin_seq != first + i:
            raise MirrorError(f"{MALFORMED}: expected #{first + i}, found #{e.origin_seq}")
    return events


def check_checkpoint(cp: Checkpoint) -> None:
    """Refuse a signed but impossible checkpoint (sizes, hash shape)."""
    if cp.size < 0 or not 1 <= cp.segment_size <= MAX_SEGMENT_SIZE:
        raise MirrorError(f"{MALFORMED}: checkpoint size {cp.size} / segment_size {cp.segment_size} out of range")
    if not _HEX64.match(cp.head) or (cp.size == 0 and cp.head != ZERO_HASH):
        raise MirrorError(f"{MALFORMED}: checkpoint head {cp.head[:20]!r} is not a 64-hex hash")


async def fetch_checkpoint(store: ObjectStore, origin: str) -> Checkpoint | None:
    """`origin`'s verified checkpoint, or None when none is published.

    `MirrorError` (reason first) for an oversized, unsigned or impossible one; `StorageError`
    when the bucket could not be read.
    """
    key = checkpoint_key(origin)
    try:
        data = await store.get(key, max_bytes=MAX_CHECKPOINT_BYTES)
    except ObjectNotFound:
        return None
    except ObjectTooLarge as exc:
        raise MirrorError(f"{OVERSIZED}: {exc}") from None
    try:
        cp = read_checkpoint(data, origin=origin)
    except SignatureError as exc:
        raise MirrorError(f"{BAD_SIGNATURE}: {exc}") from None
    check_checkpoint(cp)
    return cp


async def fetch_segment(store: ObjectStore, origin: str, first: int, last: int, max_bytes: int) -> list[Event]:
    """Download and decode one segment; `MirrorError` for a bad or missing object."""
    return (await _fetch_sized(store, origin, first, last, max_bytes))[0]


async def _fetch_sized(store: ObjectStore, origin: str, first: int, last: int, max_bytes: int) -> tuple[list[Event], int]:
    key = segment_key(origin, first, last)
    try:
        data = await store.get(key, max_bytes=max_bytes)
    except ObjectNotFound:
        raise MirrorError(f"{MISSING}: the checkpoint covers #{first}-#{last} but {key} is absent") from None
    except ObjectTooLarge as exc:
        raise MirrorError(f"{OVERSIZED}: {exc}") from None
    return decode_segment(data, origin=origin, first=first, last=last), len(data)


# -- out: own events to the own bucket -------------------------------------------------------


class PushReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one push did."""

    origin: str
    size: int
    head: str
    previous_size: int
    segments_written: int = 0
    segments_already_there: int = 0
    bytes_written: int = 0
    checkpoint_written: bool = False


class _Uploaded(msgspec.Struct, frozen=True):
    size: int
    head: str
    segment_size: int


def _state_name(origin: str) -> str:
    return f"mirror/out/{origin}"


def uploaded_position(log: EventLog, origin: str) -> int:
    """How many own events of `origin` the log records as published (0 before the first push)."""
    raw = log.get_state(_state_name(origin))
    return msgspec.json.decode(raw, type=_Uploaded).size if raw else 0


class MirrorOut:
    """Publishes the own chain of `log` to `store` as segments plus a signed checkpoint."""

    def __init__(self, log: EventLog, store: ObjectStore, signer: Signer, consensus_digest: str,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
                 segments_per_checkpoint: int = 64) -> None:
        self.origin = signer.ss58_address
        if log.own != self.origin:
            raise MirrorError(f"the log's own hotkey {log.own} is not the signer's {self.origin}: open it with own=")
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise MirrorError(f"segment_size must be 1..{MAX_SEGMENT_SIZE}, got {segment_size}")
        self.log, self.store, self.signer = log, store, signer
        self.consensus_digest = consensus_digest
        self.segment_size = segment_size
        self.max_segment_bytes = max_segment_bytes
        self.segments_per_checkpoint = max(1, segments_per_checkpoint)

    def uploaded(self) -> _Uploaded | None:
        """What the log says was published last (None before the first push)."""
        raw = self.log.get_state(_state_name(self.origin))
        return msgspec.json.decode(raw, type=_Uploaded) if raw else None

    def _local_hash(self, seq: int) -> str:
        if seq == 0:
            return ZERO_HASH
        found = next(self.log.chain(self.origin, after=seq - 1, limit=1), None)
        return found.hash if found else ""

    async def _start_position(self) -> int:
        """Where the bucket is, trusting the local record, else the bucket's checkpoint."""
        done = self.uploaded()
        if done is not None:
            self.segment_size = done.segment_size
            return done.size
        cp = await fetch_checkpoint(self.store, self.origin)
        if cp is None:
            return 0
        self._adopt(cp)
        head = self.log.head(self.origin)
        if cp.size > head.origin_seq:
            raise MirrorError(
                f"the own bucket holds {cp.size} events, the local log only {head.origin_seq}: "
                "run restore first (`MirrorOut.restore`) so no seq is reused"
            )
        if self._local_hash(cp.size) != cp.head:
            raise MirrorError(f"the own bucket's event #{cp.size} differs from the local one: the chains forked")
        return cp.size

    def _adopt(self, cp: Checkpoint) -> None:
        if cp.segment_size != self.segment_size:
            log.warning("own bucket uses segment_size=%d (configured %d); keeping the published layout",
                        cp.segment_size, self.segment_size)
            self.segment_size = cp.segment_size

    async def _put_segment(self, first: int, last: int) -> tuple[bool, int]:
        events = list(self.log.chain(self.origin, after=first - 1, limit=last - first + 1))
        if len(events) != last - first + 1:
            raise MirrorError(f"the local log lost own events #{first}-#{last}: cannot publish them")
        data = encode_segment(events)
        key = segment_key(self.origin, first, last)
        try:
            await self.store.put(key, data, content_type="application/zstd", if_absent=True)
            return True, len(data)
        except ObjectExists:
            theirs = await fetch_segment(self.store, self.origin, first, last, self.max_segment_bytes)
            if [e.hash for e in theirs] != [e.hash for e in events]:
                raise MirrorError(
                    f"{REWRITTEN}: {key} already holds other events than the local log: "
                    "someone rewrote the bucket or the local chain forked; stop and investigate"
                ) from None
            return False, 0

    async def push(self) -> PushReport:
        """Upload new own events as segments, then the signed checkpoint, then record it locally."""
        start = await self._start_position()
        head = self.log.head(self.origin)
        if head.origin_seq < start:
            raise MirrorError(f"the local log ({head.origin_seq} own events) is behind the bucket ({start}): run restore")
        written = existing = nbytes = 0
        position = start
        wrote_checkpoint = False
        ranges = segment_ranges(start, head.origin_seq, self.segment_size)
        for i in range(0, len(ranges), self.segments_per_checkpoint):
            batch = ranges[i:i + self.segments_per_checkpoint]
            for first, last in batch:
                new, size = await self._put_segment(first, last)
                written += new
                existing += not new
                nbytes += size
            position = batch[-1][1]
            tip = next(self.log.chain(self.origin, after=position - 1, limit=1))
            cp = Checkpoint(origin=self.origin, size=position, head=tip.hash,
                            consensus_digest=self.consensus_digest, segment_size=self.segment_size, block=tip.block)
            blob = sign_checkpoint(self.signer, cp)
            await self.store.put(checkpoint_key(self.origin), blob, content_type="application/json")
            nbytes += len(blob)
            wrote_checkpoint = True
            # Only now is it published: a crash before this line re-does the work idempotently.
            self.log.set_state(_state_name(self.origin),
                               msgspec.json.encode(_Uploaded(position, tip.hash, self.segment_size)))
            log.info("mirror pushed origin=%s size=%d segments=%d", self.origin[:12], position, len(batch))
        return PushReport(origin=self.origin, size=position, head=self._local_hash(position), previous_size=start,
                          segments_written=written, segments_already_there=existing, bytes_written=nbytes,
                          checkpoint_written=wrote_checkpoint)

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
        if cp.size > head.origin_seq:
            for first, last in segment_ranges(head.origin_seq, cp.size, cp.segment_size):
                events = await fetch_segment(self.store, self.origin, first, last, self.max_segment_bytes)
                try:
                    imported += self.log.import_events(events)
                except (ChainBroken, GapError, ConflictError, EventError) as exc:
                    raise MirrorError(f"the own bucket's chain disagrees with the local log: {exc}") from None
        if self._local_hash(cp.size) != cp.head:
            raise MirrorError(f"the own bucket's checkpoint head #{cp.size} differs from the local chain: refusing")
        done = self.uploaded()
        if done is None or done.size < cp.size:
            self.log.set_state(_state_name(self.origin), msgspec.json.encode(_Uploaded(cp.size, cp.head, cp.segment_size)))
        if imported:
            log.warning("mirror restored %d own events from the bucket (origin=%s, size=%d)",
                        imported, self.origin[:12], cp.size)
        return imported

    async def run(self, stop: asyncio.Event, interval: float = 10.0, *, max_backoff: float = 300.0) -> None:
        """Push every `interval` seconds until `stop` is set, then once more.

        The loop only reads the log, so a bucket outage never blocks appending; failures back
        off exponentially with full jitter and the next push resumes where the log says.
        """
        failures = 0
        rng = random.Random()
        while not stop.is_set():
            delay = interval
            try:
                await self.push()
                failures = 0
            except (StorageError, MirrorError, LogError, SignatureError) as exc:
                failures += 1
                delay = rng.uniform(interval / 2, max(interval, min(max_backoff, interval * 2 ** failures)))
                log.warning("mirror push failed (%d in a row): %s; retrying in %.1fs", failures, exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        try:
            await self.push()
        except LeomaError as exc:
            log.warning("mirror push on shutdown failed: %s (the next start resumes)", exc)


# -- in: peers' events into the local log ----------------------------------------------------


class Peer(NamedTuple):
    """A peer validator: its hotkey and the store its log is published in."""

    hotkey: str
    store: ObjectStore


class PeerSync(msgspec.Struct, kw_only=True):
    """What one sync of one peer did; `rejected` names the refused object's reason."""

    peer: str
    checkpoint_size: int | None = None
    checkpoint_block: int = 0
    imported: int = 0
    objects: int = 0
    bytes: int = 0
    head: int = 0
    rejected: str = ""
    rejected_key: str = ""
    error: str = ""
    layout: str = ""
    """`log` (a published event log), `seed` (the first implementation's layout) or ""."""


class _Rejection(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


class MirrorIn:
    """Imports peers' published logs into `log`, recording every refusal."""

    def __init__(self, log: EventLog, peers: Sequence[Peer], consensus_digest: str | Collection[str],
                 max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES, *, consensus: Consensus = DEFAULT,
                 max_segments_per_sync: int = 1000, concurrency: int = 4) -> None:
        if log.own is None:
            raise MirrorError("MirrorIn records imports and rejections as own events: open the log with own=")
        self.log = log
        self.peers = [p for p in peers if p.hotkey != log.own]
        self.digests = {consensus_digest} if isinstance(consensus_digest, str) else set(consensus_digest)
        self.max_segment_bytes = max_segment_bytes
        self.consensus = consensus
        self.max_segments_per_sync = max_segments_per_sync
        self._gate = asyncio.Semaphore(max(1, concurrency))

    async def sync(self, only: str | None = None, *, block: int | None = None) -> list[PeerSync]:
        """Sync every peer (or only `only`); one peer's failure never stops the others."""
        peers = [p for p in self.peers if only is None or p.hotkey == only]
        if only is not None and not peers:
            raise MirrorError(f"{only} is not among the configured peers")
        return list(await asyncio.gather(*(self._guarded(p, block) for p in peers)))

    async def _guarded(self, peer: Peer, block: int | None) -> PeerSync:
        async with self._gate:
            report = PeerSync(peer=peer.hotkey)
            try:
                await self.sync_peer(peer, report, block)
            except _Rejection as rej:
                report.rejected, report.rejected_key = rej.reason, rej.key
                self._record_rejection(peer.hotkey, rej, report, block)
            except StorageError as exc:  # the bucket, not the peer: retry later, record nothing
                report.error = str(exc)
                log.warning("mirror pull peer=%s: %s", peer.hotkey[:12], exc)
            except LeomaError as exc:  # e.g. the local log refused a write: this peer only
                report.error = str(exc)
                log.error("mirror pull peer=%s failed: %s", peer.hotkey[:12], exc)
            report.head = self.log.head(peer.hotkey).origin_seq
            return report

    def _record_rejection(self, hotkey: str, rej: _Rejection, report: PeerSync, block: int | None) -> None:
        reason = rej.reason[:1000]
        at_seq = self.log.head(hotkey).origin_seq + 1 if SS58_RE.match(hotkey) else 0
        digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
        body = PeerSegmentRejected(peer=hotkey, object_key=rej.key, reason=reason, at_seq=at_seq)
        self.log.append(body, key=f"peer/{hotkey}/rejected/{rej.key}/{digest}"[:512],
                        block=block if block is not None else report.checkpoint_block)
        log.warning("mirror rejected peer=%s object=%s: %s", hotkey[:12], rej.key, reason)

    async def sync_peer(self, peer: Peer, report: PeerSync, block: int | None = None) -> None:
        """Fetch the checkpoint and new segments of one peer and import them (see module doc)."""
        hk = peer.hotkey
        if not SS58_RE.match(hk):
            raise _Rejection(f"log/{hk}", f"{BAD_HOTKEY}: {hk[:60]!r} is not an SS58 address")
        ckey = checkpoint_key(hk)
        try:
            cp = await fetch_checkpoint(peer.store, hk)
        except MirrorError as exc:
            raise _Rejection(ckey, str(exc)) from None
        report.objects += 1
        if cp is None:
            # No published log: the peer may run the first implementation (seed layout).
            from leoma.seedpeer import sync_seed_peer

            await sync_seed_peer(self.log, hk, peer.store, report, block=block)
            return
        report.layout = "log"
        report.checkpoint_size, report.checkpoint_block = cp.size, cp.block
        if cp.consensus_digest not in self.digests:
            raise _Rejection(ckey, f"{UNKNOWN_DIGEST}: {cp.consensus_digest[:16]} is not a consensus this validator runs")
        head = self.log.head(hk)
        if cp.size < head.origin_seq or (cp.size == head.origin_seq and cp.head != head.hash):
            raise _Rejection(ckey, f"{REWRITTEN}: checkpoint #{cp.size} contradicts the imported #{head.origin_seq}")
        entitled = _Entitlement(self.log, hk, self.consensus)
        for first, last in segment_ranges(head.origin_seq, cp.size, cp.segment_size)[:self.max_segments_per_sync]:
            key = segment_key(hk, first, last)
            try:
                events, size = await _fetch_sized(peer.store, hk, first, last, self.max_segment_bytes)
            except MirrorError as exc:
                raise _Rejection(key, str(exc)) from None
            report.objects += 1
            report.bytes += size
            new = self._check_against_local(key, events, cp)
            for e in new:
                problem = entitled.check(e)
                if problem:
                    raise _Rejection(key, f"{NOT_ENTITLED}: #{e.origin_seq} {problem}")
            try:
                added = self.log.import_events(new)
            except ChainBroken as exc:
                raise _Rejection(key, f"{BROKEN_CHAIN}: {exc}") from None
            except (GapError, ConflictError, EventError) as exc:
                raise _Rejection(key, f"{MALFORMED}: {exc}") from None
            report.imported += added
            if new:
                self.log.append(
                    PeerSegmentImported(peer=hk, segment_key=key, first_seq=new[0].origin_seq,
                                        last_seq=new[-1].origin_seq, head_hash=new[-1].hash),
                    key=f"peer/{hk}/imported/{key}", block=block if block is not None else new[-1].block,
                )

    def _check_against_local(self, key: str, events: list[Event], cp: Checkpoint) -> list[Event]:
        """Events already imported must be the ones stored; the rest must continue our head."""
        head = self.log.head(events[0].origin)
        old = [e for e in events if e.origin_seq <= head.origin_seq]
        if old:
            stored = [e.hash for e in self.log.chain(events[0].origin, after=old[0].origin_seq - 1, limit=len(old))]
            if stored != [e.hash for e in old]:
                raise _Rejection(key, f"{REWRITTEN}: events up to #{old[-1].origin_seq} differ from the ones imported before")
        new = events[len(old):]
        if new and new[0].prev != head.hash:
            raise _Rejection(key, f"{REWRITTEN}: #{new[0].origin_seq} does not continue the imported #{head.origin_seq}")
        if events[-1].origin_seq == cp.size and events[-1].hash != cp.head:
            raise _Rejection(key, f"{BROKEN_CHAIN}: #{cp.size} is not the head the checkpoint signed")
        return new


class _Entitlement:
    """Whether a peer was the rightful producer of the tasks and verdicts it publishes.

    The allowlist is the own log's latest `allowlist_verified`; with none known yet, nothing
    is refused on this ground. The rule itself is `projections.rotation.rightful_sampler_at`.
    """

    def __init__(self, log: EventLog, peer: str, consensus: Consensus) -> None:
        self.peer = peer
        self.rule: Any = None
        self.validators: list[str] = []
        self.opened: set[int] | None = None
        self.log = log
        try:
            from projections.rotation import rightful_sampler_at
        except ImportError:
            return
        latest = next(log.events(origin=log.own, kinds=["allowlist_verified"], descending=True, limit=1), None)
        if latest is None:
            return
        allow = latest.event.payload()
        self.validators = sorted(getattr(allow, "validators", ()))
        self.interval = int(getattr(allow, "interval", 0)) or consensus.rotation.interval
        self.grace = consensus.grace_blocks(self.interval)
        self.rule = rightful_sampler_at

    def check(self, e: Event) -> str:
        if self.rule is None:
            return ""
        body = bytes(e.body)
        if b"task_opened" not in body and b"verdict_recorded" not in body:
            return ""  # most events: skip decoding
        kind = e.kind
        if kind == "task_opened":
            opened = e.payload()
            assert isinstance(opened, TaskOpened)
            rightful = self.rule(self.validators, self.interval, self.grace, opened.task_id, e.block)
            if rightful != self.peer or opened.sampler != self.peer:
                return (f"task_opened for task {opened.task_id} at block {e.block}: the rightful sampler was "
                        f"{(rightful or 'nobody')[:16]}")
            self._opened().add(opened.task_id)
        elif kind == "verdict_recorded":
            verdict = e.payload()
            assert isinstance(verdict, VerdictRecorded)
            if verdict.task_id not in self._opened():
                return f"verdict_recorded for task {verdict.task_id}, which this peer did not open"
        return ""

    def _opened(self) -> set[int]:
        if self.opened is None:
            self.opened = set()
            for row in self.log.rows(origin=self.peer, kinds=["task_opened"]):
                self.opened.add(msgspec.json.decode(row.body, type=TaskOpened).task_id)
        return self.opened


# -- verifying a published log with no local database ---------------------------------------


async def verify_published(bucket_url: str, hotkey: str, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
                           store: ObjectStore | None = None) -> dict[str, Any]:
    """Check `hotkey`'s published log in `bucket_url` end to end: signature, segments, chain, head.

    Returns `{"ok", "message", "events", "segments", "bytes", "size", "head", "consensus_digest",
    "consensus_known"}`; never raises for a bad log (the message says what is wrong).
    """
    from leoma.storage import open_store

    report: dict[str, Any] = {"ok": False, "message": "", "hotkey": hotkey, "events": 0, "segments": 0, "bytes": 0}
    if not SS58_RE.match(hotkey):
        report["message"] = f"{BAD_HOTKEY}: {hotkey[:60]!r} is not an SS58 address"
        return report
    own_store = store is None
    st = store if store is not None else open_store(bucket_url)
    try:
        cp = await fetch_checkpoint(st, hotkey)
        if cp is None:
            report["message"] = f"no checkpoint at {checkpoint_key(hotkey)} in {bucket_url}: nothing is published"
            return report
        report.update(size=cp.size, head=cp.head, consensus_digest=cp.consensus_digest,
                      consensus_known=cp.consensus_digest == DEFAULT.digest, segment_size=cp.segment_size)
        prev = ZERO_HASH
        for first, last in segment_ranges(0, cp.size, cp.segment_size):
            key = segment_key(hotkey, first, last)
            events, size = await _fetch_sized(st, hotkey, first, last, max_segment_bytes)
            report["bytes"] += size
            try:
                prev = verify_chain(events, prev=prev, start_seq=first)
            except EventError as exc:
                raise MirrorError(f"{BROKEN_CHAIN} in {key}: {exc}") from None
            report["events"] += len(events)
            report["segments"] += 1
        if prev != cp.head:
            raise MirrorError(f"{BROKEN_CHAIN}: the last event's hash is not the checkpoint's head")
        report["ok"] = True
        report["message"] = (f"ok: {cp.size} events in {report['segments']} segments verify; "
                             f"head {cp.head[:16]} is signed by {hotkey[:12]}…")
    except (MirrorError, StorageError) as exc:
        report["message"] = f"BROKEN: {exc}"
    finally:
        if own_store:
            await st.close()
    return report
