"""The majority consensus of the validators' miner reports (seed-spec §7.5), dashboard only.

Each validator's word on a miner is its newest report: the latest `miner_report_received` it
POSTed (which replaces its earlier reports) or the newest `miner_checked` in its own mirrored
log, whichever is newer. A miner is valid when strictly more than half of the fresh reports say
so (ties are invalid; a single reporter decides). The representative row is the newest valid
report, else the newest; the invalid reason is the most common non-empty reason among the
invalid reports (ties: the lowest validator hotkey's first), else `consensus_invalid`.

Fixes of the seed: miners are keyed by hotkey, never by uid (§12.31), and the whole round never
aborts because two reports disagree on a uid. Pure: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from leoma.log.events import MinerChecked

__all__ = ["Report", "ConsensusMiner", "miner_consensus"]


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One validator's latest word on one miner, with the wall-clock second it arrived."""

    validator: str
    at: int
    check: MinerChecked


class ConsensusMiner(msgspec.Struct, frozen=True, kw_only=True):
    """The consensus row of one miner (the seed's `valid_miners` row)."""

    hotkey: str
    uid: int
    block: int | None
    model_name: str | None
    model_revision: str | None
    model_hash: str | None
    chute_id: str | None
    chute_slug: str | None
    is_valid: bool
    invalid_reason: str | None
    last_validated_at: int
    votes_valid: int
    votes_total: int
    reporters: tuple[str, ...]


def _opt(text: str) -> str | None:
    return text or None


def fresh_reports(reports: Iterable[Report], now: int, stale_seconds: int) -> list[Report]:
    """Reports within `stale_seconds` of `now`; if none is, those near the newest (the seed kept
    its last result when nothing was fresh, which this reproduces without a stored copy)."""
    items = list(reports)
    if not items:
        return []
    fresh = [r for r in items if r.at >= now - stale_seconds]
    if fresh:
        return fresh
    newest = max(r.at for r in items)
    return [r for r in items if r.at >= newest - stale_seconds]


def miner_consensus(
    latest: Mapping[str, Mapping[str, Report]], now: int, stale_seconds: int
) -> dict[str, ConsensusMiner]:
    """`latest[validator][miner]` -> the consensus row per miner hotkey, sorted by hotkey."""
    reports = fresh_reports((r for v in sorted(latest) for _, r in sorted(latest[v].items())), now, stale_seconds)
    by_miner: dict[str, list[Report]] = {}
    for r in reports:
        by_miner.setdefault(r.check.hotkey, []).append(r)
    out: dict[str, ConsensusMiner] = {}
    for hotkey in sorted(by_miner):
        group = sorted(by_miner[hotkey], key=lambda r: r.validator)
        valid_votes = sum(1 for r in group if r.check.valid)
        is_valid = 2 * valid_votes > len(group)
        rep = max(group, key=lambda r: (r.check.valid, r.at, r.validator))
        reason: str | None = None
        if not is_valid:
            counts: dict[str, int] = {}
            for r in group:
                if not r.check.valid and r.check.invalid_reason:
                    counts[r.check.invalid_reason] = counts.get(r.check.invalid_reason, 0) + 1
            # dicts keep first-seen order, and max keeps the first of equal counts.
            reason = max(counts, key=lambda k: counts[k]) if counts else "consensus_invalid"
        c = rep.check
        out[hotkey] = ConsensusMiner(
            hotkey=hotkey, uid=c.uid, block=c.commit_block or None, model_name=_opt(c.model_name),
            model_revision=_opt(c.model_revision), model_hash=_opt(c.model_hash), chute_id=_opt(c.chute_id),
            chute_slug=_opt(c.chute_slug), is_valid=is_valid, invalid_reason=reason,
            last_validated_at=max(r.at for r in group), votes_valid=valid_votes, votes_total=len(group),
            reporters=tuple(r.validator for r in group),
        )
    return out
