"""Verdicts in the window -> per-validator pass rates -> each miner's average and eligibility.

The seed's rules (seed-spec §6.5): a miner's `avg_rate` is the mean of the pass rates of the
validators that evaluated it (each validator weighs 1, however many tasks it sampled);
`completeness` is the share of the window's *existing* tasks (those with at least one verdict)
in which the miner has a verdict; eligibility needs validity, completeness >= the threshold and
verdicts from at least `max(1, ceil(active * ratio))` distinct validators.

Fixes: everything is an exact `Fraction` summed in sorted order, so the result does not depend
on read order or on float rounding (§12.8); only the task's canonical sampler's verdicts count
(§12.5) -- a verdict from anyone else is ignored and reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

import msgspec

from leoma.log.events import ValidatorRate


class Verdict(NamedTuple):
    """One verdict as scoring sees it: who recorded it, on which task, for which miner."""

    origin: str
    task_id: int
    miner: str
    passed: bool


class IgnoredVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """A verdict that did not count, and why."""

    origin: str
    task_id: int
    miner: str
    reason: str


class MinerScore(msgspec.Struct, frozen=True, kw_only=True):
    """A miner's tallies over the window."""

    hotkey: str
    rates: tuple[ValidatorRate, ...]
    passed: int
    evaluated: int
    tasks: int
    avg_rate: Fraction
    completeness: Fraction

    @property
    def distinct_validators(self) -> int:
        return len(self.rates)


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """Scores of every miner with a counted verdict, the window's existing tasks, and what was ignored."""

    scores: dict[str, MinerScore]
    existing_tasks: tuple[int, ...]
    ignored: tuple[IgnoredVerdict, ...] = ()

    @property
    def verdicts(self) -> int:
        return sum(s.evaluated for s in self.scores.values())


def required_distinct_validators(active: int, ratio: Fraction) -> int:
    """The distinct-validator gate: `max(1, ceil(active * ratio))` (1 when nobody is active)."""
    if active <= 0:
        return 1
    return max(1, math.ceil(Fraction(active) * ratio))


def tally(verdicts: Iterable[Verdict], window: Sequence[int], samplers: Mapping[int, str]) -> Tally:
    """Count the verdicts that belong to the window and were recorded by the task's sampler.

    `samplers` maps each window task to its canonical sampler. A `(task, miner)` pair counts
    once; if the sampler recorded it twice, the caller decides which one is given last (the
    epoch fold keeps the highest `origin_seq`).
    """
    in_window = set(window)
    ignored: list[IgnoredVerdict] = []
    chosen: dict[tuple[int, str], Verdict] = {}
    for v in verdicts:
        origin, task_id, miner, _passed = v
        if task_id not in in_window:
            continue  # outside the window: not scoring's business, not an offence either
        sampler = samplers.get(task_id)
        if origin != sampler:
            ignored.append(IgnoredVerdict(origin=origin, task_id=task_id, miner=miner,
                                          reason=f"not the task's sampler ({sampler})"))
            continue
        chosen[(task_id, miner)] = v
    per_miner: dict[str, dict[str, list[int]]] = {}
    tasks_of: dict[str, set[int]] = {}
    for (task_id, miner), (origin, _task, _miner, passed) in chosen.items():
        counts = per_miner.setdefault(miner, {}).setdefault(origin, [0, 0])
        counts[0] += 1
        counts[1] += passed
        tasks_of.setdefault(miner, set()).add(task_id)
    existing = tuple(sorted({t for t, _ in chosen}))
    scores: dict[str, MinerScore] = {}
    for miner in sorted(tasks_of):
        by_validator = per_miner[miner]
        rates = tuple(
            ValidatorRate(validator=validator, passed=by_validator[validator][1], evaluated=by_validator[validator][0])
            for validator in sorted(by_validator)
        )
        scores[miner] = score_of(miner, rates, len(tasks_of[miner]), len(existing))
    ignored.sort(key=lambda i: (i.task_id, i.miner, i.origin))
    return Tally(scores=scores, existing_tasks=existing, ignored=tuple(ignored))


def score_of(miner: str, rates: Sequence[ValidatorRate], tasks: int, existing: int) -> MinerScore:
    """A miner's score from its per-validator counts (summed in validator order, exactly)."""
    ordered = tuple(sorted(rates, key=lambda r: r.validator))
    counted = [r for r in ordered if r.evaluated > 0]
    # Exact sum of passed/evaluated over a common denominator (one reduction at the end).
    num, den = 0, 1
    for r in counted:
        num, den = num * r.evaluated + r.passed * den, den * r.evaluated
    avg = Fraction(num, den * len(counted)) if counted else Fraction(0)
    return MinerScore(
        hotkey=miner, rates=ordered,
        passed=sum(r.passed for r in ordered), evaluated=sum(r.evaluated for r in ordered),
        tasks=tasks, avg_rate=avg,
        completeness=Fraction(tasks, existing) if existing else Fraction(0),
    )


def eligibility(
    score: MinerScore,
    *,
    valid: bool,
    invalid_reason: str = "",
    completeness_threshold: Fraction,
    min_distinct: int,
    completeness_tolerance: Fraction = Fraction(0),
) -> tuple[bool, str]:
    """Whether a miner may be ranked, and why not (validity first, then completeness, then the gate).

    `completeness_tolerance` is subtracted from the threshold (the seed's `1e-12`, exactly).
    """
    if not valid:
        return False, f"invalid: {invalid_reason or 'not checked'}"
    if score.completeness < completeness_threshold - completeness_tolerance:
        return False, f"incomplete: completeness {score.completeness} < {completeness_threshold}"
    if score.distinct_validators < min_distinct:
        return False, f"too few validators: {score.distinct_validators} < {min_distinct}"
    return True, ""
