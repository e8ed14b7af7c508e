"""The weight vector and its burn (seed-spec §6.8; fix §12.10)."""

from __future__ import annotations

from leoma.log.events import WeightEntry
from projections.weights import FULL_WEIGHT, payout

UIDS = {"w": 3, "x": 7, "y": 11}


def test_winner_gets_all_the_weight() -> None:
    p = payout(["w", "x"], UIDS, lambda h: "")
    assert (p.winner, p.winner_uid, p.weights, p.burn_reason) == ("w", 3, (WeightEntry(uid=3, weight=FULL_WEIGHT),), "")


def test_nobody_ranked_burns_to_uid_0() -> None:
    p = payout([], UIDS, lambda h: "")
    assert (p.winner, p.winner_uid, p.weights, p.burn_reason) == ("", 0, (WeightEntry(uid=0, weight=65535),), "no eligible miner")


def test_fix_invalid_winner_never_paid() -> None:
    # Blacklisted rank 1 and an off-metagraph rank 2 are skipped: rank 3 is paid, not the burn.
    order = ["w", "gone", "y"]
    p = payout(order, UIDS, lambda h: "invalid: blacklisted" if h == "w" else "")
    assert (p.winner, p.winner_uid) == ("y", 11)
    assert p.skipped == (("w", "invalid: blacklisted"), ("gone", "not on the metagraph"))


def test_nobody_payable_burns_with_a_reason() -> None:
    p = payout(["gone"], UIDS, lambda h: "", burn_uid=0)
    assert p.winner == "" and p.burn_reason == "no payable miner" and p.weights[0].uid == 0
