"""Peers that run the first implementation: reading their seed-layout buckets into the log.

A validator running the seed's code publishes no event log. Its bucket holds, per task `T`,
`T/evaluation_results/<safe hotkey>.json`: a verdict file signed by its hotkey (seed-spec §4.3,
§5.7). A peer with no published checkpoint is read here instead (`MirrorIn` calls
`sync_seed_peer` when it finds no checkpoint), so that its tasks count like anyone's.

Discovery is the seed's (`list_evaluated_task_ids`, seed-spec §4.4): list the bucket, keep
keys `<int>/evaluation_results/<safe peer>.json`, distinct task ids newest first, at most
`DISCOVERY_MAX_TASKS` (500). Unlike the seed:

* signatures are strict (`seedformat.read_verdict_file`): a missing, garbage or foreign
  signature rejects that file, recorded as `peer_segment_rejected` with its reason;
* every size is capped: objects listed per sync, bytes per file, entries per file, bytes per
  entry; one bad file never stops the others;
* a file is fetched again only when its listed ETag or size changes (an idle sync is one LIST),
  and at most `MAX_VERSIONS` contents of one task's file are recorded.

Each accepted file becomes own events of the observing validator, with their provenance:
one `seed_task_observed` (peer, task, bucket key, sha256 of the file, signature, number of
entries) and one `seed_verdict_observed` per entry (its canonical text, so the signed bytes
can be rebuilt and the signature re-verified by anyone). The peer has no hash chain of its
own, so it cannot be an origin; the projections read these events as the peer's own task and
verdicts (`projections.seedview`), and replay reads them like any other event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Final

import msgspec

from leoma.adapters.storage import ObjectStore
from leoma.errors import LeomaError, ObjectNotFound, ObjectTooLarge, SignatureError, StorageError
from leoma.log.eventlog import Draft, EventLog
from leoma.log.events import PeerSegmentRejected, SeedTaskObserved, SeedVerdictObserved
from leoma.mirror import seedformat

__all__ = [
    "DISCOVERY_MAX_TASKS",
    "SeedFile",
    "SeedFileRejected",
    "detect_layout",
    "published_layout",
    "discover_tasks",
    "observed_tasks",
    "read_seed_file",
    "sync_seed_peer",
    "verify_observation",
]

log = logging.getLogger("leoma.mirror.seedpeer")

DISCOVERY_MAX_TASKS: Final = 500
"""The seed's `WINDOW_DISCOVERY_MAX_TASKS`: only the newest 500 task ids of a peer are seen."""
MAX_LISTED_OBJECTS: Final = 200_000
"""Objects listed per peer per sync (the seed listed everything; a hostile bucket is capped)."""
MAX_FILE_BYTES: Final = 2 * 1024 * 1024
MAX_ENTRIES: Final = 1024
MAX_VERSIONS: Final = 3
"""Distinct contents of one task's file that are read; a peer rewriting more is refused (the log
would otherwise grow with every rewrite)."""
MAX_ENTRY_CHARS: Final = 24 * 1024
"""An entry's canonical text, at most; escaped into an event body it stays under 64 KiB."""

# Reason categories (the text after ':' gives the detail), as the mirror's.
BAD_SIGNATURE: Final = "bad signature"
MALFORMED: Final = "malformed object"
OVERSIZED: Final = "oversized object"
TOO_MANY: Final = "too many objects"
REWRITTEN: Final = "rewritten object"

LOG_LAYOUT: Final = "log"
SEED_LAYOUT: Final = "seed"
EMPTY_LAYOUT: Final = "none"


class SeedFileRejected(LeomaError):
    """A seed-layout verdict file was refused; the message starts with the reason category."""


