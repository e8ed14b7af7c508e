"""The mirror's published layout: object names, the signed checkpoint, segment bytes, our limits.

`out` writes this layout and `inbound` reads it; both go through the functions here.

Layout of one origin's published log (no LIST is ever needed to read it):

    log/<origin>/checkpoint.json                         signed Checkpoint (the only mutable object)
    log/<origin>/seg/<first:09d>-<last:09d>.jsonl.zst    immutable objects, zstd JSON lines

Every object is named by the origin_seq range it holds. With `S = checkpoint.segment_size` and
`N = checkpoint.size`:

* **Full segments** hold `kS+1 .. (k+1)S`; every one below the *sealed* size `F` exists.
* **Layout 2** (written now): the checkpoint lists the `tail`, small objects covering
  `F+1 .. N` (`N - F < S`), each with a level. A push writes its new events as one level-0
  object; once `TAIL_FANOUT` older objects of one level sit side by side they are merged into
  one of the next level, and when a segment fills up the full segment is written and the tail
  objects it replaces are deleted. Stored bytes stay close to the log compressed once and each
  event is rewritten about log_2(S / events per push) times, whatever the push interval (the
  levels of Litestream). `extra` lists shortcuts a reader may use, such as the newest events of
  a segment that was just sealed, so a reader that is up to date never downloads a full
  segment for a few events.
* **Layout 1** (the first one, still read): no list; the last object is the partial `kS+1..N`,
  rewritten longer on every push.

A reader at `X` picks, among the objects holding `X+1`, the one repeating the fewest events it
has (`next_object`), so an incremental sync costs the new objects plus the checkpoint, and an
idle one costs the checkpoint alone (its bytes unchanged: nothing is decoded or verified again).

Writers put objects with `If-None-Match: *`. An object that exists with other events is a
rewrite of published history and stops the mirror, unless it lies past the checkpoint the
bucket signed: those were never published (a crash before the checkpoint, then a lost disk) and
are replaced. The checkpoint is written after its objects; what was written, what the
checkpoint names and what is to be deleted are recorded locally around it, so a crash anywhere
re-does the work and leaves no object behind for good.

Readers bound everything a peer can sign by our own limits (`MAX_EVENTS_PER_OBJECT`,
`MAX_INFLATED_BYTES`, `DEFAULT_MAX_SEGMENT_BYTES`, `MAX_LISTED_OBJECTS`, objects per sync),
verify the checkpoint's signature, refuse an unknown consensus digest, check ranges, origins,
overlap, links, hashes and entitlement, and stop at the first bad object. A refusal is recorded
once per peer, object and reason as a `peer_segment_rejected` event; the peer's position never
advances past it. Importing itself appends nothing: the imported events are the progress, and
what is only local bookkeeping (the last checkpoint seen, why a peer waits) lives in the log's
`state` table. Where an entitlement cannot be checked yet (no allowlist verified), the peer
waits: nothing past that event is imported, and nothing is recorded for peers to copy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Final

import msgspec
import zstandard

from leoma.adapters.signing import SS58_SHAPE, Checkpoint, read_checkpoint
from leoma.adapters.storage import ObjectStore
from leoma.errors import EventError, MirrorError, ObjectNotFound, ObjectTooLarge, SignatureError
from leoma.log.events import MAX_BODY_BYTES, ZERO_HASH, Event, encode_event, verify_chain

__all__ = [
    "checkpoint_key",
    "decode_segment",
    "encode_segment",
    "fetch_checkpoint",
    "named_objects",
    "next_object",
    "read_published",
    "segment_key",
    "segment_ranges",
]

log = logging.getLogger("leoma.mirror")

# -- our own limits: whatever a peer signs, it is read within these --------------------------

DEFAULT_SEGMENT_SIZE: Final = 1000
MAX_EVENTS_PER_OBJECT: Final = 10_000
"""Most events one object may hold; a peer's signed `segment_size` above it is refused."""
MAX_SEGMENT_SIZE: Final = MAX_EVENTS_PER_OBJECT
MAX_INFLATED_BYTES: Final = 32 * 1024 * 1024
"""Most bytes one object may inflate to, whatever its name or the peer's checkpoint claims."""
DEFAULT_MAX_SEGMENT_BYTES: Final = 16 * 1024 * 1024
"""Most compressed bytes one object may have (refused before download)."""
MAX_CHECKPOINT_BYTES: Final = 64 * 1024
MAX_LISTED_OBJECTS: Final = 64
"""Most objects a checkpoint may list in `tail` and `extra` together."""
MAX_OBJECTS_PER_SYNC: Final = 64
"""Most objects fetched from one peer in one sync; the next sync goes on from there."""
MAX_LEVEL: Final = 40
TAIL_FANOUT: Final = 2  # pairs: fewer, larger tail objects compress nearly like one (a devnet log: 1.35x, not 1.6x)
LEGACY_LEVEL: Final = MAX_LEVEL - 1  # a layout-1 partial adopted as a tail object: never merged
MISSING_RETRIES: Final = 2  # an object deleted by compaction mid-read: re-read the checkpoint
# An event line is its body plus an envelope of a few hundred bytes; 4 KiB is generous.
MAX_LINE_BYTES: Final = MAX_BODY_BYTES + 4096
# Compressed bytes fed per step: a zstd block of 4 bytes can inflate to 128 KiB, so one step
# overshoots the cap by at most 4 MiB, whatever the frame header says.
_INFLATE_STEP: Final = 128
SS58_RE: Final = SS58_SHAPE  # the shape only; `is_ss58` also checks the checksum
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
OBJECT_NAME = re.compile(r"/seg/(\d{9})-(\d{9})\.jsonl\.zst$")

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

