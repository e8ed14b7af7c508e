"""Events: the envelope, every kind of thing a validator observes or decides, and their bytes.

An event is `Event(origin, origin_seq, key, v, block, at, body, prev, hash)`:

* `origin` is the hotkey that recorded it and `origin_seq` its position (1, 2, 3, ...) in that
  origin's chain; `prev` is the previous event's `hash` (64 zeros before the first).
* `key` is the natural idempotency key (`verdict/<task>/<miner>`): appending the same
  `(origin, key)` with the same body is a no-op, with another body a recorded conflict.
* `body` is one of the tagged `Body` kinds below, kept as its exact canonical bytes.
* `hash = sha256(bytes.fromhex(prev) || canonical(event))`, where `canonical` is the
  deterministic msgspec JSON of every field except `prev` and `hash`.
* `at` is wall-clock seconds, for people; no projection reads it.

Rules for the bodies (they keep replay exact and old bytes valid forever):

* No floats anywhere: scores are integers, rates are exact fractions (`"3/4"`), weights are the
  chain's u16 integers, stakes are rao. Encoding validates by decoding, so NaN or infinity in any
  field is refused with an `EventError`.
* Every body Struct uses `omit_defaults=True`: a field added later with a default leaves the
  bytes of older events unchanged. A structural change bumps the kind's version in `VERSIONS`
  and registers a pure upcaster with `register_upcaster`; stored bytes are never rewritten.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, Union

import msgspec

from leoma.errors import EventError, UnknownKind

ZERO_HASH: Final = "0" * 64
MAX_BODY_BYTES: Final = 64 * 1024
"""Largest canonical body accepted: a body bigger than this is a bug or an attack."""

MAX_KEY_CHARS: Final = 512
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    """Base of every event body; the subclass's tag is the event's `kind`."""

    @classmethod
    def kind_name(cls) -> str:
        """The tag this body is stored under."""
        return str(cls.__struct_config__.tag)


class Part(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of the small records nested inside bodies."""


# -- the chain ------------------------------------------------------------------------------


class ChainHeadObserved(Body, frozen=True, tag="chain_head_observed", kw_only=True):
    """The chain's head as this validator saw it (the envelope's `block` is the height)."""

    block_hash: str


class MetagraphObserved(Body, frozen=True, tag="metagraph_observed", kw_only=True):
    """A metagraph snapshot. Lists are indexed by uid; stakes are integer rao."""

    netuid: int
    owner_hotkey: str
    hotkeys: tuple[str, ...]
    coldkeys: tuple[str, ...] = ()
    stakes_rao: tuple[int, ...] = ()
    validator_permit: tuple[bool, ...] = ()
    last_update: tuple[int, ...] = ()


class CommitmentObserved(Body, frozen=True, tag="commitment_observed", kw_only=True):
    """A hotkey's latest revealed commitment was new or changed.

    `commit_block` is the block of the last commitment (the miner's seniority) and
    `commit_count` how many the chain holds for this hotkey. `data` is the raw text.
    """

    netuid: int
    hotkey: str
    commit_block: int
    commit_count: int
    data: str


class AllowlistVerified(Body, frozen=True, tag="allowlist_verified", kw_only=True):
    """The owner's on-chain allowlist digest matched the file in the source bucket."""

    owner_hotkey: str
    digest: str
    interval: int
    validators: tuple[str, ...]


class AllowlistRejected(Body, frozen=True, tag="allowlist_rejected", kw_only=True):
    """The allowlist could not be verified; `reason` says why (tamper, missing, malformed)."""

    owner_hotkey: str = ""
    digest: str = ""
    reason: str


# -- miners --------------------------------------------------------------------------------


class CheckOutcome(Part, frozen=True, kw_only=True):
    """One step of miner validation, in the seed's order."""

    name: str
    ok: bool
    detail: str = ""


class MinerChecked(Body, frozen=True, tag="miner_checked", kw_only=True):
    """A miner's validation result (recorded when it changed, and once per epoch as a heartbeat)."""

    hotkey: str
    uid: int
    commit_block: int = 0
    model_name: str = ""
    model_revision: str = ""
    chute_id: str = ""
    chute_slug: str = ""
    chute_hot: bool = False
    model_hash: str = ""
    valid: bool
    invalid_reason: str = ""
    checks: tuple[CheckOutcome, ...] = ()
    heartbeat: bool = False


# -- tasks ---------------------------------------------------------------------------------


