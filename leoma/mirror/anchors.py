"""Anchors: each validator's mirror checkpoint committed on chain, and reading them back.

The payload is one `Raw` field of the validator's commitment: `leoma:anchor:v1:<size>:<head>`
(the checkpoint's size and its 64-hex head hash: at most 91 bytes, a `Raw` field holds 128).
A hotkey has one `CommitmentOf` per subnet and a new commit overwrites it, so `commit_anchor`
sends the other fields the commitment already holds (an owner-validator's allowlist digest)
again with the new anchor.

The chain's limits (subtensor `pallets/commitments`; the simulated chain enforces the same):
the call is free (`Pays::No`, zero deposits), at most 3 fields, a `Raw` field <= 128 bytes,
only a hotkey registered on the subnet may commit (`AccountNotAllowedCommit`), and each commit
uses max(100, its bytes) of 3100 per hotkey and subnet epoch (`SpaceLimitExceeded`). One anchor
per epoch of ~200 bytes (with the allowlist) is far inside that.

`anchor_step` commits at most one anchor per epoch, a few blocks before the epoch's cutoff,
naming what the mirror has published (never more: peers must be able to fetch it), and records
`anchor_committed`, or `anchor_failed` with the chain's reason (retried on the next step while
the cutoff has not passed). `observe` reads every allowlisted validator's newest anchor at or
before a cutoff block from the chain's `CommitmentOf` at that block and records it as
`anchors_observed`, so a decision, and its replay, read the anchors from the log and need the
chain only to verify them (`verify_observed`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from leoma.errors import ChainError, LeomaError
from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog
from leoma.log.events import (
    AllowlistVerified,
    AnchorCommitted,
    AnchorEntry,
    AnchorFailed,
    AnchorsObserved,
    decode_body,
)

log = logging.getLogger("leoma.mirror.anchors")

__all__ = ["PREFIX", "payload", "parse", "anchor_epoch", "anchor_step", "observe", "observed", "observations",
           "read_anchor", "verify_observed", "validators_at", "HISTORY_EPOCHS"]

PREFIX: Final = "leoma:anchor:v1:"
HISTORY_EPOCHS: Final = 32
"""Earlier cutoffs `observe` fills in when they are missing (a validator started late): the
no-backdating rule reads the anchors seen at earlier cutoffs."""


def payload(size: int, head: str) -> bytes:
    """The anchor field's bytes."""
    return f"{PREFIX}{int(size)}:{head}".encode()


def parse(field: bytes) -> tuple[int, str] | None:
    """`(size, head)` of an anchor field, or None when the field is not a well-formed anchor."""
    try:
        text = field.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.startswith(PREFIX):
        return None
    size, _, head = text[len(PREFIX):].partition(":")
    if not size.isdigit() or len(head) != 64 or any(ch not in "0123456789abcdef" for ch in head):
        return None
    return int(size), head


