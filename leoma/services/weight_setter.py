"""The weight setter: each epoch, decide from the log, record the decision, set it on chain.

One `step()` per poll does whatever is due, so weights are set when the chain allows it, not
only when a poll happens to land on a boundary block (the seed's §12.2):

1. the epoch of the head block is `head // epoch_length`; its decision block is the boundary
   `epoch * epoch_length`. If the log has no `epoch/<n>/scored` yet: sync peers (best effort),
   fold every event up to now (incrementally, from the `epoch_fold` checkpoint), and append one
   `epoch_scored` event with the frontier it read;
2. if that decision is not confirmed on chain yet (`land`): read back a submission still
   outstanding, else submit when the rate limit allows. `weights_submitted` records what was
   sent; on the commit-reveal path `weights_committed` and `weights_revealed` follow as the chain
   holds and then reveals the commit; `weights_confirmed` only when the validator's whole row,
   normalised, equals the decision and `LastUpdate` is at or after the submission. Otherwise
   `weights_not_landed` (taken, but the row says otherwise) or `weights_refused` (the chain's
   reason), and the next step tries again. A refusal is never counted as success. An earlier
   epoch's attempt read back while the row holds a later own decision sent after it is
   `weights_not_landed` with `superseded_by` that epoch: moot, not failed (commit-reveal with a
   reveal period longer than an epoch reveals the next decision before this one is read).

Fail closed: a decision that burns only because there is no data (no allowlist, no window, no
verdicts) does not overwrite the last good weights until `burn_after_epochs_without_data`
epochs have passed without data. That rule is part of the decision
(`projections.weights.kept_epoch`, recorded as `keeps_epoch`), so replay reproduces it; here
it is only carried out.

The fold resumes from its checkpoint and is pruned after each decision, so a warm step reads
the rows appended since the last one and a checkpoint whose size is bounded by the window.
The decision is appended as `leoma.log.decisions.drafts`: its detail parts, then the small
`epoch_scored` event, in one transaction.

No scoring logic lives here: the decision is `projections.epoch.EpochFold.decide`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import msgspec

from leoma.errors import ChainError, ChainRefused
from leoma.log import decisions
from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog
from leoma.log.events import (
    EpochScored,
    FrontierEntry,
    WeightsCommitted,
    WeightsConfirmed,
    WeightsNotLanded,
    WeightsRefused,
    WeightsRevealed,
    WeightsSubmitted,
)
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
    committed: bool = False
    """Submitted as a timelocked commit (commit-reveal)."""
    pending: str = ""
    """Why a submission is not confirmed yet and is read back next step (e.g. awaiting its reveal)."""
    held: str = ""
    """Anchored rule: why this validator holds this epoch (a peer's anchored events it cannot read)."""


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


async def _decide_anchored(log_: EventLog, chain: Any, netuid: int, consensus: Consensus, epoch: int,
                           epoch_block: int) -> EpochScored | str:
    """The anchored decision of `epoch`, or why this validator holds (recorded once per peer and reason)."""
    from leoma.log.events import EpochHeld
    from leoma.mirror import anchors
    from leoma.services.anchored import Held, decide_anchored

    observed = await anchors.observe(log_, chain, netuid, consensus, epoch)
    if observed is None:
        return f"the chain has not reached epoch {epoch}'s cutoff block {consensus.anchor_cutoff(epoch)}"
    out = decide_anchored(log_, epoch=epoch, epoch_block=epoch_block, netuid=netuid, consensus=consensus,
                          observed=observed)
    if isinstance(out, Held):
        if out.reason == "no_anchors":
            reason = f"held: no allowlisted validator anchored before epoch {epoch}'s cutoff"
        else:
            reason = (f"held: {out.peer[:12]}… anchored #{out.anchored_size}, this log "
                      + ("holds another event there" if out.reason == "head_mismatch" else f"holds #{out.local_size}"))
        key = f"epoch/{epoch}/held/{out.peer or '-'}/{out.reason}"
        if log_.get(log_.own or "", key) is None:  # recorded (and said) once per epoch, peer and reason
            log_.append(EpochHeld(epoch=epoch, peer=out.peer, reason=out.reason, anchored_size=out.anchored_size,
                                  local_size=out.local_size), key=key, block=epoch_block)
            log.warning("epoch %s %s; keeping the last weights", epoch, reason, extra={"epoch": epoch})
        return reason
    return out


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
        if consensus.anchors.enabled:
            anchored = await _decide_anchored(log_, chain, netuid, consensus, epoch, epoch_block)
            if isinstance(anchored, str):
                return StepResult(epoch=epoch, block=head, held=anchored)
            decision = anchored
        else:
            decision = decide_epoch(log_, own=own, epoch=epoch, epoch_block=epoch_block, netuid=netuid,
                                    consensus=consensus)
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

    landed = await land(log_, chain, wallet, netuid, decision, head=head, epoch_block=epoch_block)
    return StepResult(epoch=epoch, block=head, scored=scored, decision=decision, **landed)


# -- submitting and confirming -------------------------------------------------------------------
#
# An epoch's weights go through numbered attempts. Attempt n is `weights/<epoch>/submitted`
# (n = 1) or `weights/<epoch>/submitted/<n>`; it is settled by `weights/<epoch>/confirmed` or by
# `weights/<epoch>/not_landed/<n>`, and on the commit-reveal path passes through
# `weights/<epoch>/committed/<n>` and `weights/<epoch>/revealed/<n>`. An attempt that is not
# settled is read back again on the next step instead of being sent twice.

MAX_ATTEMPTS = 3
SETTLE_EPOCHS = 3
"""Earlier epochs whose outstanding submissions are still read back (a commit reveals later)."""


def normalised(pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> dict[int, Fraction]:
    """A weight row as exact fractions of its largest weight, zeros dropped."""
    positive = [(int(u), int(w)) for u, w in pairs if int(w) > 0]
    top = max((w for _, w in positive), default=0)
    return {u: Fraction(w, top) for u, w in positive}


def row_matches(decided: list[tuple[int, int]], row: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> bool:
    """Whether the chain's row holds the decision: same uids, and the same normalised weights up to
    the u16 quantisation the SDK applies (each within 1/65535 of the largest)."""
    want, have = normalised(decided), normalised(row)
    if want.keys() != have.keys():
        return False
    return all(abs(want[u] - have[u]) * 65535 <= 1 for u in want)


def _key(epoch: int, what: str, n: int) -> str:
    if what == "submitted" and n == 1:
        return f"weights/{epoch}/submitted"
    return f"weights/{epoch}/{what}/{n}"


def _attempts(log_: EventLog, epoch: int) -> list[tuple[int, WeightsSubmitted]]:
    """This epoch's submission attempts, oldest first, as (n, body)."""
    out = []
    n = 1
    while (body := _own(log_, _key(epoch, "submitted", n))) is not None:
        out.append((n, body))
        n += 1
    return out


def _settled(log_: EventLog, epoch: int, n: int) -> bool:
    return _own(log_, f"weights/{epoch}/confirmed") is not None or _own(log_, _key(epoch, "not_landed", n)) is not None


async def land(log_: EventLog, chain: Any, wallet: Any, netuid: int, decision: EpochScored, *,
               head: int, epoch_block: int) -> dict[str, Any]:
    """Get `decision` on chain: read back what is outstanding, submit when nothing is.

    Returns the `StepResult` fields it settled (submitted, committed, confirmed, refused, pending).
    """
    epoch = decision.epoch
    for earlier in range(max(0, epoch - SETTLE_EPOCHS), epoch):
        if _own(log_, f"weights/{earlier}/confirmed") is None:
            for n, body in _attempts(log_, earlier):
                if not _settled(log_, earlier, n):
                    await confirm_attempt(log_, chain, wallet, netuid, body, n, head)
    attempts = _attempts(log_, epoch)
    if attempts and not _settled(log_, epoch, attempts[-1][0]):
        n, body = attempts[-1]
        outcome = await confirm_attempt(log_, chain, wallet, netuid, body, n, head)
        if outcome != NOT_LANDED:
            return {"submitted": True, "committed": body.commit_reveal, "confirmed": outcome == CONFIRMED,
                    "pending": "" if outcome == CONFIRMED else outcome}
    if len(attempts) >= MAX_ATTEMPTS:
        reason = f"not landed after {MAX_ATTEMPTS} submissions; waiting for the next epoch"
        _refuse(log_, epoch, epoch_block, reason)
        return {"refused": reason}
    n = len(attempts) + 1
    uids = [w.uid for w in decision.weights]
    weights = [w.weight for w in decision.weights]
    try:
        result = await chain.set_weights(wallet, netuid, uids, [w / 65535 for w in weights])
    except ChainRefused as exc:
        _refuse(log_, epoch, epoch_block, exc.reason or str(exc))
        return {"refused": exc.reason or str(exc)}
    except ChainError as exc:
        _refuse(log_, epoch, epoch_block, f"chain unreachable: {exc}")
        return {"refused": str(exc)}
    body = WeightsSubmitted(epoch=epoch, uids=tuple(uids), weights=tuple(weights), version_key=result.version_key,
                            commit_reveal=result.committed, included_at=result.block or head,
                            reveal_round=result.reveal_round or 0)
    log_.append(body, key=_key(epoch, "submitted", n), block=head)
    log.info("weights for epoch %s submitted%s", epoch,
             f" as a commit revealing at drand round {result.reveal_round}" if result.committed else "",
             extra={"epoch": epoch, "block": head})
    outcome = await confirm_attempt(log_, chain, wallet, netuid, body, n, head)
    return {"submitted": True, "committed": result.committed, "confirmed": outcome == CONFIRMED,
            "pending": "" if outcome in (CONFIRMED, NOT_LANDED) else outcome,
            "refused": _own(log_, _key(epoch, "not_landed", n)).reason if outcome == NOT_LANDED else ""}


CONFIRMED = "confirmed"
NOT_LANDED = "not landed"


async def confirm_attempt(log_: EventLog, chain: Any, wallet: Any, netuid: int, sent: WeightsSubmitted, n: int,
                          head: int) -> str:
    """Read attempt `n` back and record what the chain shows.

    Confirmed means the validator's whole row, normalised, equals the decision and its
    `LastUpdate` is at or after the submission's block; on the commit-reveal path, also that the
    chain has revealed the commit. Returns `CONFIRMED`, `NOT_LANDED` (recorded with the reason,
    so the next step may submit again), or why it is still open (not recorded: read again).
    """
    epoch = sent.epoch
    hotkey = _hotkey(wallet)
    try:
        uid = await chain.uid_of(netuid, hotkey)
        if uid is None:
            return _not_landed(log_, sent, n, head, f"hotkey {hotkey} is no longer registered on subnet {netuid}")
        if sent.commit_reveal:
            # the commit is known by its inclusion block; by its round only when that is unknown
            pending = [p for p in await chain.pending_weight_commits(netuid, hotkey)
                       if p.commit_block == sent.included_at or (not sent.included_at and p.reveal_round == sent.reveal_round)]
            if pending and _own(log_, _key(epoch, "committed", n)) is None:
                log_.append(WeightsCommitted(epoch=epoch, commit_block=pending[0].commit_block,
                                             reveal_round=pending[0].reveal_round),
                            key=_key(epoch, "committed", n), block=head)
            if pending:
                return f"committed at block {pending[0].commit_block}, reveals at drand round {pending[0].reveal_round}"
        row = await chain.weight_row(netuid, uid)
    except ChainError as exc:
        log.warning("could not read the weights of epoch %s back: %s", epoch, exc, extra={"epoch": epoch})
        return f"read-back failed: {exc}"
    if sent.commit_reveal:
        if _own(log_, _key(epoch, "committed", n)) is None:  # revealed before we first looked
            log_.append(WeightsCommitted(epoch=epoch, commit_block=sent.included_at, reveal_round=sent.reveal_round),
                        key=_key(epoch, "committed", n), block=head)
        if _own(log_, _key(epoch, "revealed", n)) is None:
            log_.append(WeightsRevealed(epoch=epoch, commit_block=sent.included_at, reveal_round=sent.reveal_round),
                        key=_key(epoch, "revealed", n), block=row.block)
    decided = list(zip(sent.uids, sent.weights))
    if not row_matches(decided, row.row):
        later = _superseding(log_, sent, row)
        if later is not None:
            epoch_later, at = later
            return _not_landed(log_, sent, n, row.block, f"superseded: the row holds epoch {epoch_later}'s weights, "
                               f"submitted at block {at}, after this attempt", row, superseded_by=epoch_later)
        why = ("the chain revealed the commit but dropped its weights (version key, permit or weight rules)"
               if sent.commit_reveal else "the chain's row is not the decision")
        return _not_landed(log_, sent, n, row.block, why, row)
    if row.last_update < sent.included_at:
        return _not_landed(log_, sent, n, row.block, f"the row is stale: LastUpdate {row.last_update} is before "
                           f"the submission at block {sent.included_at}", row)
    if sent.commit_reveal and row.last_update <= sent.included_at:
        # the commit stamps LastUpdate and a landed reveal stamps it again, later
        return _not_landed(log_, sent, n, row.block, f"the row is stale: nothing was applied after the commit at "
                           f"block {sent.included_at}; the chain dropped the reveal (version key, permit or "
                           "weight rules)", row)
    log_.append(WeightsConfirmed(epoch=epoch, uids=tuple(u for u, _ in row.row), weights=tuple(w for _, w in row.row)),
                key=f"weights/{epoch}/confirmed", block=row.block)
    log.info("weights for epoch %s confirmed on chain at block %s", epoch, row.block,
             extra={"epoch": epoch, "block": row.block})
    return CONFIRMED


def _superseding(log_: EventLog, sent: WeightsSubmitted, row: Any) -> tuple[int, int] | None:
    """The newest later epoch (within `SETTLE_EPOCHS`) with an own attempt the chain's row holds,
    sent no earlier than `sent` and applied (`LastUpdate` at or after it), with its block."""
    for later in range(sent.epoch + SETTLE_EPOCHS + 1, sent.epoch, -1):
        for _, attempt in reversed(_attempts(log_, later)):
            if (attempt.included_at >= sent.included_at and row.last_update >= attempt.included_at
                    and row_matches(list(zip(attempt.uids, attempt.weights)), row.row)):
                return later, attempt.included_at
    return None


def _not_landed(log_: EventLog, sent: WeightsSubmitted, n: int, block: int, reason: str, row: Any = None, *,
                superseded_by: int = -1) -> str:
    log_.append(WeightsNotLanded(epoch=sent.epoch, reason=reason[:500],
                                 uids=tuple(u for u, _ in row.row) if row is not None else (),
                                 weights=tuple(w for _, w in row.row) if row is not None else (),
                                 last_update=row.last_update if row is not None else 0,
                                 superseded_by=superseded_by),
                key=_key(sent.epoch, "not_landed", n), block=block)
    if superseded_by >= 0:
        log.info("weights for epoch %s were superseded by epoch %s's", sent.epoch, superseded_by,
                 extra={"epoch": sent.epoch, "block": block})
        return NOT_LANDED
    log.warning("weights for epoch %s did not land: %s", sent.epoch, reason, extra={"epoch": sent.epoch, "block": block})
    return NOT_LANDED


async def confirm(log_: EventLog, chain: Any, wallet: Any, netuid: int, epoch: int,
                  uids: list[int], weights: list[int], block: int) -> bool:
    """Read epoch `epoch`'s latest submission back; True once `weights_confirmed` is recorded."""
    attempts = _attempts(log_, epoch)
    if _own(log_, f"weights/{epoch}/confirmed") is not None:
        return True
    if not attempts:
        return False
    n, sent = attempts[-1]
    return await confirm_attempt(log_, chain, wallet, netuid, sent, n, block) == CONFIRMED


def _hotkey(wallet: Any) -> str:
    return str(getattr(getattr(wallet, "hotkey", wallet), "ss58_address", ""))


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
