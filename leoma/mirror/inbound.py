"""Mirror in: peers' published logs into the local log, every object checked and bounded by our limits.

The layout and its limits are `leoma.mirror.segments`'s. A refusal is recorded once per peer,
object and reason as `peer_segment_rejected`; the peer's position never advances past it.
Importing appends nothing of its own: the imported events are the progress.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import msgspec

from leoma.adapters.signing import Checkpoint, is_ss58
from leoma.adapters.storage import ObjectStore
from leoma.errors import (
    ChainBroken,
    ConflictError,
    EventError,
    GapError,
    LeomaError,
    MirrorError,
    StorageError,
)
from leoma.log.consensus import DEFAULT, Consensus
from leoma.log.eventlog import EventLog
from leoma.log.events import (
    ZERO_HASH,
    AllowlistVerified,
    Event,
    PeerSegmentRejected,
    TaskOpened,
    VerdictRecorded,
    decode_body,
    verify_chain,
)
from leoma.mirror.segments import (
    BAD_HOTKEY,
    BROKEN_CHAIN,
    DEFAULT_MAX_SEGMENT_BYTES,
    MALFORMED,
    MAX_OBJECTS_PER_SYNC,
    MISSING,
    MISSING_RETRIES,
    NOT_ENTITLED,
    REWRITTEN,
    UNKNOWN_DIGEST,
    checkpoint_bytes,
    checkpoint_key,
    covering,
    fetch_checkpoint,
    fetch_sized,
    next_object,
    parse_checkpoint,
    segment_key,
)
from projections.rotation import rightful_sampler_at

__all__ = [
    "MirrorIn",
    "PeerSync",
    "verify_published",
]

log = logging.getLogger("leoma.mirror")


class Peer(NamedTuple):
    """A peer validator: its hotkey and the store its log is published in."""

    hotkey: str
    store: ObjectStore


class PeerSync(msgspec.Struct, kw_only=True):
    """What one sync of one peer did.

    `rejected` names the refused object's reason (recorded once as an event); `waiting` says
    why nothing past `head` was imported yet although nothing is wrong with the peer (kept
    locally only); `error` is a bucket failure (retried, never recorded).
    """

    peer: str
    checkpoint_size: int | None = None
    checkpoint_block: int = 0
    imported: int = 0
    objects: int = 0
    bytes: int = 0
    head: int = 0
    rejected: str = ""
    rejected_key: str = ""
    waiting: str = ""
    error: str = ""
    layout: str = ""
    """`log` (a published event log), `seed` (the first implementation's layout) or ""."""


class _Rejection(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


class _PeerState(msgspec.Struct, frozen=True, kw_only=True):
    """Local bookkeeping of one peer: the checkpoint fully imported last, why it waits."""

    checkpoint_sha: str = ""
    size: int = 0
    block: int = 0
    waiting: str = ""


def _peer_state_name(peer: str) -> str:
    return f"mirror/in/{peer}"


class MirrorIn:
    """Imports peers' published logs into `log`, recording every refusal once.

    `allowlist_origins` says whose `allowlist_verified` events decide entitlement (default: the
    log's own; the owner's API passes the validators it trusts).
    """

    def __init__(self, log: EventLog, peers: Sequence[Peer], consensus_digest: str | Collection[str],
                 max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES, *, consensus: Consensus = DEFAULT,
                 max_segments_per_sync: int = MAX_OBJECTS_PER_SYNC, concurrency: int = 4,
                 allowlist_origins: Callable[[], Collection[str]] | None = None) -> None:
        import asyncio

        if log.own is None:
            raise MirrorError("MirrorIn records rejections as own events: open the log with own=")
        self.log = log
        self.peers = [p for p in peers if p.hotkey != log.own]
        self.digests = {consensus_digest} if isinstance(consensus_digest, str) else set(consensus_digest)
        self.max_segment_bytes = min(max_segment_bytes, DEFAULT_MAX_SEGMENT_BYTES)
        self.consensus = consensus
        self.max_segments_per_sync = max(1, min(max_segments_per_sync, MAX_OBJECTS_PER_SYNC))
        own = log.own
        self.allowlist_origins = allowlist_origins or (lambda: (own,))
        self._gate = asyncio.Semaphore(max(1, concurrency))
        self._allowlists: dict[str, tuple[int, tuple[int, int, AllowlistVerified] | None]] = {}
        """The trusted origins' latest allowlists, as `_Entitlement` last read them."""

    async def sync(self, only: str | None = None, *, block: int | None = None) -> list[PeerSync]:
        """Sync every peer (or only `only`); one peer's failure never stops the others."""
        import asyncio

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
            report.head = self.log.head(peer.hotkey).origin_seq if is_ss58(peer.hotkey) else 0
            return report

    def _record_rejection(self, hotkey: str, rej: _Rejection, report: PeerSync, block: int | None) -> None:
        reason = rej.reason[:1000]
        digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
        key = f"peer/{hotkey}/rejected/{rej.key}/{digest}"[:512]
        if self.log.get(self.log.own or "", key) is not None:
            return  # the same refusal again on a retry: recorded once
        at_seq = self.log.head(hotkey).origin_seq + 1 if is_ss58(hotkey) else 0
        body = PeerSegmentRejected(peer=hotkey, object_key=rej.key, reason=reason, at_seq=at_seq)
        self.log.append(body, key=key, block=block if block is not None else report.checkpoint_block)
        log.warning("mirror rejected peer=%s object=%s: %s", hotkey[:12], rej.key, reason)

    def _peer_state(self, hk: str) -> _PeerState:
        raw = self.log.get_state(_peer_state_name(hk))
        return msgspec.json.decode(raw, type=_PeerState) if raw else _PeerState()

    def _set_peer_state(self, hk: str, state: _PeerState) -> None:
        if state != self._peer_state(hk):
            self.log.set_state(_peer_state_name(hk), msgspec.json.encode(state))

    async def sync_peer(self, peer: Peer, report: PeerSync, block: int | None = None) -> None:
        """Fetch the checkpoint and new objects of one peer and import them (see module doc)."""
        hk = peer.hotkey
        if not is_ss58(hk):
            raise _Rejection(f"log/{hk}", f"{BAD_HOTKEY}: {hk[:60]!r} is not an SS58 address")
        ckey = checkpoint_key(hk)
        try:
            data = await checkpoint_bytes(peer.store, hk)
        except MirrorError as exc:
            raise _Rejection(ckey, str(exc)) from None
        report.objects += 1
        if data is None:
            # No published log: the peer may run the first implementation (seed layout).
            from leoma.mirror.seedpeer import sync_seed_peer

            await sync_seed_peer(self.log, hk, peer.store, report, block=block)
            return
        report.layout = "log"
        sha = hashlib.sha256(data).hexdigest()
        state = self._peer_state(hk)
        head = self.log.head(hk)
        if sha == state.checkpoint_sha and head.origin_seq == state.size:
            report.checkpoint_size, report.checkpoint_block = state.size, state.block  # idle: nothing new
            return
        retries = MISSING_RETRIES
        while True:
            try:
                cp = parse_checkpoint(data, hk)
            except MirrorError as exc:
                raise _Rejection(ckey, str(exc)) from None
            report.checkpoint_size, report.checkpoint_block = cp.size, cp.block
            if cp.consensus_digest not in self.digests:
                raise _Rejection(ckey, f"{UNKNOWN_DIGEST}: {cp.consensus_digest[:16]} is not a consensus this validator runs")
            try:
                waiting = await self._import_objects(peer, cp, report)
            except _Missing as gone:
                # Compaction may have replaced the object since the checkpoint was read.
                fresh = await checkpoint_bytes(peer.store, hk)
                report.objects += 1
                if fresh is None or fresh == data or retries == 0:
                    raise _Rejection(gone.key, gone.reason) from None
                data, retries = fresh, retries - 1
                sha = hashlib.sha256(data).hexdigest()
                continue
            break
        done = self.log.head(hk).origin_seq == cp.size
        if waiting and waiting != state.waiting:
            log.info("mirror peer=%s waits at #%d: %s", hk[:12], self.log.head(hk).origin_seq, waiting)
        report.waiting = waiting
        self._set_peer_state(hk, _PeerState(checkpoint_sha=sha if done else "", size=cp.size, block=cp.block,
                                            waiting=waiting))

    async def _import_objects(self, peer: Peer, cp: Checkpoint, report: PeerSync) -> str:
        """Import objects until the peer's checkpoint or our limit; returns why it waits ("")."""
        hk = peer.hotkey
        head = self.log.head(hk)
        if cp.size < head.origin_seq or (cp.size == head.origin_seq and cp.head != head.hash):
            raise _Rejection(checkpoint_key(hk), f"{REWRITTEN}: checkpoint #{cp.size} contradicts the imported #{head.origin_seq}")
        entitled = _Entitlement(self.log, hk, self.consensus, self.allowlist_origins, self._allowlists)
        fetched = 0
        while head.origin_seq < cp.size and fetched < self.max_segments_per_sync:
            first, last = next_object(cp, head.origin_seq)
            key = segment_key(hk, first, last)
            try:
                events, size = await fetch_sized(peer.store, hk, first, last, self.max_segment_bytes)
            except MirrorError as exc:
                if str(exc).startswith(MISSING):
                    raise _Missing(key, str(exc)) from None
                raise _Rejection(key, str(exc)) from None
            fetched += 1
            report.objects += 1
            report.bytes += size
            new = self._check_against_local(key, events, cp)
            while new:
                allowed, verdict = entitled.scan(new)
                self._import(key, new[:allowed], report)
                if verdict is None:
                    break
                rejected, reason = verdict
                if rejected:
                    raise _Rejection(key, f"{NOT_ENTITLED}: #{new[allowed].origin_seq} {reason}")
                if any(e.kind == "allowlist_verified" for e in new[:allowed]) and entitled.reload():
                    new = new[allowed:]  # an allowlist just imported may settle it
                    continue
                return f"#{new[allowed].origin_seq} {reason}"
            head = self.log.head(hk)
        return ""

    def _import(self, key: str, events: list[Event], report: PeerSync) -> None:
        if not events:
            return
        try:
            report.imported += self.log.import_events(events)
        except ChainBroken as exc:
            raise _Rejection(key, f"{BROKEN_CHAIN}: {exc}") from None
        except (GapError, ConflictError, EventError) as exc:
            raise _Rejection(key, f"{MALFORMED}: {exc}") from None

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


class _Missing(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key, self.reason = key, reason


class _Entitlement:
    """Whether a peer was the rightful producer of the tasks and verdicts it publishes.

    The allowlist is the newest `allowlist_verified` of the trusted origins; the rule is
    `projections.rotation.rightful_sampler_at`. Without an allowlist nothing is decided: the
    peer waits at its first task or verdict.
    """

    def __init__(self, log: EventLog, peer: str, consensus: Consensus,
                 origins: Callable[[], Collection[str]],
                 newest: dict[str, tuple[int, tuple[int, int, AllowlistVerified] | None]] | None = None) -> None:
        self.log, self.peer, self.consensus, self.origins = log, peer, consensus, origins
        self.newest = {} if newest is None else newest
        """origin -> (local seq looked up to, its latest allowlist then): shared across syncs by
        `MirrorIn`, so each sync reads only the rows appended since."""
        self.allow: AllowlistVerified | None = None
        self.loaded = False
        self.opened: set[int] | None = None
        self.complete = False
        """Whether `opened` holds every task the peer opened (after a full read)."""
        self.seen: set[int] = set()
        """Task ids whose `task_opened` passed in this sync (possibly not imported yet)."""
        self.found: set[int] = set()
        """Task ids found opened under their key (a bounded cache)."""

    def reload(self) -> bool:
        """Look for an allowlist again; True when one is known now."""
        self.loaded = False
        return self._allowlist() is not None

    def _allowlist(self) -> AllowlistVerified | None:
        if not self.loaded:
            self.loaded = True
            newest: tuple[int, int] | None = None
            for origin in sorted(set(self.origins())):
                found = self._latest_of(origin)
                if found is not None and (newest is None or found[:2] > newest):
                    newest, self.allow = found[:2], found[2]
        return self.allow

    def _latest_of(self, origin: str) -> tuple[int, int, AllowlistVerified] | None:
        """`origin`'s latest `allowlist_verified` (block, local seq, body), read incrementally."""
        upto, held = self.newest.get(origin, (0, None))
        last = self.log.last_seq()
        if last > upto:
            row = self.log.last_of_kind(origin, "allowlist_verified", after=upto)
            if row is not None:
                body = decode_body(row.body, row.v)
                held = (row.block, row.seq, body) if isinstance(body, AllowlistVerified) else None
            self.newest[origin] = (last, held)
        return held

    def scan(self, events: Sequence[Event]) -> tuple[int, tuple[bool, str] | None]:
        """How many leading events pass, and for the first that does not: (refused?, why)."""
        for i, e in enumerate(events):
            problem = self.check(e)
            if problem is not None:
                return i, problem
        return len(events), None

    def check(self, e: Event) -> tuple[bool, str] | None:
        """None when `e` may be imported; (True, why) when it is refused; (False, why) to wait."""
        body = bytes(e.body)
        if b"task_opened" not in body and b"verdict_recorded" not in body:
            return None  # most events: skip decoding
        kind = e.kind
        if kind not in ("task_opened", "verdict_recorded"):
            return None
        allow = self._allowlist()
        if allow is None or not allow.validators:
            return False, f"{kind} cannot be checked yet: no allowlist has been verified"
        if kind == "task_opened":
            opened = e.payload()
            assert isinstance(opened, TaskOpened)
            interval = int(allow.interval) or self.consensus.rotation.interval
            rightful = rightful_sampler_at(sorted(allow.validators), interval, self.consensus.grace_blocks(interval),
                                           opened.task_id, e.block)
            if rightful != self.peer or opened.sampler != self.peer:
                return True, (f"task_opened for task {opened.task_id} at block {e.block}: the rightful sampler was "
                              f"{(rightful or 'nobody')[:16]}")
            if self.opened is not None:
                self.opened.add(opened.task_id)
            self.seen.add(opened.task_id)
            return None
        verdict = e.payload()
        assert isinstance(verdict, VerdictRecorded)
        if not self._was_opened(verdict.task_id):
            return True, f"verdict_recorded for task {verdict.task_id}, which this peer did not open"
        return None

    def _opened(self) -> set[int]:
        """Every task id the peer has opened in this log (the full read; see `_was_opened`)."""
        if self.opened is None:
            self.opened = set()
            for row in self.log.rows(origin=self.peer, kinds=["task_opened"]):
                self.opened.add(msgspec.json.decode(row.body, type=TaskOpened).task_id)
            self.complete = True
        return self.opened

    def _was_opened(self, task_id: int) -> bool:
        """Whether the peer opened `task_id`: the tasks seen in this sync, else its event under the
        sampler's key `task/<id>/opened` (one index read), else -- a task opened under another
        key -- the full read of its `task_opened` events, once per sync (the old rule, exactly)."""
        if task_id in self.seen or task_id in self.found:
            return True
        if self.complete:
            return task_id in self._opened()
        row = self.log.row_of(self.peer, f"task/{task_id}/opened")
        if (row is not None and row.kind == "task_opened"
                and msgspec.json.decode(row.body, type=_TaskId).task_id == task_id):
            if len(self.found) >= _FOUND_LIMIT:
                self.found.clear()  # bounded: a sync's verdicts name the few tasks of its window
            self.found.add(task_id)
            return True
        return task_id in self._opened()


class _TaskId(msgspec.Struct):
    task_id: int


_FOUND_LIMIT = 4096
"""Task ids an `_Entitlement` remembers as opened between index reads."""


async def verify_published(bucket_url: str, hotkey: str, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
                           store: ObjectStore | None = None, consensus_digest: str | None = None) -> dict[str, Any]:
    """Check `hotkey`'s published log in `bucket_url` end to end: signature, objects, chain, head.

    `consensus_known` compares the checkpoint's digest with `consensus_digest` (default: the
    packaged consensus). Returns `{"ok", "message", "events", "segments", "bytes", "size",
    "head", "consensus_digest", "consensus_known", "layout"}`; never raises for a bad log.
    """
    from leoma.adapters.storage import open_store

    report: dict[str, Any] = {"ok": False, "message": "", "hotkey": hotkey, "events": 0, "segments": 0, "bytes": 0}
    if not is_ss58(hotkey):
        report["message"] = f"{BAD_HOTKEY}: {hotkey[:60]!r} is not an SS58 address"
        return report
    own_store = store is None
    st = store if store is not None else open_store(bucket_url)
    try:
        cp = await fetch_checkpoint(st, hotkey)
        if cp is None:
            report["message"] = f"no checkpoint at {checkpoint_key(hotkey)} in {bucket_url}: nothing is published"
            return report
        report.update(size=cp.size, head=cp.head, consensus_digest=cp.consensus_digest, layout=cp.layout,
                      consensus_known=cp.consensus_digest == (consensus_digest or DEFAULT.digest),
                      segment_size=cp.segment_size)
        prev = ZERO_HASH
        for first, last in covering(cp):
            key = segment_key(hotkey, first, last)
            events, size = await fetch_sized(st, hotkey, first, last, max_segment_bytes)
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
        report["message"] = (f"ok: {cp.size} events in {report['segments']} objects verify; "
                             f"head {cp.head[:16]} is signed by {hotkey[:12]}…")
    except (MirrorError, StorageError) as exc:
        report["message"] = f"BROKEN: {exc}"
    finally:
        if own_store:
            await st.close()
    return report