def anchor_epoch(head: int, consensus: Consensus) -> int:
    """The epoch whose cutoff is the next at or after block `head`."""
    length = consensus.epoch.length
    return -(-(head + consensus.anchors.cutoff_margin) // length)


def lead_blocks(consensus: Consensus) -> int:
    """How many blocks before a cutoff the anchor is sent (late, to cover most of the epoch)."""
    return max(2, consensus.epoch.length // 5)


async def read_anchor(chain: Any, netuid: int, hotkey: str, block: int) -> AnchorEntry:
    """`hotkey`'s anchor in its `CommitmentOf` at `block` (an empty entry when it has none)."""
    found = await chain.commitment_fields(netuid, hotkey, block=block)
    if found is None:
        return AnchorEntry(origin=hotkey)
    set_at, fields = found
    for f in fields:
        parsed = parse(f)
        if parsed is not None:
            return AnchorEntry(origin=hotkey, size=parsed[0], head=parsed[1], block=set_at)
    return AnchorEntry(origin=hotkey)


def _key(epoch: int, what: str) -> str:
    return f"anchor/{epoch}/{what}"


async def anchor_step(log_: EventLog, chain: Any, wallet: Any, netuid: int, consensus: Consensus, *,
                      published: tuple[int, str] | None = None, head: int | None = None) -> AnchorCommitted | AnchorFailed | None:
    """Commit this epoch's anchor if it is due and not done; returns what was recorded (or None).

    `published` is the `(size, head hash)` of the own checkpoint the bucket serves (default: what
    the mirror records as uploaded).
    """
    if not consensus.anchors.enabled:
        return None
    own = log_.own or ""
    if head is None:
        head, _ = await chain.head()
    epoch = anchor_epoch(head, consensus)
    cutoff = consensus.anchor_cutoff(epoch)
    if head < cutoff - lead_blocks(consensus) or log_.get(own, _key(epoch, "committed")) is not None:
        return None
    if published is None:
        from leoma.mirror.out import uploaded_position

        size = uploaded_position(log_, own)
        at = log_.position(own, size) if size else None
        published = (size, at[1]) if at is not None else (0, "")
    size, head_hash = published
    attempt = 1
    while log_.get(own, _key(epoch, f"failed/{attempt}")) is not None:
        attempt += 1
    if size <= 0:
        return _failed(log_, epoch, head, size, head_hash, "nothing published yet", attempt)
    fields: list[bytes] = []
    try:
        current = await chain.commitment_fields(netuid, own)
        keep = [f for f in (current[1] if current else []) if not f.startswith(PREFIX.encode())]
        fields = keep[:2] + [payload(size, head_hash)]
        block = await chain.set_commitment_fields(wallet, netuid, fields)
    except (ChainError, LeomaError) as exc:
        reason = getattr(exc, "reason", "") or str(exc)
        return _failed(log_, epoch, head, size, head_hash, reason, attempt)
    body = AnchorCommitted(epoch=epoch, size=size, head=head_hash, commit_block=block,
                           payload=payload(size, head_hash).decode())
    log_.append(body, key=_key(epoch, "committed"), block=block)
    log.info("epoch %s: anchored #%s %s… at block %s", epoch, size, head_hash[:12], block,
             extra={"epoch": epoch, "block": block})
    return body


def _failed(log_: EventLog, epoch: int, head: int, size: int, head_hash: str, reason: str, attempt: int) -> AnchorFailed:
    body = AnchorFailed(epoch=epoch, size=size, head=head_hash, reason=reason[:500], attempt=attempt, retried=True)
    log_.append(body, key=_key(epoch, f"failed/{attempt}"), block=head)
    log.warning("epoch %s: anchor not committed (%s); retrying next step", epoch, reason, extra={"epoch": epoch})
    return body


def validators_at(log_: EventLog, block: int, *, origin: str | None = None) -> tuple[str, ...]:
    """The validators of `origin`'s (default: own) latest verified allowlist at or before `block`."""
    best: tuple[int, int, AllowlistVerified] | None = None
    for row in log_.rows(kinds=["allowlist_verified"], origin=origin or log_.own):
        if row.block <= block and (best is None or (row.block, row.origin_seq) > best[:2]):
            body = decode_body(row.body, row.v)
            assert isinstance(body, AllowlistVerified)
            best = (row.block, row.origin_seq, body)
    return tuple(sorted(set(best[2].validators))) if best is not None else ()


def observed(log_: EventLog, epoch: int) -> AnchorsObserved | None:
    """The own `anchors_observed` of `epoch`, if recorded."""
    ev = log_.get(log_.own or "", f"anchors/{epoch}/observed")
    if ev is None:
        return None
    body = ev.payload()
    assert isinstance(body, AnchorsObserved)
    return body


def observations(log_: EventLog, *, origin: str | None = None) -> list[AnchorsObserved]:
    """Every `anchors_observed` of `origin` (default: own), in log order."""
    out = []
    for row in log_.rows(kinds=["anchors_observed"], origin=origin or log_.own):
        body = decode_body(row.body, row.v)
        assert isinstance(body, AnchorsObserved)
        out.append(body)
    return out


async def _read(chain: Any, netuid: int, epoch: int, consensus: Consensus, validators: Sequence[str]) -> AnchorsObserved:
    cutoff = consensus.anchor_cutoff(epoch)
    entries = [await read_anchor(chain, netuid, v, cutoff) for v in sorted(set(validators))]
    return AnchorsObserved(epoch=epoch, cutoff_block=cutoff, validators=tuple(sorted(set(validators))),
                           anchors=tuple(entries))


async def observe(log_: EventLog, chain: Any, netuid: int, consensus: Consensus, epoch: int, *,
                  history: int = HISTORY_EPOCHS) -> AnchorsObserved | None:
    """Record (once) the anchors that fix epoch `epoch`, and those of up to `history` earlier
    cutoffs not recorded yet; None while the chain has not reached the cutoff."""
    found = observed(log_, epoch)
    if found is not None:
        return found
    head, _ = await chain.head()
    cutoff = consensus.anchor_cutoff(epoch)
    if head < cutoff:
        return None
    for e in range(max(0, epoch - history), epoch + 1):
        if observed(log_, e) is not None:
            continue
        c = consensus.anchor_cutoff(e)
        validators = validators_at(log_, c) if e == epoch else validators_at(log_, c) or validators_at(log_, cutoff)
        if not validators:
            continue
        try:
            body = await _read(chain, netuid, e, consensus, validators)
        except ChainError as exc:
            if e == epoch:
                raise
            # an earlier cutoff a node without archive state cannot read: the decision reads the
            # view origin's recorded observations anyway; this one only cross-checks them
            log.info("anchors of epoch %s not read (%s); skipped", e, exc, extra={"epoch": e})
            continue
        log_.append(body, key=f"anchors/{e}/observed", block=c)
    return observed(log_, epoch)


async def verify_observed(chain: Any, netuid: int, consensus: Consensus, body: AnchorsObserved) -> list[str]:
    """Re-read a recorded observation from the chain; the differences, by validator (empty: it matches)."""
    again = await _read(chain, netuid, body.epoch, consensus, body.validators)
    problems = []
    if again.cutoff_block != body.cutoff_block:
        problems.append(f"epoch {body.epoch}: cutoff {body.cutoff_block} recorded, the consensus says {again.cutoff_block}")
    mine = {a.origin: a for a in body.anchors}
    for a in again.anchors:
        if mine.get(a.origin) != a:
            problems.append(f"epoch {body.epoch}: {a.origin[:12]}… anchored #{a.size} at block {a.block} on chain, "
                            f"the log recorded {msgspec.to_builtins(mine.get(a.origin))}")
    return problems
