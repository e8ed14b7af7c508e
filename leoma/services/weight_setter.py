"""The weight setter: each epoch, decide from the log, record the decision, set it on chain.

One `step()` per poll does whatever is due, so weights are set when the chain allows it, not
only when a poll happens to land on a boundary block (the seed's §12.2):

1. the epoch of the head block is `head // epoch_length`; its decision block is the boundary
   `epoch * epoch_length`. If the log has no `epoch/<n>/scored` yet: sync peers (best effort),
   fold every event up to now (incrementally, from the `epoch_fold` checkpoint), and append one
   `epoch_scored` event with the frontier it read;
2. if that decision is not confirmed on chain yet: submit it when the rate limit allows and
   append `weights_submitted` + `weights_confirmed` (read back), or `weights_refused` with the
   chain's reason. A refusal is never counted as success.

Fail closed: a decision that burns only because there is no data (no allowlist, no window, no
verdicts) does not overwrite the last good weights until `burn_after_epochs_without_data`
epochs have passed without data. That rule is part of the decision
(`projections.weights.kept_epoch`, recorded as `keeps_epoch`), so replay reproduces it; here
it is only carried out.

The fold resumes from its checkpoint and is pruned after each decision, so a warm step reads
the rows appended since the last one and a checkpoint whose size is bounded by the window.
The decision is appended as `leoma.decisions.drafts`: its detail parts, then the small
`epoch_scored` event, in one transaction.

No scoring logic lives here: the decision is `projections.epoch.EpochFold.decide`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from leoma.consensus import Consensus
from leoma.errors import ChainError, ChainRefused
from leoma import decisions
from leoma.events import EpochScored, FrontierEntry, WeightsConfirmed, WeightsRefused, WeightsSubmitted
from leoma.log import EventLog
from projections.epoch import KINDS, EpochFold, StatePruned
from projections.weights import NO_DATA

log = logging.getLogger("leoma.weights")

__all__ = ["NO_DATA", "CHECKPOINT", "StepResult", "fold_to", "decide_epoch", "step", "confirm"]

CHECKPOINT = "projection/epoch_fold/v2"
"""v2: the fold reads the own decisions (fail-closed rule) and is pruned to the window."""


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one step of the weight setter did."""

    epoch: int
    block: int
    scored: bool = False
    submitted: bool = False
    confirmed: bool = False
    withheld: str = ""
    refused: str = ""
    decision: EpochScored | None = None


def fold_to(log_: EventLog, own: str, until_seq: int, *, fresh: bool = False) -> EpochFold:
    """The epoch fold up to local position `until_seq`, resumed from its checkpoint (unless `fresh`)."""
    saved = None if fresh else log_.get_state(CHECKPOINT)
    try:
        fold = EpochFold.load(saved) if saved else EpochFold(own)
    except (msgspec.DecodeError, msgspec.ValidationError):
        fold = EpochFold(own)  # a checkpoint of another layout: it is only a cache, fold afresh
    if fold.own != own or fold.state.last_seq > until_seq:
        fold = EpochFold(own)
    fold.apply_raw(log_.raw_rows(kinds=KINDS, after=fold.state.last_seq, until_seq=until_seq), log_.origin_names())
    fold.state.last_seq = until_seq
    return fold


def decide_epoch(log_: EventLog, *, own: str, epoch: int, epoch_block: int, netuid: int,
                 consensus: Consensus) -> EpochScored:
    """Fold the log as it is now and decide `epoch` (pure apart from reading the log).

    The fold is pruned after the decision and stored as the checkpoint the next step resumes.
    """
    last = log_.last_seq()
    frontier = [FrontierEntry(origin=o, origin_seq=h.origin_seq, hash=h.hash)
                for o, h in log_.frontier(until_seq=last).items()]
    fold = fold_to(log_, own, last)
    try:
        decision = fold.decide(epoch, epoch_block, netuid, consensus, frontier)
    except StatePruned as exc:
        log.info("epoch %s: %s; folding from scratch", epoch, exc, extra={"epoch": epoch})
        fold = fold_to(log_, own, last, fresh=True)
        decision = fold.decide(epoch, epoch_block, netuid, consensus, frontier)
    fold.prune(epoch_block, consensus)
    log_.set_state(CHECKPOINT, fold.dump())
    return decision


def _own(log_: EventLog, key: str) -> Any:
    event = log_.get(log_.own or "", key)
    return event.payload() if event is not None else None