class TaskOpened(Body, frozen=True, tag="task_opened", kw_only=True):
    """A sampler opened task `task_id` (= rotation index) on its turn.

    The clip is chosen from `block_hash`, so anyone can re-derive the choice.
    """

    task_id: int
    interval: int
    sampler: str
    failover_step: int = 0
    block_hash: str
    source_key: str
    clip_start_ms: int
    clip_ms: int
    prompt: str
    prompt_model: str
    prompt_version: str
    miners: tuple[str, ...]


class GateMeasurements(Part, frozen=True, kw_only=True):
    """What the video gates measured on one miner's video (integers only, so replay is exact).

    `projections.gates.gate_reason` turns these and the consensus `[gates]` into the verdict;
    the measuring itself is `leoma.adapters.gates.measure`.
    """

    decoded: bool = False
    """Every frame decoded without an error."""
    decode_error: str = ""
    codec: str = ""
    frames: int = 0
    """Frames decoded."""
    declared_frames: int = 0
    """Frames the container says it holds (0 when it does not say)."""
    fps_milli: int = 0
    duration_ms: int = 0
    width: int = 0
    height: int = 0
    first_frame_psnr_cdb: int = 0
    """PSNR of the first frame against the conditioning image, in hundredths of a dB (10000 = identical)."""
    motion_c: int = 0
    """Mean absolute difference from "repeat the first frame", in hundredths of a gray level."""
    max_cut_milli: int = 0
    """Largest scene score between two consecutive frames, per mille (a hard cut scores high)."""
    hashes: tuple[str, ...] = ()
    """Perceptual (DCT) hashes of evenly sampled frames, 256 bits each, as hex."""
    source_distance: int = -1
    """Mean over the later sampled frames of the nearest source-clip frame's Hamming distance (-1: not measured)."""


class MinerResponded(Body, frozen=True, tag="miner_responded", kw_only=True):
    """What one miner's chute returned for a task.

    `status` is `accepted` (a valid video, stored under `object_key`) or `failed`;
    `failure_class` is `miner` (counts against it) or `infra` (does not).
    """

    task_id: int
    miner: str
    status: str
    failure_class: str = ""
    detail: str = ""
    latency_ms: int = 0
    object_key: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    frames: int = 0
    reason: str = ""
    """For a miner fault, its short code: `timeout`, `gate:<name>`, `returned_source_clip`, `http_<status>`..."""
    gates: GateMeasurements | None = None


class VerdictRecorded(Body, frozen=True, tag="verdict_recorded", kw_only=True):
    """The judge's verdict on one miner's video for a task."""

    task_id: int
    miner: str
    passed: bool
    overall: int
    confidence: int = 0
    aspects: dict[str, int] = {}
    judge_model: str
    prompt_version: str
    reasoning: str = ""
    major_issues: tuple[str, ...] = ()
    reason: str = ""
    """Set when the verdict was reached without the judge: the miner fault or gate that failed it."""


class JudgeFailed(Body, frozen=True, tag="judge_failed", kw_only=True):
    """The judge could not give a verdict; excluded from scoring, never a miner fail."""

    task_id: int
    miner: str
    judge_model: str
    prompt_version: str
    attempts: int
    reason: str


class TaskClosed(Body, frozen=True, tag="task_closed", kw_only=True):
    """A task is finished; its seed-format verdict file was published (when non-empty)."""

    task_id: int
    verdict_key: str = ""
    verdict_sha256: str = ""
    evaluated: int = 0
    passed: int = 0
    reason: str = ""


# -- peers ---------------------------------------------------------------------------------


class PeerSegmentImported(Body, frozen=True, tag="peer_segment_imported", kw_only=True):
    """A peer's published segment verified and was imported into the local log."""

    peer: str
    segment_key: str
    first_seq: int
    last_seq: int
    head_hash: str


class PeerSegmentRejected(Body, frozen=True, tag="peer_segment_rejected", kw_only=True):
    """A peer's object was refused; the peer's position did not advance past it."""

    peer: str
    object_key: str
    reason: str
    at_seq: int = 0


class SeedTaskObserved(Body, frozen=True, tag="seed_task_observed", kw_only=True):
    """This validator read a seed-layout peer's signed verdict file for task `task_id`.

    A peer running the first implementation has no event log: its bucket holds
    `<task>/evaluation_results/<peer>.json`. The observer records what it read, as its own
    event: the file's `object_key`, the sha256 of its bytes, the peer's `signature`, and the
    number of verdict entries (each one a `seed_verdict_observed`). Scoring treats the task as
    opened by `peer`; anyone can re-verify the signature from the entries' `entry` texts.
    """

    peer: str
    task_id: int
    object_key: str
    file_sha256: str
    signature: str
    entries: int = 0


