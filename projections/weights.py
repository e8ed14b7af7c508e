"""The weight vector: everything to the winner's uid, or everything to the burn uid.

Weights are the chain's u16 integers (the chain normalises them). The seed burned when the
winner was not on the metagraph (seed-spec §12.10) and paid winners it never checked. Here a
winner that is not payable -- invalid, blacklisted, or without a uid on the metagraph -- is
skipped and the next miner in rank order is paid; the burn is only for "nobody payable".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgspec

from leoma.log.events import WeightEntry

FULL_WEIGHT = 65535
"""u16 max: one uid holding all the weight."""


class Payout(msgspec.Struct, frozen=True, kw_only=True):
    """The decided weights: who is paid (`winner`, "" when burning), and why not someone above it."""

    winner: str
    winner_uid: int
    weights: tuple[WeightEntry, ...]
    burn_reason: str = ""
    skipped: tuple[tuple[str, str], ...] = ()
    """`(hotkey, reason)` for every miner ranked above the payee that could not be paid."""


def burn(burn_uid: int, reason: str, skipped: Sequence[tuple[str, str]] = ()) -> Payout:
    """All weight to the burn uid."""
    return Payout(winner="", winner_uid=burn_uid, weights=(WeightEntry(uid=burn_uid, weight=FULL_WEIGHT),),
                  burn_reason=reason, skipped=tuple(skipped))


def payout(
    order: Sequence[str],
    uid_by_hotkey: Mapping[str, int],
    is_payable: Callable[[str], str],
    *,
    burn_uid: int = 0,
) -> Payout:
    """Pay the first miner of `order` (rank order) that is payable.

    `is_payable(hotkey)` returns "" when the miner may be paid, else the reason it may not
    (e.g. "invalid: blacklisted"). A miner without a uid in `uid_by_hotkey` is never paid.
    """
    if not order:
        return burn(burn_uid, "no eligible miner")
    skipped: list[tuple[str, str]] = []
    for hotkey in order:
        problem = is_payable(hotkey)
        if not problem and hotkey not in uid_by_hotkey:
            problem = "not on the metagraph"
        if problem:
            skipped.append((hotkey, problem))
            continue
        uid = uid_by_hotkey[hotkey]
        return Payout(winner=hotkey, winner_uid=uid, weights=(WeightEntry(uid=uid, weight=FULL_WEIGHT),),
                      skipped=tuple(skipped))
    return burn(burn_uid, "no payable miner", skipped)


# -- fail closed: holding good weights through epochs without data -----------------------------

NO_ALLOWLIST = "no allowlist"
NO_WINDOW = "no settled window"
NO_VERDICTS = "no verdicts"
NO_METAGRAPH = "no metagraph"
NO_ELIGIBLE = "no eligible miner"
NO_PAYABLE = "no payable miner"
NO_DATA: frozenset[str] = frozenset({NO_ALLOWLIST, NO_WINDOW, NO_VERDICTS, NO_METAGRAPH})
"""Burn reasons that mean "nothing to decide on" (as opposed to "nobody deserves it")."""


def kept_epoch(epoch: int, burn_reason: str, paid_epochs: Sequence[int], grace: int) -> int:
    """The earlier epoch whose weights stay on chain instead of this decision's, or -1.

    A decision that burns only for lack of data (`NO_DATA`) does not overwrite the weights of
    the newest earlier epoch that paid a winner, as long as at most `grace` epochs separate
    them (`epoch.burn_after_epochs_without_data`); past that, or with data, the decision goes
    out as it is. `paid_epochs` are the validator's own earlier decisions that paid a winner.
    """
    if burn_reason not in NO_DATA:
        return -1
    earlier = [e for e in paid_epochs if e < epoch]
    if not earlier:
        return -1
    good = max(earlier)
    return good if epoch - good <= grace else -1
