"""Dominance ranking: the earliest miner keeps the crown unless a later one beats everyone before it.

Miners are ordered by seniority `(commit block, hotkey)` (unknown block last). Walking from the
latest to the earliest, the first miner whose rate is at least `rate + threshold` of *every*
earlier miner wins; the earliest always qualifies, so a non-empty field always has a winner.
The comparison is exact (`Fraction`), so `0.55` vs `0.60` with threshold `0.05` is a win for
the later miner -- the seed's floats said otherwise (seed-spec §12.8).

Rank 1 is the winner; the others follow by `(-passed, hotkey)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import msgspec

from leoma.errors import NotRanked
from projections.miners import NO_BLOCK


class Standing(msgspec.Struct, frozen=True, kw_only=True):
    """What ranking needs of an eligible miner."""

    hotkey: str
    rate: Fraction
    passed: int = 0
    commit_block: int | None = None
    float_rate: float | None = None
    """The rate as the seed computed it in doubles (only read with `arithmetic="float"`)."""

    @property
    def seniority(self) -> tuple[int, str]:
        return (self.commit_block if self.commit_block is not None else NO_BLOCK, self.hotkey)


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """One earlier miner a candidate had to beat: its rate, the rate needed, and the outcome."""

    earlier: str
    earlier_rate: Fraction
    needed: Fraction
    margin: Fraction
    """`candidate rate - needed`: >= 0 means this earlier miner was beaten."""
    beaten: bool


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """Why a miner did or did not win."""

    hotkey: str
    rate: Fraction
    position: int
    """0 = earliest commit."""
    dominates: bool
    """It beats every earlier miner by the threshold."""
    winner: str | None
    comparisons: tuple[Comparison, ...]


def by_seniority(standings: Sequence[Standing]) -> list[Standing]:
    """Earliest commit first; ties and unknown blocks ordered by hotkey."""
    return sorted(standings, key=lambda s: s.seniority)


def seed_float_rate(rates: Sequence[tuple[int, int]]) -> float:
    """The seed's float average of per-validator `(passed, evaluated)` rates, summed in the given order."""
    counted = [(p, e) for p, e in rates if e > 0]
    if not counted:
        return 0.0
    total = 0.0
    for p, e in counted:
        total += p / e
    return total / len(counted)


def _float_winner(ordered: Sequence[Standing], threshold: Fraction) -> str | None:
    # The seed: `not rate < earlier + threshold` for every earlier miner, in IEEE doubles.
    rates = [s.float_rate if s.float_rate is not None else float(s.rate) for s in ordered]
    limit = float(threshold)
    for i in range(len(ordered) - 1, -1, -1):
        if all(not rates[i] < rates[j] + limit for j in range(i)):
            return ordered[i].hotkey
    return None


def dominant_winner(standings: Sequence[Standing], threshold: Fraction, arithmetic: str = "exact") -> str | None:
    """The dominance winner (None only for an empty field).

    `arithmetic="float"` compares as the seed did, in doubles (the migration profile): at an
    exact margin it can disagree with the exact rule (0.55 vs 0.60 is no win there).
    """
    ordered = by_seniority(standings)
    if arithmetic == "float":
        return _float_winner(ordered, threshold)
    best_earlier: list[Fraction] = []
    top = None
    for s in ordered:
        best_earlier.append(top if top is not None else Fraction(-1))
        top = s.rate if top is None or s.rate > top else top
    # Beating every earlier miner is beating the best earlier rate.
    for i in range(len(ordered) - 1, -1, -1):
        if i == 0 or ordered[i].rate >= best_earlier[i] + threshold:
            return ordered[i].hotkey
    return None


def rank_order(standings: Sequence[Standing], threshold: Fraction, arithmetic: str = "exact") -> list[str]:
    """Every miner in rank order: the winner, then by `(-passed, hotkey)`."""
    winner = dominant_winner(standings, threshold, arithmetic)
    if winner is None:
        return []
    rest = sorted((s for s in standings if s.hotkey != winner), key=lambda s: (-s.passed, s.hotkey))
    return [winner] + [s.hotkey for s in rest]


def explain(standings: Sequence[Standing], threshold: Fraction, hotkey: str) -> Explanation:
    """How `hotkey` fared against each earlier miner, and the rate it needed against each."""
    ordered = by_seniority(standings)
    index = next((i for i, s in enumerate(ordered) if s.hotkey == hotkey), None)
    if index is None:
        raise NotRanked(f"{hotkey} is not among the ranked miners")
    me = ordered[index]
    comparisons = tuple(
        Comparison(earlier=e.hotkey, earlier_rate=e.rate, needed=e.rate + threshold,
                   margin=me.rate - (e.rate + threshold), beaten=me.rate >= e.rate + threshold)
        for e in ordered[:index]
    )
    return Explanation(
        hotkey=hotkey, rate=me.rate, position=index, dominates=all(c.beaten for c in comparisons),
        winner=dominant_winner(standings, threshold), comparisons=comparisons,
    )
