"""Miners: commitment parsing and naming rules, duplicates, and the own validator's miner view.

The rules and `invalid_reason` strings are the seed's (seed-spec §2.4). One difference on
purpose (§12.13): a commitment whose `model_name` has the wrong type (a number, a list, NaN,
an object) gets the reason `malformed_model_name` instead of raising, so one miner's garbage
never stops the validation of the others. A commitment block of 0 is a real block (the seed
sorts it first), not "unknown".

`MinersView` folds one origin's `metagraph_observed`, `commitment_observed` and `miner_checked`
events; `snapshot(until_block)` gives the view as of a block (the epoch decision ignores later
events).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from leoma.log.events import CommitmentObserved, MetagraphObserved, MinerChecked, decode_body

COMMIT_FIELDS: tuple[str, ...] = ("model_name", "model_revision", "chute_id")
NO_BLOCK = 2**31
"""Seniority of a miner whose commit block is unknown: after everyone else (the seed's rule)."""


def parse_commitment(text: object) -> dict[str, Any]:
    """A commitment's JSON object, or `{}` for empty, unparsable or non-object text (seed rule)."""
    if not text or not isinstance(text, (str, bytes)):
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def commitment_problem(parsed: Mapping[str, Any], hotkey: str | None = None) -> str | None:
    """The seed's `invalid_reason` for a parsed commitment, or None when its fields are fine.

    Fields are checked in the seed's order; a falsy value is `missing_<field>`; a truthy
    `model_name` that is not a string is `malformed_model_name` (the seed raised here), while a
    truthy non-string revision or chute id passes, as in the seed, to be judged by the checks. The model's repository
    name must start with `leoma` and, when `hotkey` is given, end with it (case-insensitive).
    """
    if not isinstance(parsed, Mapping):
        return "missing_model_name"
    for field in COMMIT_FIELDS:
        value = parsed.get(field)
        if not value:
            return f"missing_{field}"
        # A truthy non-string revision or chute id is passed on (as its text) for the Hugging
        # Face and Chutes checks to decide, as in the seed. A non-string model name crashed the
        # seed's whole validation pass (§12.13): here it is this miner's reason only.
        if field == "model_name" and not isinstance(value, str):
            return "malformed_model_name"
    repo = str(parsed["model_name"]).strip().rsplit("/", 1)[-1].strip().lower()
    if not repo.startswith("leoma"):
        return "model_name_must_start_with_leoma"
    if hotkey is not None and not repo.endswith(hotkey.strip().lower()):
        return "model_name_must_end_with_hotkey"
    return None


def commit_count_problem(count: int, max_commits: int = 2) -> str | None:
    """`max_commits_exceeded_<max>` when a hotkey holds more commitments than allowed."""
    return f"max_commits_exceeded_{max_commits}" if count > max_commits else None


def duplicates(miners: Iterable[MinerChecked]) -> dict[str, str]:
    """Valid miners serving the same model weights as an earlier one: `{hotkey: reason}`.

    Among valid miners with a model hash, each group of equal hashes is ordered by
    `(commit block, uid)`; the first keeps its validity, the others get
    `duplicate_model:earliest_uid=<uid>`.
    """
    groups: dict[str, list[MinerChecked]] = {}
    for m in miners:
        if m.valid and m.model_hash:
            groups.setdefault(m.model_hash, []).append(m)
    out: dict[str, str] = {}
    for model_hash in sorted(groups):
        group = sorted(groups[model_hash], key=lambda m: (m.commit_block, m.uid, m.hotkey))
        for m in group[1:]:
            out[m.hotkey] = f"duplicate_model:earliest_uid={group[0].uid}"
    return dict(sorted(out.items()))


# -- the fold ------------------------------------------------------------------------------


class MinersSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The own validator's view of the miners as of one block."""

    checked: dict[str, MinerChecked]
    """The latest `miner_checked` per hotkey."""
    uid_by_hotkey: dict[str, int]
    """The latest metagraph's uid of every registered hotkey (empty before any metagraph)."""
    commit_block: dict[str, int]
    """Each hotkey's seniority: its latest commitment's block (else the block its check saw)."""
    valid: tuple[str, ...]
    """Hotkeys that may be paid: checked valid, registered, not a duplicate, sorted."""
    reasons: dict[str, str]
    """Why each checked hotkey that is not in `valid` is not."""
    has_metagraph: bool = False

    def is_valid(self, hotkey: str) -> bool:
        """Whether `hotkey` may receive weight."""
        return hotkey in self.valid

    def reason(self, hotkey: str) -> str:
        """Why `hotkey` is not valid ("" when it is)."""
        if hotkey in self.valid:
            return ""
        return self.reasons.get(hotkey, "not_checked")


class MinersState(msgspec.Struct, kw_only=True):
    """The serialisable state of `MinersView` (every version, so any past block can be viewed)."""

    own: str
    netuid: int | None = None
    metagraphs: list[tuple[int, int, MetagraphObserved]] = []
    commitments: dict[str, list[tuple[int, int, int, int]]] = {}
    """hotkey -> [(origin_seq, block, commit_block, netuid)]"""
    checks: dict[str, list[tuple[int, int, MinerChecked]]] = {}


def _latest(items: Sequence[tuple[Any, ...]], until_block: int | None) -> Any:
    best = None
    for item in items:
        if until_block is not None and item[1] > until_block:
            continue
        if best is None or item[0] > best[0]:
            best = item
    return best


class MinersView:
    """Fold of one origin's metagraph, commitment and miner-check events."""

    KINDS = ("metagraph_observed", "commitment_observed", "miner_checked")

    def __init__(self, own: str, *, netuid: int | None = None, state: MinersState | None = None) -> None:
        self.state = state if state is not None else MinersState(own=own, netuid=netuid)
        self.netuid = netuid if netuid is not None else self.state.netuid

    @classmethod
    def fold(cls, rows: Iterable[Any], *, own: str, netuid: int | None = None) -> MinersView:
        """A view built from `rows` (any origin; only `own`'s count)."""
        view = cls(own, netuid=netuid)
        for row in rows:
            view.apply(row)
        return view

    def apply(self, row: Any) -> None:
        """Take one `Row` into account (rows of other origins or kinds are ignored)."""
        if row.origin != self.state.own or row.kind not in self.KINDS:
            return
        self.apply_body(row.origin_seq, row.block, decode_body(row.body, row.v))

    def apply_body(self, origin_seq: int, block: int, body: Any) -> None:
        """Take one decoded own body into account."""
        s = self.state
        if isinstance(body, MetagraphObserved):
            s.metagraphs.append((origin_seq, block, body))
        elif isinstance(body, CommitmentObserved):
            s.commitments.setdefault(body.hotkey, []).append((origin_seq, block, body.commit_block, body.netuid))
        elif isinstance(body, MinerChecked):
            s.checks.setdefault(body.hotkey, []).append((origin_seq, block, body))

    def snapshot(self, until_block: int | None = None, *, netuid: int | None = None) -> MinersSnapshot:
        """The view as of `until_block` (events recorded at later blocks are not seen).

        With a `netuid` (or the view's own), metagraphs and commitments of other subnets are
        not seen either.
        """
        s = self.state
        netuid = netuid if netuid is not None else self.netuid
        metas = s.metagraphs if netuid is None else [m for m in s.metagraphs if m[2].netuid == netuid]
        meta = _latest(metas, until_block)
        uid_by_hotkey: dict[str, int] = {}
        if meta is not None:
            for uid, hotkey in enumerate(meta[2].hotkeys):
                uid_by_hotkey.setdefault(hotkey, uid)
        checked: dict[str, MinerChecked] = {}
        for hotkey in sorted(s.checks):
            found = _latest(s.checks[hotkey], until_block)
            if found is not None:
                checked[hotkey] = found[2]
        commit_block: dict[str, int] = {}
        for hotkey in sorted(set(s.commitments) | set(checked)):
            found = _latest([c for c in s.commitments.get(hotkey, []) if netuid is None or c[3] == netuid],
                            until_block)
            if found is not None and found[2] >= 0:
                commit_block[hotkey] = found[2]  # block 0 is a real block, earliest of all
            elif hotkey in checked and checked[hotkey].commit_block > 0:
                commit_block[hotkey] = checked[hotkey].commit_block
        reasons: dict[str, str] = {}
        for hotkey, check in checked.items():
            if not check.valid:
                reasons[hotkey] = check.invalid_reason or "invalid"
            elif meta is not None and hotkey not in uid_by_hotkey:
                reasons[hotkey] = "not_on_metagraph"
            elif meta is None:
                reasons[hotkey] = "no_metagraph"
            elif 0 < check.commit_block < commit_block.get(hotkey, 0):
                # The miner committed something new after this check: its new model is unchecked.
                reasons[hotkey] = "commitment_changed_since_check"
        candidates = [
            msgspec.structs.replace(c, commit_block=commit_block.get(h, NO_BLOCK), uid=uid_by_hotkey.get(h, c.uid))
            for h, c in checked.items() if h not in reasons
        ]
        reasons.update(duplicates(candidates))
        valid = tuple(sorted(h for h in checked if h not in reasons))
        return MinersSnapshot(
            checked=checked, uid_by_hotkey=dict(sorted(uid_by_hotkey.items())),
            commit_block=commit_block, valid=valid, reasons=dict(sorted(reasons.items())),
            has_metagraph=meta is not None,
        )

    def prune(self, until_block: int) -> None:
        """Forget every version superseded at `until_block`: views at that block or later are unchanged.

        Of the versions recorded at or before the block, only the one a snapshot would pick
        (the highest `origin_seq`, per netuid where the netuid filters) is kept, with every later one.
        """
        s = self.state

        def keep(items: list[Any], group: Any = lambda item: None) -> list[Any]:
            best: dict[Any, Any] = {}
            for item in items:
                if item[1] <= until_block:
                    g = group(item)
                    if g not in best or item[0] > best[g][0]:
                        best[g] = item
            kept = {id(item) for item in best.values()}
            return [item for item in items if item[1] > until_block or id(item) in kept]

        s.metagraphs = keep(s.metagraphs, lambda m: m[2].netuid)
        s.commitments = {h: keep(c, lambda x: x[3]) for h, c in s.commitments.items()}
        s.checks = {h: keep(c) for h, c in s.checks.items()}

    # Conveniences over the newest snapshot, for services that want "now".

    def latest_checks(self) -> dict[str, MinerChecked]:
        """The latest `MinerChecked` per hotkey."""
        return self.snapshot().checked

    def valid_miners(self) -> tuple[str, ...]:
        """Hotkeys that may be paid right now, sorted."""
        return self.snapshot().valid