class SeedVerdictObserved(Body, frozen=True, tag="seed_verdict_observed", kw_only=True):
    """Entry `index` of a seed-layout peer's verdict file (see `SeedTaskObserved`).

    `entry` is the entry's canonical text, `json.dumps(entry, sort_keys=True)`: the signed
    bytes are `"[" + ", ".join(entries) + "]"`, whose sha256 the peer signed. `miner` and
    `passed` are what scoring reads (the seed's `hotkey` and `bool(passed)`).
    """

    peer: str
    task_id: int
    file_sha256: str
    index: int
    miner: str
    passed: bool
    entry: str


# -- decisions -----------------------------------------------------------------------------


class FrontierEntry(Part, frozen=True, kw_only=True):
    """The last event of one origin that a decision used."""

    origin: str
    origin_seq: int
    hash: str


class ValidatorRate(Part, frozen=True, kw_only=True):
    """One validator's verdicts on one miner inside the window."""

    validator: str
    passed: int
    evaluated: int


class MinerAggregate(Part, frozen=True, kw_only=True):
    """A miner's standing in a scored epoch; `avg_rate` and `completeness` are exact fractions."""

    hotkey: str
    uid: int = -1
    commit_block: int = -1
    rates: tuple[ValidatorRate, ...] = ()
    passed: int = 0
    evaluated: int = 0
    tasks: int = 0
    avg_rate: str = "0"
    completeness: str = "0"
    eligible: bool = False
    reason: str = ""
    rank: int = 0


class WeightEntry(Part, frozen=True, kw_only=True):
    """One uid's weight as the chain stores it (u16)."""

    uid: int
    weight: int


class LateTask(Part, frozen=True, kw_only=True):
    """A task ignored by the anchored rule: its first anchor came after its slot plus the grace."""

    origin: str
    task_id: int
    block: int
    anchored_at: int = -1
    """The block of the first anchor covering its `task_opened` (-1: not anchored yet)."""


class EpochScored(Body, frozen=True, tag="epoch_scored", kw_only=True):
    """A validator's decision for an epoch, with everything needed to replay it.

    `frontier` names, for every origin, the last event the decision read; replay reads exactly
    those events, recomputes, and compares.

    Version 2 keeps the stored body small at any network size: `aggregates` is left out of the
    body and stored in `epoch_detail` events (keys `epoch/<E>/detail/<i>`, appended just before
    it in the same transaction); `details` lists the sha256 of each detail body in order and
    `aggregates_hash` the sha256 of the canonical JSON of the whole aggregates tuple, so the
    detail is covered by this event's hash. A v1 body carries its aggregates inline.
    `leoma.log.decisions` splits and joins the two forms; in memory a decision always has its
    aggregates.

    `keeps_epoch` is the fail-closed rule's outcome: >= 0 when this decision had no data and the
    weights of that earlier epoch stay on chain (nothing is submitted), -1 otherwise.
    """

    epoch: int
    netuid: int
    consensus_digest: str
    frontier: tuple[FrontierEntry, ...]
    interval: int = 0
    validators: tuple[str, ...] = ()
    window: tuple[int, ...] = ()
    active: tuple[str, ...] = ()
    aggregates: tuple[MinerAggregate, ...] = ()
    winner: str = ""
    winner_uid: int = 0
    weights: tuple[WeightEntry, ...] = ()
    burn_reason: str = ""
    keeps_epoch: int = -1
    miners: int = 0
    aggregates_hash: str = ""
    details: tuple[str, ...] = ()
    late_tasks: tuple[LateTask, ...] = ()
    """Anchored rule only: claims in reach of the window that were anchored too late to count."""


class EpochDetailRecorded(Body, frozen=True, tag="epoch_detail", kw_only=True):
    """Part `part` of an epoch decision's per-miner aggregates (see `EpochScored`)."""

    epoch: int
    part: int
    aggregates: tuple[MinerAggregate, ...]


class WeightsSubmitted(Body, frozen=True, tag="weights_submitted", kw_only=True):
    """The weights of an epoch were sent to the chain (not yet known to have landed)."""

    epoch: int
    uids: tuple[int, ...]
    weights: tuple[int, ...]
    version_key: int = 0
    commit_reveal: bool = False
    included_at: int = 0
    """The block the chain included the extrinsic in (0: not known)."""
    reveal_round: int = 0
    """The drand round a commit-reveal submission reveals at (0: a plain submission)."""