class SeedFile(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted verdict file: its entries' canonical texts, and what scoring reads of each."""

    peer: str
    task_id: int
    object_key: str
    file_sha256: str
    signature: str
    entries: tuple[str, ...]
    verdicts: tuple[tuple[str, bool], ...]
    """`(miner, passed)` per entry; miner "" for an entry with a falsy `hotkey` (the seed skipped it),
    the JSON text of a truthy non-string one (the seed counted it; it can never be paid)."""


def _state_name(peer: str) -> str:
    return f"seedpeer/{peer}"


# -- discovery ------------------------------------------------------------------------------


async def discover_tasks(store: ObjectStore, peer: str, *, max_tasks: int = DISCOVERY_MAX_TASKS,
                         max_objects: int = MAX_LISTED_OBJECTS) -> tuple[list[tuple[int, Any]], bool]:
    """The peer's verdict files as `(task_id, ObjectInfo)`, newest task first, at most `max_tasks`.

    Only `<int>/evaluation_results/<safe peer>.json` counts (the seed's key rule); files of other
    validators in the same bucket are not this peer's. The second value is True when the listing
    stopped at `max_objects` (the bucket is larger than any honest one).
    """
    name = seedformat.safe_name(peer)
    found: dict[int, Any] = {}
    listed = 0
    capped = False
    lister = getattr(store, "list", None)
    if lister is None:
        raise StorageError(f"the store of {peer[:12]} cannot list objects: a seed-layout peer needs LIST")
    async for info in lister(""):
        listed += 1
        if listed > max_objects:
            capped = True
            break
        parsed = seedformat.parse_verdict_key(info.key)
        if parsed is not None and parsed[1] == name:
            found[parsed[0]] = info
    newest = sorted(found, reverse=True)[: max(0, max_tasks)]
    return [(t, found[t]) for t in newest], capped


async def detect_layout(store: ObjectStore, peer: str) -> str:
    """`log` (a published checkpoint), `seed` (verdict files only) or `none` (nothing yet)."""
    return (await published_layout(store, peer))[0]


async def published_layout(store: ObjectStore, peer: str) -> tuple[str, int]:
    """The layout (see `detect_layout`) and, for a seed layout, how many task files discovery sees."""
    from leoma.mirror.segments import checkpoint_key

    if await store.head(checkpoint_key(peer)) is not None:
        return LOG_LAYOUT, 0
    tasks, _ = await discover_tasks(store, peer)
    return (SEED_LAYOUT if tasks else EMPTY_LAYOUT), len(tasks)


def observed_tasks(log_: EventLog, peer: str) -> int:
    """How many of the peer's task files this validator has accepted (at least one version of)."""
    raw = log_.get_state(_state_name(peer))
    seen: dict[str, list[Any]] = msgspec.json.decode(raw) if raw else {}
    return sum(1 for v in seen.values() if v[2] == "ok" or (len(v) > 3 and int(v[3]) > 0))


# -- one file -------------------------------------------------------------------------------


def read_seed_file(raw: bytes, peer: str, task_id: int, key: str) -> SeedFile:
    """An accepted verdict file, or `SeedFileRejected` with the reason (strict signature, caps)."""
    if len(raw) > MAX_FILE_BYTES:
        raise SeedFileRejected(f"{OVERSIZED}: {key} is {len(raw)} bytes, over {MAX_FILE_BYTES}")
    try:
        entries = seedformat.read_verdict_file(raw, peer)
    except SignatureError as exc:
        raise SeedFileRejected(f"{BAD_SIGNATURE}: {exc}") from None
    except StorageError as exc:
        raise SeedFileRejected(f"{MALFORMED}: {exc}") from None
    if len(entries) > MAX_ENTRIES:
        raise SeedFileRejected(f"{OVERSIZED}: {key} holds {len(entries)} verdicts, over {MAX_ENTRIES}")
    texts = tuple(json.dumps(e, sort_keys=True) for e in entries)
    for i, text in enumerate(texts):
        if len(text) > MAX_ENTRY_CHARS:
            raise SeedFileRejected(f"{OVERSIZED}: verdict #{i} of {key} is {len(text)} characters, over {MAX_ENTRY_CHARS}")
    signature = str(json.loads(raw)["signature"])
    verdicts = []
    for e in entries:
        hotkey = e.get("hotkey")
        # The seed kept entries with a truthy hotkey (of any JSON type) and read `bool(passed)`.
        miner = hotkey if isinstance(hotkey, str) else (json.dumps(hotkey, sort_keys=True) if hotkey else "")
        verdicts.append((miner, bool(e.get("passed"))))
    return SeedFile(peer=peer, task_id=task_id, object_key=key, file_sha256=hashlib.sha256(raw).hexdigest(),
                    signature=signature, entries=texts, verdicts=tuple(verdicts))


def signed_bytes(entries: tuple[str, ...] | list[str]) -> bytes:
    """The bytes the seed signed the sha256 of, rebuilt from the entries' canonical texts."""
    return ("[" + ", ".join(entries) + "]").encode("utf-8")


def verify_observation(task: SeedTaskObserved, verdicts: list[SeedVerdictObserved]) -> bool:
    """Whether recorded seed observations carry the peer's valid signature over their entries."""
    from bittensor_core import verify

    ordered = sorted(verdicts, key=lambda v: v.index)
    if [v.index for v in ordered] != list(range(task.entries)):
        return False
    text = task.signature[2:] if task.signature[:2] in ("0x", "0X") else task.signature
    try:
        sig = bytes.fromhex(text)
        return bool(verify(hashlib.sha256(signed_bytes([v.entry for v in ordered])).digest(), sig, task.peer))
    except ValueError:
        return False


def observation_drafts(f: SeedFile, block: int) -> list[Draft]:
    """The own events recording an accepted file: the task, then one per entry."""
    base = f"seed/{f.peer}/{f.task_id}/{f.file_sha256[:16]}"
    drafts = [Draft(base, block, SeedTaskObserved(peer=f.peer, task_id=f.task_id, object_key=f.object_key,
                                                  file_sha256=f.file_sha256, signature=f.signature,
                                                  entries=len(f.entries)))]
    for i, (text, (miner, passed)) in enumerate(zip(f.entries, f.verdicts, strict=True)):
        drafts.append(Draft(f"{base}/{i}", block, SeedVerdictObserved(
            peer=f.peer, task_id=f.task_id, file_sha256=f.file_sha256, index=i, miner=miner, passed=passed,
            entry=text)))
    return drafts


# -- one peer -------------------------------------------------------------------------------


def _rejection(log_: EventLog, peer: str, key: str, reason: str, block: int) -> None:
    reason = reason[:1000]
    digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
    log_.append(PeerSegmentRejected(peer=peer, object_key=key, reason=reason),
                key=f"peer/{peer}/rejected/{key}/{digest}"[:512], block=block)
    log.warning("seed peer %s: rejected %s: %s", peer[:12], key, reason)


async def sync_seed_peer(log_: EventLog, peer: str, store: ObjectStore, report: Any = None,
                         *, block: int | None = None) -> int:
    """Read a seed-layout peer's new or changed verdict files into `log_`; the events appended.

    Accepted files become `seed_task_observed` + `seed_verdict_observed` events; refused ones a
    `peer_segment_rejected` with the reason. `report` (a `mirror.PeerSync`) is filled in:
    `layout`, `objects`, `bytes`, `imported`, and `rejected` (the first refusal of this sync).
    `block` is the chain head the caller knows (0 when none: the envelope's block is only
    informative here; scoring places a seed task at its rotation, see `projections.seedview`).
    """
    at = block if block is not None else 0
    tasks, capped = await discover_tasks(store, peer)
    if report is not None:
        report.objects += 1
        if tasks:
            report.layout = SEED_LAYOUT
    if capped:
        _rejection(log_, peer, "", f"{TOO_MANY}: the bucket lists more than {MAX_LISTED_OBJECTS} objects; "
                                  "only the first ones were read", at)
    raw_state = log_.get_state(_state_name(peer))
    seen: dict[str, list[Any]] = msgspec.json.decode(raw_state) if raw_state else {}
    appended = 0
    first_rejection = ""
    for task_id, info in sorted(tasks):
        stamp = [info.etag, info.size]
        before_stamp = seen.get(info.key, [None, None, "", 0])
        if before_stamp[:2] == stamp:
            continue  # unchanged since it was read: nothing to do
        versions = int(before_stamp[3]) if len(before_stamp) > 3 else 0
        outcome = "ok"
        try:
            if versions >= MAX_VERSIONS:
                raise SeedFileRejected(f"{REWRITTEN}: {info.key} changed again after {versions} versions were read; "
                                       "the peer keeps rewriting it")
            if info.size > MAX_FILE_BYTES:
                raise SeedFileRejected(f"{OVERSIZED}: {info.key} is {info.size} bytes, over {MAX_FILE_BYTES}")
            try:
                raw = await store.get(info.key, max_bytes=MAX_FILE_BYTES)
            except ObjectTooLarge as exc:
                raise SeedFileRejected(f"{OVERSIZED}: {exc}") from None
            except ObjectNotFound:
                continue  # deleted since the listing: the next sync sees the bucket as it is
            if report is not None:
                report.objects += 1
                report.bytes += len(raw)
            accepted = read_seed_file(raw, peer, task_id, info.key)
            before = log_.head(log_.own or "").origin_seq
            result = log_.append_many(observation_drafts(accepted, at))
            added = sum(e.origin_seq > before for e in result.events)
            appended += added
            versions += bool(added)
        except SeedFileRejected as exc:
            outcome = "rejected"
            first_rejection = first_rejection or f"{info.key}: {exc}"
            _rejection(log_, peer, info.key, str(exc), at)
        seen[info.key] = [*stamp, outcome, versions]
        log_.set_state(_state_name(peer), msgspec.json.encode(seen))
    if report is not None:
        report.imported += appended
        if first_rejection and not report.rejected:
            report.rejected, report.rejected_key = first_rejection, first_rejection.split(":", 1)[0]
    if appended:
        log.info("seed peer %s: %d events from %d verdict files", peer[:12], appended, len(tasks))
    return appended