async def step(
    *,
    log_: EventLog,
    chain: Any,
    wallet: Any,
    netuid: int,
    consensus: Consensus,
    sync_peers: Callable[[], Awaitable[Any]] | None = None,
) -> StepResult:
    """Do what is due for the current epoch: decide it once, then get it on chain."""
    own = log_.own or ""
    head, _ = await chain.head()
    length = consensus.epoch.length
    epoch = head // length
    epoch_block = epoch * length
    found = decisions.find(log_, epoch, origin=own)
    decision = found.body if found is not None else None
    scored = False
    if decision is None:
        if sync_peers is not None:
            try:
                await sync_peers()
            except Exception as exc:  # peers are best effort: decide on what we have
                log.warning("peer sync before epoch %s failed: %s", epoch, exc, extra={"epoch": epoch})
        decision = decide_epoch(log_, own=own, epoch=epoch, epoch_block=epoch_block, netuid=netuid, consensus=consensus)
        log_.append_many(decisions.drafts(decision, block=epoch_block))
        decision = decisions.sealed(decision)
        scored = True
        log.info("epoch %s scored: winner %s (uid %s)%s", epoch, decision.winner[:12] or "-", decision.winner_uid,
                 f", burn: {decision.burn_reason}" if decision.burn_reason else "",
                 extra={"epoch": epoch, "block": epoch_block})
    assert isinstance(decision, EpochScored)
    if _own(log_, f"weights/{epoch}/confirmed") is not None:
        return StepResult(epoch=epoch, block=head, scored=scored, confirmed=True, decision=decision)

    if decision.keeps_epoch >= 0:
        grace = consensus.epoch.burn_after_epochs_without_data
        reason = (f"withheld: {decision.burn_reason}; keeping epoch {decision.keeps_epoch}'s weights "
                  f"(burn after {grace} epochs without data)")
        _refuse(log_, epoch, epoch_block, reason)
        return StepResult(epoch=epoch, block=head, scored=scored, withheld=reason, decision=decision)

    uids = [w.uid for w in decision.weights]
    weights = [w.weight for w in decision.weights]
    try:
        result = await chain.set_weights(wallet, netuid, uids, [w / 65535 for w in weights])
    except ChainRefused as exc:
        _refuse(log_, epoch, epoch_block, exc.reason or str(exc))
        return StepResult(epoch=epoch, block=head, scored=scored, refused=exc.reason or str(exc), decision=decision)
    except ChainError as exc:
        _refuse(log_, epoch, epoch_block, f"chain unreachable: {exc}")
        return StepResult(epoch=epoch, block=head, scored=scored, refused=str(exc), decision=decision)
    log_.append(
        WeightsSubmitted(epoch=epoch, uids=tuple(uids), weights=tuple(weights), version_key=result.version_key,
                         commit_reveal=result.committed),
        key=f"weights/{epoch}/submitted", block=head,
    )
    confirmed = await confirm(log_, chain, wallet, netuid, epoch, uids, weights, head)
    return StepResult(epoch=epoch, block=head, scored=scored, submitted=True, confirmed=confirmed, decision=decision)


async def confirm(log_: EventLog, chain: Any, wallet: Any, netuid: int, epoch: int,
                  uids: list[int], weights: list[int], block: int) -> bool:
    """Read the weights back; record `weights_confirmed` when the chain holds them."""
    hotkey = getattr(getattr(wallet, "hotkey", wallet), "ss58_address", "")
    try:
        metagraph = await chain.metagraph(netuid)
        my_uid = metagraph.hotkeys.index(hotkey)
        held = await chain.weights(netuid, my_uid)
    except (ChainError, ValueError) as exc:
        log.warning("could not read weights back for epoch %s: %s", epoch, exc, extra={"epoch": epoch})
        return False
    held_uids = [u for u, w in held if w > 0]
    if sorted(held_uids) != sorted(u for u, w in zip(uids, weights) if w > 0):
        return False
    log_.append(WeightsConfirmed(epoch=epoch, uids=tuple(u for u, _ in held), weights=tuple(w for _, w in held)),
                key=f"weights/{epoch}/confirmed", block=block)
    return True


def _refuse(log_: EventLog, epoch: int, block: int, reason: str) -> None:
    """Record why the epoch's weights are not on chain; the same reason twice in a row once."""
    # This epoch's refusals, by key (`weights/<epoch>/refused/<n>`): never the whole history.
    mine: list[Any] = []
    while (found := _own(log_, f"weights/{epoch}/refused/{len(mine) + 1}")) is not None:
        mine.append(found)
    reason = reason[:500]
    if mine and mine[-1].reason == reason:
        return
    log_.append(WeightsRefused(epoch=epoch, reason=reason), key=f"weights/{epoch}/refused/{len(mine) + 1}", block=block)
    log.warning("weights for epoch %s not set: %s", epoch, reason, extra={"epoch": epoch, "block": block})