class WeightsConfirmed(Body, frozen=True, tag="weights_confirmed", kw_only=True):
    """The chain holds the epoch's weights (read back)."""

    epoch: int
    uids: tuple[int, ...]
    weights: tuple[int, ...]


class WeightsRefused(Body, frozen=True, tag="weights_refused", kw_only=True):
    """The chain (or its rate limit) refused the epoch's weights; `reason` is the chain's."""

    epoch: int
    reason: str


class ConflictRecorded(Body, frozen=True, tag="conflict_recorded", kw_only=True):
    """Someone offered an event for an existing `(origin, key)` with a different body."""

    origin: str
    key: str
    stored_hash: str
    offered_hash: str


# -- the owner's API (its own log) ---------------------------------------------------------


class AdminActed(Body, frozen=True, tag="admin_acted", kw_only=True):
    """An admin changed the API's registry (validators or blacklist); who, what, when."""

    admin: str
    action: str
    target: str
    reason: str = ""
    uid: int = -1
    stake_rao: int = -1


class MinerReportReceived(Body, frozen=True, tag="miner_report_received", kw_only=True):
    """A validator POSTed its miner-validation report to the owner's API."""

    validator: str
    miners: tuple[MinerChecked, ...]


# -- the rules ------------------------------------------------------------------------------


class ConsensusRecorded(Body, frozen=True, tag="consensus_recorded", kw_only=True):
    """The consensus this log runs under: its whole canonical content, once per digest.

    `content` is the canonical JSON whose sha256 is `digest` (what decisions and checkpoints are
    stamped with); `prompts` holds the judge's prompt texts by label, pinned by sha256 inside it.
    """

    digest: str
    content: str
    prompts: dict[str, str] = {}


class WeightsCommitted(Body, frozen=True, tag="weights_committed", kw_only=True):
    """The chain holds the epoch's weights as a timelocked commit (read back), to reveal later."""

    epoch: int
    commit_block: int
    reveal_round: int


class WeightsRevealed(Body, frozen=True, tag="weights_revealed", kw_only=True):
    """The chain no longer holds the epoch's commit: it revealed it (by `block`, read back)."""

    epoch: int
    commit_block: int
    reveal_round: int


class WeightsNotLanded(Body, frozen=True, tag="weights_not_landed", kw_only=True):
    """The chain took the submission but its row does not hold the decision; `reason` says how."""

    epoch: int
    reason: str
    uids: tuple[int, ...] = ()
    weights: tuple[int, ...] = ()
    """The row the chain holds instead."""
    last_update: int = 0
    superseded_by: int = -1
    """>= 0: the row holds this later epoch's weights, submitted after this attempt was (the
    attempt is moot, not failed: on the commit-reveal path a later decision can be revealed
    before this one is read back); -1 otherwise."""


# -- anchors (decisions fixed by the chain: `leoma.mirror.anchors`, `projections.anchors`) -----------------


class AnchorEntry(Part, frozen=True, kw_only=True):
    """One validator's anchor as the chain held it: its checkpoint's size and head, and the
    block the commitment was set at (size 0: no anchor)."""

    origin: str
    size: int = 0
    head: str = ""
    block: int = 0


class AnchorCommitted(Body, frozen=True, tag="anchor_committed", kw_only=True):
    """This validator committed its mirror checkpoint on chain for `epoch` (at `commit_block`)."""

    epoch: int
    size: int
    head: str
    commit_block: int
    payload: str


class AnchorFailed(Body, frozen=True, tag="anchor_failed", kw_only=True):
    """An anchor was refused or failed; `reason` is the chain's error (or why none was sent)."""

    epoch: int
    size: int
    head: str
    reason: str
    attempt: int = 1
    retried: bool = True


class AnchorsObserved(Body, frozen=True, tag="anchors_observed", kw_only=True):
    """Every allowlisted validator's newest anchor at or before epoch `epoch`'s cutoff block,
    read from the chain's `CommitmentOf` at that block (the envelope's block is the cutoff)."""

    epoch: int
    cutoff_block: int
    validators: tuple[str, ...]
    anchors: tuple[AnchorEntry, ...]


class EpochHeld(Body, frozen=True, tag="epoch_held", kw_only=True):
    """This validator could not read everything the anchors of `epoch` cover: it holds (keeps
    its last weights) instead of deciding on less. `peer` is the validator it could not read."""

    epoch: int
    peer: str
    reason: str
    anchored_size: int = 0
    local_size: int = 0