Range = tuple[int, int]


# -- naming and format ----------------------------------------------------------------------


def checkpoint_key(origin: str) -> str:
    """Key of `origin`'s signed checkpoint."""
    return f"log/{origin}/checkpoint.json"


def segment_key(origin: str, first: int, last: int) -> str:
    """Key of the object of `origin` holding origin_seq `first..last`."""
    return f"log/{origin}/seg/{first:09d}-{last:09d}.jsonl.zst"


def segment_ranges(after: int, size: int, segment_size: int) -> list[Range]:
    """Layout 1: the `(first, last)` ranges a reader at `after` fetches to reach `size`."""
    if segment_size < 1:
        raise MirrorError(f"segment_size must be >= 1, got {segment_size}")
    ranges: list[Range] = []
    if after >= size:
        return ranges
    k = max(0, after) // segment_size
    while k * segment_size < size:
        ranges.append((k * segment_size + 1, min((k + 1) * segment_size, size)))
        k += 1
    return ranges


def sealed_size(cp: Checkpoint) -> int:
    """How many events the full segments of `cp` hold (layout 2: where the tail starts)."""
    if cp.layout < 2:
        return cp.size // cp.segment_size * cp.segment_size
    return cp.tail[0][0] - 1 if cp.tail else cp.size


def next_object(cp: Checkpoint, after: int) -> Range:
    """The object a reader holding events `1..after` fetches next: among those holding
    `after + 1`, the one repeating the fewest events it has, then the one reaching furthest."""
    if after >= cp.size:
        raise MirrorError(f"nothing past #{after}: the checkpoint holds {cp.size} events")
    if cp.layout < 2:
        return segment_ranges(after, cp.size, cp.segment_size)[0]
    s, sealed = cp.segment_size, sealed_size(cp)
    candidates: list[Range] = []
    if after < sealed:
        k = after // s
        candidates.append((k * s + 1, (k + 1) * s))
    candidates += [(f, last) for f, last, _ in cp.tail] + [tuple(x) for x in cp.extra]  # type: ignore[misc]
    usable = [r for r in candidates if r[0] <= after + 1 <= r[1]]
    if not usable:
        raise MirrorError(f"{MALFORMED}: the checkpoint lists no object holding #{after + 1}")
    return min(usable, key=lambda r: (after + 1 - r[0], -r[1]))


def covering(cp: Checkpoint, after: int = 0) -> list[Range]:
    """Every object a reader at `after` fetches, in order, to reach the checkpoint's size."""
    ranges: list[Range] = []
    while after < cp.size:
        r = next_object(cp, after)
        ranges.append(r)
        after = r[1]
    return ranges


