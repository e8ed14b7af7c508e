"""The migration profile's switches, checked against the seed's own vectors (seed-spec §6.3-§6.6)."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from leoma.log import events as ev
from leoma.log.consensus import DEFAULT, load_consensus, load_seed_profile
from projections import seedview
from projections.epoch import score_epoch
from projections.ranking import Standing, dominant_winner, seed_float_rate
from projections.scores import MinerScore, eligibility
from projections.window import TaskClaim, canonical_in_ring_order, settled_window
from tests.builders import LogBuilder

V = ["A", "B", "C", "D"]


def claims(produced: dict[str, set[int]]) -> list[TaskClaim]:
    return [TaskClaim(v, t, 0) for v, ts in produced.items() for t in ts]


@pytest.mark.parametrize(("produced", "expected"), [
    ({"A": {0, 4, 8}, "B": {1, 5}}, {0: "A", 1: "B", 4: "A", 5: "B", 8: "A"}),
    ({"B": {0, 1}}, {0: "B", 1: "B"}),
    ({"A": {0}, "B": {0}}, {0: "A"}),
    ({"C": {0}}, {0: "C"}),
])
def test_ring_order_producers_are_the_seeds(produced: dict[str, set[int]], expected: dict[int, str]) -> None:
    assert canonical_in_ring_order(claims(produced), V).tasks == expected
    assert canonical_in_ring_order(claims(produced), []).tasks == {}


@pytest.mark.parametrize(("epoch_block", "lookback", "window"), [(1200, 0, (7, 8, 10)), (1199, 0, (5, 7, 8)),
                                                                 (1200, 500, (7, 8, 10))])
def test_produced_settle_margin_is_the_seeds(epoch_block: int, lookback: int, window: tuple[int, ...]) -> None:
    canon = {t: "A" for t in (5, 7, 8, 10, 11, 12)}
    assert settled_window(canon, epoch_block, 100, 3, 2, lookback, settle="produced").tasks == window


def test_produced_settle_margin_depends_on_what_was_produced_the_rotation_margin_does_not() -> None:
    """seed-spec §10: rids 90-100 give [94..98]; without 100 yet, [93..97] -- the fix gives [94..98] both times."""
    full = {t: "A" for t in range(90, 101)}
    late = {t: "A" for t in range(90, 100)}
    assert settled_window(full, 10000, 100, 5, 2, 0, settle="produced").tasks == (94, 95, 96, 97, 98)
    assert settled_window(late, 10000, 100, 5, 2, 0, settle="produced").tasks == (93, 94, 95, 96, 97)
    assert settled_window(late, 10000, 100, 5, 2, 0).tasks == settled_window(full, 10000, 100, 5, 2, 0).tasks


def test_float_dominance_is_the_seeds_at_an_exact_margin() -> None:
    """(A .55 b1, B .60 b2) -> A in doubles (0.55 + 0.05 > 0.6), B exactly; (.75, .80) -> the later one in both."""
    field = [Standing(hotkey="A", rate=Fraction(11, 20), commit_block=1), Standing(hotkey="B", rate=Fraction(3, 5), commit_block=2)]
    assert dominant_winner(field, Fraction(1, 20), "float") == "A"
    assert dominant_winner(field, Fraction(1, 20)) == "B"
    field = [Standing(hotkey="A", rate=Fraction(3, 4), commit_block=1), Standing(hotkey="B", rate=Fraction(4, 5), commit_block=2)]
    assert dominant_winner(field, Fraction(1, 20), "float") == dominant_winner(field, Fraction(1, 20)) == "B"
    assert seed_float_rate([(1, 10), (2, 10)]) == (0.1 + 0.2) / 2 != 0.15
    assert seed_float_rate([]) == 0.0


def test_completeness_tolerance_is_exact() -> None:
    score = MinerScore(hotkey="m", rates=(), passed=0, evaluated=0, tasks=0, avg_rate=Fraction(0),
                       completeness=Fraction(4, 5) - Fraction(1, 10**13))
    kw = dict(valid=True, completeness_threshold=Fraction(4, 5), min_distinct=0)
    assert eligibility(score, **kw)[0] is False
    assert eligibility(score, **kw, completeness_tolerance=Fraction(1, 10**12))[0] is True
    assert load_seed_profile().completeness_tolerance == Fraction(1, 10**12) and DEFAULT.completeness_tolerance == 0


def test_the_default_profile_keeps_its_digest_and_the_seed_profile_differs_only_in_the_switches() -> None:
    seed = load_seed_profile()
    assert seed.digest != DEFAULT.digest
    d, s = msgspec.to_builtins(DEFAULT), msgspec.to_builtins(seed)
    changed = {(sec, k) for sec in d if isinstance(d[sec], dict) for k in d[sec] if d[sec][k] != s[sec][k]}
    assert changed == {("window", "settle"), ("window", "producers"), ("window", "completeness_tolerance"),
                       ("ranking", "arithmetic"), ("ranking", "unpayable_winner")}
    assert b'"settle":' not in DEFAULT.canonical and b'"settle":"produced"' in seed.canonical


OWN = "val-A"
VALS = ["val-A", "val-B"]


def base(b: LogBuilder) -> None:
    b.allowlist(OWN, VALS, interval=10, block=1)
    b.metagraph(OWN, ["owner", "m1", "m2"], block=1)
    b.checked(OWN, "m1", uid=1, block=2, commit_block=5)
    b.checked(OWN, "m2", uid=2, block=2, commit_block=6, valid=False, reason="chute_not_running")


def seed_file(b: LogBuilder, peer: str, task: int, verdicts: list[tuple[str, bool]], sha: str = "s" * 64) -> None:
    b.add(OWN, ev.SeedTaskObserved(peer=peer, task_id=task, object_key=f"{task}/evaluation_results/{peer}.json",
                                   file_sha256=sha, signature="0x00", entries=len(verdicts)), block=3)
    for i, (m, p) in enumerate(verdicts):
        b.add(OWN, ev.SeedVerdictObserved(peer=peer, task_id=task, file_sha256=sha, index=i, miner=m, passed=p,
                                          entry="{}"), block=3)


def test_a_seed_peers_task_counts_like_its_own_and_only_the_latest_file_and_own_observations_count() -> None:
    b = LogBuilder()
    base(b)
    seed_file(b, "val-B", 3, [("m1", False)], sha="1" * 64)
    seed_file(b, "val-B", 3, [("m1", True), ("", True)], sha="2" * 64)       # rewritten: the latest counts
    b.add("val-B", ev.SeedTaskObserved(peer="val-B", task_id=5, object_key="k", file_sha256="3" * 64,
                                       signature="0x00", entries=0), block=3)  # someone else's observation
    d = score_epoch(b.rows(), own=OWN, epoch=1, epoch_block=100, netuid=1, consensus=DEFAULT)
    assert d.window == (3,) and d.active == ("val-B",) and d.winner == "m1"


def test_seed_profile_a_task_without_verdicts_is_not_produced_and_an_invalid_winner_burns() -> None:
    b = LogBuilder()
    base(b)
    for t in (2, 3, 4, 5):
        b.opened("val-A" if t % 2 == 0 else "val-B", t, block=t * 10, interval=10)
        if t != 5:  # task 5 opened but never judged: the seed saw no verdict file
            b.verdict("val-A" if t % 2 == 0 else "val-B", t, "m2", True, block=t * 10)
    seed = msgspec.structs.replace(load_seed_profile(), window=msgspec.structs.replace(
        load_seed_profile().window, max_lookback_blocks=0))
    d = score_epoch(b.rows(), own=OWN, epoch=1, epoch_block=59, netuid=1, consensus=seed)
    assert d.window == (2,)  # 5 not produced; 4 and 3 are the newest two produced, dropped
    assert d.winner == "" and d.winner_uid == 0 and d.burn_reason == "no payable miner"
    d = score_epoch(b.rows(), own=OWN, epoch=1, epoch_block=59, netuid=1, consensus=DEFAULT)
    assert d.window == (2, 3) and d.winner == "" and d.burn_reason == "no eligible miner"


@given(st.randoms(use_true_random=False))
@settings(max_examples=25, deadline=None)
def test_seed_observations_in_any_order_give_the_same_decision(rnd: random.Random) -> None:
    b = LogBuilder()
    base(b)
    seed_file(b, "val-B", 3, [("m1", False)], sha="1" * 64)
    seed_file(b, "val-B", 3, [("m1", True)], sha="2" * 64)
    seed_file(b, "val-B", 5, [("m1", True), ("m1", False)], sha="3" * 64)
    b.opened("val-A", 4, block=40, interval=10)
    b.verdict("val-A", 4, "m1", True, block=40)
    rows = b.rows()
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    for consensus in (DEFAULT, load_seed_profile()):
        first = score_epoch(rows, own=OWN, epoch=1, epoch_block=100, netuid=1, consensus=consensus)
        again = score_epoch(shuffled, own=OWN, epoch=1, epoch_block=100, netuid=1, consensus=consensus)
        assert first == again and first.window


def test_leoma_consensus_seed_names_the_packaged_migration_profile(tmp_path, monkeypatch) -> None:
    from leoma.ops.config import Settings

    assert load_consensus("seed").digest == load_seed_profile().digest
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").write_text((Path(__file__).parents[1] / "leoma" / "consensus.toml").read_text())
    assert load_consensus("seed").digest == DEFAULT.digest  # a file of that name wins: it was asked for
    assert Settings(consensus_path="consensus-seed.toml").consensus().digest == load_seed_profile().digest