Payload = Union[
    ChainHeadObserved,
    MetagraphObserved,
    CommitmentObserved,
    AllowlistVerified,
    AllowlistRejected,
    MinerChecked,
    TaskOpened,
    MinerResponded,
    VerdictRecorded,
    JudgeFailed,
    TaskClosed,
    PeerSegmentImported,
    PeerSegmentRejected,
    EpochScored,
    EpochDetailRecorded,
    WeightsSubmitted,
    WeightsConfirmed,
    WeightsRefused,
    ConflictRecorded,
    AdminActed,
    MinerReportReceived,
    ConsensusRecorded,
    SeedTaskObserved,
    SeedVerdictObserved,
    WeightsCommitted,
    WeightsRevealed,
    WeightsNotLanded,
    AnchorCommitted,
    AnchorFailed,
    AnchorsObserved,
    EpochHeld,
]

KINDS: Final[dict[str, type[Body]]] = {t.kind_name(): t for t in Payload.__args__}  # type: ignore[attr-defined]

VERSIONS: Final[dict[str, int]] = {kind: 1 for kind in KINDS} | {"epoch_scored": 2}
"""The current schema version of each kind; bump one together with an upcaster."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(kind: str, from_v: int, fn: Upcaster) -> None:
    """Register a pure function turning a `kind` body of version `from_v` into `from_v + 1`."""
    _UPCASTERS[(kind, from_v)] = fn


def _epoch_scored_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    # A v1 decision holds its aggregates inline and no detail hashes: the same fields, read as
    # they are (`leoma.log.decisions.join` takes inline aggregates when `details` is empty).
    return raw


register_upcaster("epoch_scored", 1, _epoch_scored_v1_to_v2)
_IDENTITY: Final = frozenset({("epoch_scored", 1)})
"""Upcasts that change no field: such bodies decode directly into the current Struct."""


# -- the envelope --------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event as stored, mirrored and exported; `body` holds the body's exact bytes."""

    origin: str
    origin_seq: int
    key: str
    v: int
    block: int
    at: int = 0
    body: msgspec.Raw
    prev: str
    hash: str

    @property
    def kind(self) -> str:
        """The body's tag (read from the bytes, without a full decode)."""
        return body_kind(bytes(self.body))

    def payload(self) -> Body:
        """The typed body, upcast to the current version of its kind."""
        return decode_body(bytes(self.body), self.v)


class _Unhashed(msgspec.Struct, frozen=True, kw_only=True):
    # Field order is part of the canonical bytes: never reorder.
    origin: str
    origin_seq: int
    key: str
    v: int
    block: int
    at: int
    body: msgspec.Raw


_encoder = msgspec.json.Encoder(order="deterministic")
_body_decoder = msgspec.json.Decoder(Payload)
_event_decoder = msgspec.json.Decoder(Event)
_kind_decoder = msgspec.json.Decoder(dict[str, Any])


class _KindOnly(msgspec.Struct):
    kind: str = ""


_kind_only_decoder = msgspec.json.Decoder(_KindOnly)


def encode_body(body: Body) -> bytes:
    """Canonical bytes of a body, validated by decoding them back.

    The round trip is what refuses NaN, infinity and wrong types: msgspec writes a non-finite
    float as `null`, which no integer field accepts.
    """
    if not isinstance(body, Body):
        raise EventError(f"an event body must be a leoma.log.events.Body, got {type(body).__name__}")
    try:
        data = _encoder.encode(body)
    except UnicodeEncodeError:
        from leoma.log.textsafe import unsafe_field

        raise EventError(
            f"{body.kind_name()} body holds a string that is not valid UTF-8 (a lone surrogate) in "
            f"{unsafe_field(body) or 'a field'}: check untrusted text with leoma.log.textsafe before recording it"
        ) from None
    if len(data) > MAX_BODY_BYTES:
        raise EventError(
            f"{body.kind_name()} body is {len(data)} bytes, over the {MAX_BODY_BYTES}-byte limit"
        )
    try:
        _body_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise EventError(
            f"{body.kind_name()} body is invalid ({exc}); NaN, infinity and wrong types are refused"
        ) from None
    return data


def body_kind(data: bytes | str) -> str:
    """The `kind` tag of canonical body bytes."""
    try:
        return _kind_only_decoder.decode(data).kind
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventError(f"event body is not a JSON object with a kind: {exc}") from None


