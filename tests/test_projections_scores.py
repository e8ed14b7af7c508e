"""Per-validator-average aggregation and eligibility (seed-spec §6.4, §6.5, §10)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.scores import MinerScore, Verdict, eligibility, required_distinct_validators, tally

F = Fraction


def ok(score: MinerScore, completeness: Fraction = F(4, 5), min_distinct: int = 1) -> bool:
    return eligibility(score, valid=True, completeness_threshold=completeness, min_distinct=min_distinct)[0]


def test_one_validator_four_of_five() -> None:
    verdicts = [Verdict("A", t, "m", t <= 4) for t in range(1, 6)]
    s = tally(verdicts, range(1, 6), {t: "A" for t in range(1, 6)}).scores["m"]
    assert (s.avg_rate, s.passed, s.evaluated, s.completeness) == (F(4, 5), 4, 5, 1)


def test_mean_of_validator_rates_not_pooled() -> None:
    samplers = {t: ("A" if t <= 10 else "B") for t in range(1, 13)}
    verdicts = [Verdict("A", t, "m", t <= 5) for t in range(1, 11)] + [Verdict("B", t, "m", True) for t in (11, 12)]
    s = tally(verdicts, range(1, 13), samplers).scores["m"]
    assert s.avg_rate == F(3, 4)
    assert [(r.validator, r.passed, r.evaluated) for r in s.rates] == [("A", 5, 10), ("B", 2, 2)]


def test_completeness_counts_existing_tasks_only() -> None:
    t = tally([Verdict("A", i, "m", True) for i in range(1, 7)], range(1, 11), {i: "A" for i in range(1, 11)})
    assert t.existing_tasks == (1, 2, 3, 4, 5, 6) and t.scores["m"].completeness == 1


def test_verdict_outside_the_window_is_ignored() -> None:
    t = tally([Verdict("A", 1, "m", True), Verdict("A", 999, "m", False)], [1], {1: "A", 999: "A"})
    assert t.scores["m"].evaluated == 1


def test_sparse_miner_is_incomplete() -> None:
    samplers = {i: "A" for i in range(1, 11)}
    verdicts = [Verdict("A", i, "full", True) for i in range(1, 11)] + [Verdict("A", i, "sparse", True) for i in range(1, 6)]
    scores = tally(verdicts, range(1, 11), samplers).scores
    assert scores["sparse"].completeness == F(1, 2) and not ok(scores["sparse"])
    assert ok(scores["full"])


def test_two_validators_average() -> None:
    samplers = {**{i: "A" for i in range(1, 6)}, **{i: "B" for i in range(6, 11)}}
    verdicts = [Verdict("A", i, "m", True) for i in range(1, 6)] + [Verdict("B", i, "m", i in (6, 8, 10)) for i in range(6, 11)]
    assert tally(verdicts, range(1, 11), samplers).scores["m"].avg_rate == F(4, 5)


def test_distinct_validator_gate() -> None:
    samplers = {1: "A", 2: "B", 3: "C"}
    verdicts = [Verdict("A", 1, "pair", True), Verdict("B", 2, "pair", True), Verdict("A", 1, "solo", True)]
    scores = tally(verdicts, [1, 2, 3], samplers).scores
    assert ok(scores["pair"], F(0), 2) and not ok(scores["pair"], F(0), 3)
    assert not ok(scores["solo"], F(0), 2) and ok(scores["solo"], F(0), 1)
    assert eligibility(scores["solo"], valid=True, completeness_threshold=F(0), min_distinct=2) == (
        False, "too few validators: 1 < 2")


@pytest.mark.parametrize(("active", "need"), [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (-3, 1)])
def test_required_distinct_validators(active: int, need: int) -> None:
    assert required_distinct_validators(active, F(1, 2)) == need


def test_completeness_veto_vector() -> None:
    vals = ["V0", "V1", "V2", "V3"]
    samplers = {t: vals[t % 4] for t in range(40)}
    verdicts = []
    for t in range(40):
        if samplers[t] != "V0":
            verdicts.append(Verdict(samplers[t], t, "X", True))
        verdicts.append(Verdict(samplers[t], t, "Y", t % 5 < 3))
    scores = tally(verdicts, range(40), samplers).scores
    assert scores["X"].completeness == F(3, 4) and scores["X"].avg_rate == 1 and not ok(scores["X"])
    assert scores["Y"].avg_rate == F(3, 5) and ok(scores["Y"])


def test_invalid_miner_is_not_eligible() -> None:
    s = tally([Verdict("A", 1, "m", True)], [1], {1: "A"}).scores["m"]
    assert eligibility(s, valid=False, invalid_reason="blacklisted", completeness_threshold=F(0), min_distinct=1) == (
        False, "invalid: blacklisted")


def test_fix_verdict_from_wrong_sampler_ignored() -> None:
    t = tally([Verdict("A", 1, "m", False), Verdict("B", 1, "m", True)], [1], {1: "A"})
    assert t.scores["m"].avg_rate == 0 and t.scores["m"].evaluated == 1
    assert [(i.origin, i.reason) for i in t.ignored] == [("B", "not the task's sampler (A)")]


def test_fix_average_does_not_depend_on_read_order() -> None:
    # Three validators at 1/3, 1/3, 1/3: floats sum to 0.9999999999999999 in one order; exact here.
    samplers = {1: "A", 2: "B", 3: "C", 4: "A", 5: "B", 6: "C", 7: "A", 8: "B", 9: "C"}
    verdicts = [Verdict(samplers[t], t, "m", t <= 3) for t in range(1, 10)]
    a = tally(verdicts, range(1, 10), samplers).scores["m"]
    b = tally(list(reversed(verdicts)), range(1, 10), samplers).scores["m"]
    assert a == b and a.avg_rate == F(1, 3)


@given(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 9), st.sampled_from(["m1", "m2"]), st.booleans()),
                max_size=40, unique_by=lambda v: (v[1], v[2])), st.randoms())
def test_tally_is_order_independent(raw: list, rnd) -> None:  # type: ignore[no-untyped-def]
    samplers = {t: "ABC"[t % 3] for t in range(10)}
    verdicts = [Verdict(*v) for v in raw]
    shuffled = verdicts[:]
    rnd.shuffle(shuffled)
    assert tally(verdicts, range(8), samplers) == tally(shuffled, range(8), samplers)