def named_objects(cp: Checkpoint) -> set[Range]:
    """The objects `cp` needs in the bucket (its full segments, tail and extras)."""
    s = cp.segment_size
    named = {(k * s + 1, (k + 1) * s) for k in range(sealed_size(cp) // s)}
    if cp.layout < 2:
        if cp.size > sealed_size(cp):
            named.add((sealed_size(cp) + 1, cp.size))
        return named
    return named | {(f, last) for f, last, _ in cp.tail} | {(f, last) for f, last in cp.extra}


def encode_segment(events: Sequence[Event]) -> bytes:
    """Events as zstd-compressed canonical JSON lines (one frame, content size in the header)."""
    raw = b"".join(encode_event(e) + b"\n" for e in events)
    return zstandard.ZstdCompressor(level=3).compress(raw)


_line_decoder = msgspec.json.Decoder(Event)


def _lines(data: bytes, cap: int) -> Iterator[bytes]:
    """The lines of one zstd frame, inflated in small steps and never past `cap` bytes in all.

    Nothing is allocated from the frame's own claims: a bomb is stopped within a step of `cap`.
    """
    dobj = zstandard.ZstdDecompressor().decompressobj()
    total = 0
    pending = b""
    try:
        for pos in range(0, len(data), _INFLATE_STEP):
            chunk = dobj.decompress(data[pos:pos + _INFLATE_STEP])
            total += len(chunk)
            if total > cap:
                raise MirrorError(f"{OVERSIZED}: inflates to more than {cap} bytes")
            if chunk:
                *complete, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    raise MirrorError(f"{MALFORMED}: a line is longer than {MAX_LINE_BYTES} bytes")
                yield from complete
            if dobj.eof:
                if dobj.unused_data or pos + _INFLATE_STEP < len(data):
                    raise MirrorError(f"{MALFORMED}: trailing bytes after the zstd frame")
                break
    except zstandard.ZstdError as exc:
        raise MirrorError(f"{MALFORMED}: not zstd ({exc})") from None
    if not dobj.eof:
        raise MirrorError(f"{MALFORMED}: the zstd frame is truncated")
    if pending:
        raise MirrorError(f"{MALFORMED}: segment does not end with a complete line (truncated)")


def decode_segment(data: bytes, *, origin: str, first: int, last: int) -> list[Event]:
    """Decode and check the shape of one object: origin, contiguous range `first..last`.

    Bounded by our limits, not the object's: at most `MAX_EVENTS_PER_OBJECT` events and
    `MAX_INFLATED_BYTES`, decoded line by line as the frame inflates. Hashes and links are not
    checked here (`verify_chain`, or the log's import, does that). Raises `MirrorError` whose
    message starts with the reason category.
    """
    count = last - first + 1
    if not 1 <= count <= MAX_EVENTS_PER_OBJECT or first < 1:
        raise MirrorError(f"{OVERSIZED}: #{first}-#{last} is more than {MAX_EVENTS_PER_OBJECT} events")
    events: list[Event] = []
    for line in _lines(data, min(count * MAX_LINE_BYTES, MAX_INFLATED_BYTES)):
        if len(events) == count:
            raise MirrorError(f"{MALFORMED}: holds more than the {count} events its name says")
        try:
            e = _line_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MirrorError(f"{MALFORMED}: a line is not a Leoma event ({exc})") from None
        if e.origin != origin:
            raise MirrorError(f"{MALFORMED}: event #{e.origin_seq} names origin {e.origin[:16]}, not the peer")
        if e.origin_seq != first + len(events):
            raise MirrorError(f"{MALFORMED}: expected #{first + len(events)}, found #{e.origin_seq}")
        events.append(e)
    if len(events) != count:
        raise MirrorError(f"{MALFORMED}: holds {len(events)} events, its name says {count}")
    return events


def check_checkpoint(cp: Checkpoint) -> None:
    """Refuse a signed but impossible checkpoint: sizes, hash shape, and a layout-2 list that
    does not cover `sealed+1 .. size` contiguously within our limits."""
    if cp.size < 0 or not 1 <= cp.segment_size <= MAX_EVENTS_PER_OBJECT:
        raise MirrorError(f"{OVERSIZED}: checkpoint size {cp.size} / segment_size {cp.segment_size} "
                          f"out of range (at most {MAX_EVENTS_PER_OBJECT} events per object)")
    if not _HEX64.match(cp.head) or (cp.size == 0 and cp.head != ZERO_HASH):
        raise MirrorError(f"{MALFORMED}: checkpoint head {cp.head[:20]!r} is not a 64-hex hash")
    if cp.layout not in (1, 2):
        raise MirrorError(f"{MALFORMED}: checkpoint layout {cp.layout} is not one this validator reads")
    if cp.layout == 1:
        if cp.tail or cp.extra:
            raise MirrorError(f"{MALFORMED}: a layout-1 checkpoint lists objects")
        return
    if len(cp.tail) + len(cp.extra) > MAX_LISTED_OBJECTS:
        raise MirrorError(f"{OVERSIZED}: the checkpoint lists more than {MAX_LISTED_OBJECTS} objects")
    sealed = sealed_size(cp)
    if sealed % cp.segment_size or not 0 <= cp.size - sealed < cp.segment_size:
        raise MirrorError(f"{MALFORMED}: the tail starts at #{sealed + 1}, not after a full segment")
    expect = sealed + 1
    for first, last, level in cp.tail:
        if first != expect or last < first or not 0 <= level <= MAX_LEVEL:
            raise MirrorError(f"{MALFORMED}: tail object #{first}-#{last} (level {level}) does not continue #{expect - 1}")
        expect = last + 1
    if expect != cp.size + 1:
        raise MirrorError(f"{MALFORMED}: the tail ends at #{expect - 1}, the checkpoint says {cp.size}")
    for first, last in cp.extra:
        if not 1 <= first <= last <= cp.size or last - first + 1 > MAX_EVENTS_PER_OBJECT:
            raise MirrorError(f"{MALFORMED}: extra object #{first}-#{last} lies outside 1..{cp.size}")


async def checkpoint_bytes(store: ObjectStore, origin: str) -> bytes | None:
    try:
        return await store.get(checkpoint_key(origin), max_bytes=MAX_CHECKPOINT_BYTES)
    except ObjectNotFound:
        return None
    except ObjectTooLarge as exc:
        raise MirrorError(f"{OVERSIZED}: {exc}") from None


def parse_checkpoint(data: bytes, origin: str) -> Checkpoint:
    try:
        cp = read_checkpoint(data, origin=origin)
    except SignatureError as exc:
        raise MirrorError(f"{BAD_SIGNATURE}: {exc}") from None
    check_checkpoint(cp)
    return cp


async def fetch_checkpoint(store: ObjectStore, origin: str) -> Checkpoint | None:
    """`origin`'s verified checkpoint, or None when none is published.

    `MirrorError` (reason first) for an oversized, unsigned or impossible one; `StorageError`
    when the bucket could not be read.
    """
    data = await checkpoint_bytes(store, origin)
    return None if data is None else parse_checkpoint(data, origin)


async def fetch_segment(store: ObjectStore, origin: str, first: int, last: int,
                        max_bytes: int = DEFAULT_MAX_SEGMENT_BYTES) -> list[Event]:
    """Download and decode one object; `MirrorError` for a bad or missing object."""
    return (await fetch_sized(store, origin, first, last, max_bytes))[0]


async def fetch_sized(store: ObjectStore, origin: str, first: int, last: int, max_bytes: int) -> tuple[list[Event], int]:
    key = segment_key(origin, first, last)
    try:
        data = await store.get(key, max_bytes=min(max_bytes, DEFAULT_MAX_SEGMENT_BYTES))
    except ObjectNotFound:
        raise MirrorError(f"{MISSING}: the checkpoint covers #{first}-#{last} but {key} is absent") from None
    except ObjectTooLarge as exc:
        raise MirrorError(f"{OVERSIZED}: {exc}") from None
    return decode_segment(data, origin=origin, first=first, last=last), len(data)


async def read_published(store: ObjectStore, origin: str, upto: int | None = None) -> tuple[Checkpoint | None, list[Event]]:
    """`origin`'s published events `1..upto` (default: all) read from `store`, either layout.

    Checks the signature, every object's shape and the chain up to the signed head.
    """
    cp = await fetch_checkpoint(store, origin)
    if cp is None:
        return None, []
    size = cp.size if upto is None else min(upto, cp.size)
    events: list[Event] = []
    prev = ZERO_HASH
    for first, last in covering(cp):
        if first > size:
            break
        got = await fetch_segment(store, origin, first, last)
        try:
            prev = verify_chain(got, prev=prev, start_seq=first)
        except EventError as exc:
            raise MirrorError(f"{BROKEN_CHAIN} in {segment_key(origin, first, last)}: {exc}") from None
        events.extend(got)
    if size == cp.size and prev != cp.head:
        raise MirrorError(f"{BROKEN_CHAIN}: the last event's hash is not the checkpoint's head")
    return cp, [e for e in events if e.origin_seq <= size]