def decode_body(data: bytes | str, v: int = 1) -> Body:
    """Decode canonical body bytes (or text) of schema version `v` into the current typed body."""
    # Fast path for the common case (the current version, or a version whose upcaster is the
    # identity); anything unusual falls through to the careful path.
    try:
        body = _body_decoder.decode(data)
        kind = body.kind_name()
        if VERSIONS[kind] == v or (v < VERSIONS[kind] and (kind, v) in _IDENTITY):
            return body
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    kind = body_kind(data)
    current = VERSIONS.get(kind)
    if current is None:
        raise UnknownKind(
            f"unknown event kind {kind!r} (written by a newer Leoma?): upgrade to read it"
        )
    try:
        if v == current:
            return _body_decoder.decode(data)
        if v > current:
            raise UnknownKind(f"{kind} v{v} is newer than this Leoma knows (v{current}): upgrade")
        raw = _kind_decoder.decode(data)
        for step in range(v, current):
            upcast = _UPCASTERS.get((kind, step))
            if upcast is None:
                raise EventError(f"no upcaster for {kind} v{step} -> v{step + 1}")
            raw = upcast(raw)
        upcast_body: Body = msgspec.convert(raw, Payload)
        return upcast_body
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventError(f"{kind} v{v} body does not decode: {exc}") from None


def canonical(
    *, origin: str, origin_seq: int, key: str, v: int, block: int, at: int, body: bytes
) -> bytes:
    """The bytes an event's hash covers (everything but `prev` and `hash`)."""
    return _encoder.encode(
        _Unhashed(
            origin=origin, origin_seq=origin_seq, key=key, v=v, block=block, at=at,
            body=msgspec.Raw(body),
        )
    )


def chain_hash(prev: str, canonical_bytes: bytes) -> str:
    """`sha256(prev || canonical)` as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev) + canonical_bytes).hexdigest()


def seal(
    *, origin: str, origin_seq: int, key: str, block: int, body: Body | bytes, prev: str,
    at: int = 0, v: int | None = None,
) -> Event:
    """Build a hashed event continuing `prev`; `body` may be a typed body or canonical bytes."""
    check_key(key)
    data = encode_body(body) if isinstance(body, Body) else bytes(body)
    if v is None:
        v = VERSIONS.get(body_kind(data), 1)
    if origin_seq < 1:
        raise EventError(f"origin_seq starts at 1, got {origin_seq}")
    if block < 0:
        raise EventError(f"block must be >= 0, got {block}")
    digest = chain_hash(
        prev,
        canonical(origin=origin, origin_seq=origin_seq, key=key, v=v, block=block, at=at, body=data),
    )
    return Event(
        origin=origin, origin_seq=origin_seq, key=key, v=v, block=block, at=at,
        body=msgspec.Raw(data), prev=prev, hash=digest,
    )


def check_key(key: str) -> None:
    """Refuse keys that are empty, oversized or carry control characters."""
    if not key or len(key) > MAX_KEY_CHARS or _CONTROL.search(key):
        raise EventError(f"event key {key[:80]!r} must be 1-{MAX_KEY_CHARS} printable characters")


def verify_event(event: Event) -> None:
    """Recompute an event's hash from its fields; raise `EventError` if it does not match."""
    expected = chain_hash(
        event.prev,
        canonical(
            origin=event.origin, origin_seq=event.origin_seq, key=event.key, v=event.v,
            block=event.block, at=event.at, body=bytes(event.body),
        ),
    )
    if expected != event.hash:
        raise EventError(
            f"event {event.origin[:12]}…#{event.origin_seq} hash mismatch: stored {event.hash[:16]}, "
            f"computed {expected[:16]}"
        )


def verify_chain(events: Iterable[Event], *, prev: str = ZERO_HASH, start_seq: int = 1) -> str:
    """Check that `events` continue a chain at (`start_seq`, `prev`); return the new head hash."""
    seq = start_seq
    for event in events:
        if event.origin_seq != seq:
            raise EventError(f"expected origin_seq {seq}, found {event.origin_seq}: a gap or reorder")
        if event.prev != prev:
            raise EventError(f"event #{event.origin_seq} does not link to the previous hash")
        verify_event(event)
        prev = event.hash
        seq += 1
    return prev


def encode_event(event: Event) -> bytes:
    """One event as a JSON line (the mirror and export format), without the newline."""
    return _encoder.encode(event)


def decode_event(line: bytes | str) -> Event:
    """Parse one JSON-line event; the hash is not checked here (see `verify_event`)."""
    try:
        return _event_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventError(f"not a Leoma event line: {exc}") from None
