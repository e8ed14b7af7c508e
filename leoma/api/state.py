"""`ApiState`: the API's log folded into what its routes read, incrementally.

`refresh()` applies every row appended since the last call (the log is the only source of
truth; this is a cache of a pure fold and can be dropped and rebuilt at any time). What it keeps:

* from the API's own origin: the admin history (`admin_acted`), and from it the validator
  registry, the blacklist and the display interval; the validators' posted miner reports;
* from every other origin (the validators, imported from their mirrors): tasks, miner
  responses, verdicts, miner checks, allowlists, metagraphs, epoch decisions, liveness;
* one `projections.epoch.EpochFold` per validator, sharing the task claims and verdicts, so the
  leaderboard is the very decision a validator computes (`decision()`).

Only `admin_acted` and `miner_report_received` of the API's own origin count: a validator's
mirror cannot smuggle in an admin action.

Memory is bounded by what is served, not by history: full task records (prompts, responses,
verdicts) are kept for the newest `keep_tasks` task ids; each validator keeps its newest
decision whole and a short history (`keep_decisions`, stripped to what the lead chart reads);
the shared task claims and verdicts, and each validator's miner observations, are pruned below
what the oldest validator's next decision can read (the lookback floor of its newest recorded
epoch). A decision arrives as `epoch_detail` parts followed by its small `epoch_scored`
(`leoma.log.decisions`). Folding a decision counts its parts (one missing: the decision is not
shown) and keeps its small body; the agreement views read no more (the strip, the epochs and
the validator cards: `newest_decision`; the winner and weights are the small body's, signed).
The detail is read back from the log, by key, where it is served, and checked there as `join` checks it (each part against the digest the
decision lists, then the aggregates hash): the newest decision whole when it is first asked for
(`latest_decision`), and a history entry's winner and runner-up when the reference's lead
history is (`lead_decisions`). A decision whose detail does not check out leaves the history
there. A cold start thus reads each decision's detail bytes and no more, instead of hashing and
decoding every aggregate of every decision in the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import msgspec

from leoma.errors import LogError
from leoma.log.consensus import Consensus
from leoma.log.decisions import checked_heads, find, head_aggregate, join, join_lean, stored_parts
from leoma.log.eventlog import EventLog, Row, bulk_fold
from leoma.log.events import (
    VERSIONS,
    AdminActed,
    AllowlistVerified,
    AnchorCommitted,
    EpochHeld,
    EpochScored,
    MetagraphObserved,
    MinerAggregate,
    MinerChecked,
    MinerReportReceived,
    MinerResponded,
    TaskOpened,
    VerdictRecorded,
    decode_body,
)
from projections.epoch import OWN_KINDS, SHARED_KINDS, EpochFold, EpochState, StatePruned
from projections.miners import MinersState
from projections.window import lookback_floor

KEEP_TASKS = 256
"""Task ids the API keeps in full (2.5 windows of the default 100 tasks)."""
KEEP_DECISIONS = 100
"""Decisions per validator kept for the lead history (the chart's default length)."""

__all__ = ["ApiState", "Decision", "OriginInfo", "TaskRecord", "ValidatorEntry", "BlacklistEntry"]

VALIDATOR_ADD, VALIDATOR_REMOVE = "validator_add", "validator_remove"
BLACKLIST_ADD, BLACKLIST_REMOVE = "blacklist_add", "blacklist_remove"
ROTATION_INTERVAL = "rotation_interval"
ADMIN_ACTIONS = (VALIDATOR_ADD, VALIDATOR_REMOVE, BLACKLIST_ADD, BLACKLIST_REMOVE, ROTATION_INTERVAL)


class ValidatorEntry(msgspec.Struct, kw_only=True):
    """A validator in the owner's registry."""

    hotkey: str
    uid: int
    stake_rao: int
    added_by: str
    at: int


class BlacklistEntry(msgspec.Struct, kw_only=True):
    """A blacklisted miner."""

    hotkey: str
    reason: str | None
    added_by: str
    at: int


class OriginInfo(msgspec.Struct, kw_only=True):
    """What the log holds of one origin: its head, newest block and newest wall-clock stamp."""

    origin: str
    head_seq: int = 0
    events: int = 0
    last_block: int = 0
    last_at: int = 0


class TaskRecord(msgspec.Struct, kw_only=True):
    """One validator's view of one task: the opening, each miner's response and verdict."""

    task_id: int
    origin: str
    opened: TaskOpened | None = None
    opened_at: int = 0
    opened_block: int = 0
    responses: dict[str, tuple[MinerResponded, int]] = {}
    verdicts: dict[str, tuple[VerdictRecorded, int, int, int]] = {}
    """miner -> (verdict, at, origin_seq, local seq); the highest origin_seq is kept."""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The leaderboard: a validator's epoch decision recomputed from the API's log.

    `recorded` is that validator's own `epoch_scored` for the same epoch (None if it has not
    published one); `reproduced` says whether winner, weights and window match it.

    The API decides from every event it holds, the validator from those up to its frontier:
    `past_frontier` counts the events the API folded that the recorded decision did not read,
    `short_of_frontier` those it read that the API does not hold yet. When either is not 0 a
    difference may come from those events alone; `leoma replay <epoch>` reads the frontier
    exactly.
    """

    reference: str
    epoch: int
    epoch_block: int
    decision: EpochScored
    recorded: EpochScored | None = None
    reproduced: bool | None = None
    past_frontier: int = 0
    short_of_frontier: int = 0


class SampleLog:
    """Every verdict as `(at, seq, origin, task_id, miner)`: the retained ones, and how many ever."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int, str, int, str]] = []
        self.total = 0

    def append(self, item: tuple[int, int, str, int, str]) -> None:
        self._items.append(item)
        self.total += 1

    def retain_from(self, task_floor: int) -> None:
        """Forget samples of tasks below `task_floor` (they stay counted in `len`)."""
        self._items = [s for s in self._items if s[3] >= task_floor]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __len__(self) -> int:
        return self.total


def _rate(text: str) -> Fraction:
    """`Fraction(text)` for a stored rate, fast for the `n/d` and `n` forms `str(Fraction)` writes."""
    num, sep, den = text.partition("/")
    if num.isascii() and num.isdigit() and (not sep or (den.isascii() and den.isdigit())):
        return Fraction(int(num), int(den) if sep else 1)
    return Fraction(text)


def _lead_pick(winner: str, aggregates: Iterable[Any]) -> tuple[Any, Any]:
    """The winner's aggregate and the best other eligible: the first eligible non-winner of the
    highest `avg_rate` (in the decision's order among equals: what a stable sort by descending
    rate puts first)."""
    win = other = None
    best = Fraction(0)
    for a in aggregates:
        if a.hotkey == winner:
            if win is None:
                win = a
            continue
        if a.eligible:
            rate = _rate(a.avg_rate)
            if other is None or rate > best:
                other, best = a, rate
    return win, other


def _stripped(d: EpochScored, kept: tuple[MinerAggregate, ...]) -> EpochScored:
    return msgspec.structs.replace(d, aggregates=kept, frontier=(), validators=(), active=(),
                                   window=(d.window[0], d.window[-1]) if d.window else ())


def _lead_only(d: EpochScored) -> EpochScored:
    """A decision stripped to what the lead history reads: the winner and the best other eligible."""
    return _stripped(d, tuple(msgspec.structs.replace(a, rates=()) for a in _lead_pick(d.winner, d.aggregates)
                              if a is not None))


def _lead_of_heads(small: EpochScored, heads: list[Any]) -> EpochScored:
    """`_lead_only` of the lean decision `small` + `heads`, building only the two aggregates kept."""
    return _stripped(small, tuple(head_aggregate(h) for h in _lead_pick(small.winner, heads) if h is not None))


class ApiState:
    """The incremental fold of the API's log (see the module docstring)."""

    def __init__(self, log: EventLog, *, own: str, consensus: Consensus, reference: str = "",
                 keep_tasks: int = KEEP_TASKS, keep_decisions: int = KEEP_DECISIONS) -> None:
        self.log = log
        self.own = own
        self.consensus = consensus
        self.reference_setting = reference
        self.last_seq = 0
        self.admin_history: list[tuple[int, int, AdminActed]] = []
        self.registry: dict[str, ValidatorEntry] = {}
        self.blacklist: dict[str, BlacklistEntry] = {}
        self.rotation_interval = 0
        self.posted_reports: dict[str, tuple[int, dict[str, MinerChecked]]] = {}
        self.mirror_checks: dict[str, dict[str, tuple[int, MinerChecked]]] = {}
        self.origins: dict[str, OriginInfo] = {}
        self.allowlists: dict[str, tuple[int, int, AllowlistVerified]] = {}
        self.metagraph: tuple[int, int, MetagraphObserved] | None = None
        self.tasks: dict[int, dict[str, TaskRecord]] = {}
        self.decisions: dict[str, list[tuple[int, int, int, EpochScored]]] = {}
        """Each validator's newest decisions (stripped to the lead history's needs), oldest first."""
        self.anchors: dict[str, dict[int, AnchorCommitted]] = {}
        """Each validator's committed anchors by epoch (the newest `keep_decisions` epochs)."""
        self.holds: dict[int, dict[str, EpochHeld]] = {}
        """Per epoch, the validators that held instead of deciding (anchored rule), with why."""
        self._latest: dict[str, tuple[int, int, int, EpochScored]] = {}
        self._parts: dict[tuple[str, int], int] = {}
        """How many detail parts were folded, by origin and epoch, until their decision is."""
        self._unjoined: set[str] = set()
        """Validators whose newest decision is held as its small body (joined when asked for)."""
        self._read_leads: dict[str, set[int]] = {}
        """Per validator, the origin_seq of each history entry whose lead was read from its detail."""
        self.samples = SampleLog()
        """(at, local seq, origin, task_id, miner) of every retained verdict, in log order."""
        self.keep_tasks = keep_tasks
        self.keep_decisions = keep_decisions
        self.task_floor = 0
        """Task ids below this left the API's memory (the log still holds them)."""
        self._shared = EpochState(own="")
        self._shared_fold = EpochFold("", state=self._shared)
        self._folds: dict[str, EpochFold] = {}
        self._decision_cache: dict[tuple[str, int], Decision | None] = {}
        self._report_ids: dict[str, str] = {}
        self._interned: dict[str, str] = {}
        """One string object per hotkey across the million verdict entries."""

    # -- folding -----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Apply the rows appended since the last call; returns how many."""
        with bulk_fold(freeze=self.last_seq == 0):  # the cold start's state lives as long as the API
            return self._refresh()

    def _refresh(self) -> int:
        n = 0
        if self.last_seq == 0:
            # Cold start: tasks older than the newest `keep_tasks` would be dropped at once, so
            # their bodies are never decoded (their verdicts still count in the decisions).
            newest = self.log.newest_row("task_opened")
            if newest is not None:
                self.task_floor = max(self.task_floor, self._task_id(newest) - self.keep_tasks + 1)
        names = self.log.origin_names()
        own = self.own
        current = VERSIONS["verdict_recorded"]
        # The bulk (another origin's current-version verdicts) is `apply` inline, with the
        # state it touches held in locals: the steps `apply` takes for such a row, a million times.
        origins = self.origins
        shared = self._shared
        verdicts = shared.verdicts
        interned = self._interned
        samples = self.samples
        decode_lite = _verdict_lite.decode
        shared_floor, task_floor = shared.floor_task, self.task_floor
        last = self.last_seq
        skipped = 0  # verdicts of tasks past what the API serves, for `samples.total`
        # Rows come in runs of one origin (a mirror's import): its name and info are looked up
        # once per run, and the run's counts are kept in locals until it ends. The log gives the
        # bulk rows (current-version verdicts) without a header, and every other row's key, kind
        # and version in its header (`EventLog.bulk_marked_rows`).
        run_oid: int | None = None
        run_name = ""
        run_bulk = False
        info = OriginInfo(origin="")
        events = head_seq = last_block = last_at = 0
        split_header = self.log.split_header

        def name_of(oid: int) -> str:
            """The origin's hotkey (one string object per hotkey); read again on a new origin."""
            name = names.get(oid)
            if name is None:
                names.update(self.log.origin_names())
                name = names[oid]
            return interned.setdefault(name, name)

        for seq, oid, oseq, block, body, at, header in self.log.bulk_marked_rows("verdict_recorded", current,
                                                                                  after=self.last_seq):
            n += 1
            if header is None and oid != run_oid:
                if events:
                    _count(info, events, head_seq, last_block, last_at)
                    events = 0
                run_name = name_of(oid)
                run_oid, run_bulk = oid, run_name != own
                run_info = origins.get(run_name)
                if run_info is None:
                    run_info = origins[run_name] = OriginInfo(origin=run_name)
                info = run_info
                head_seq, last_block, last_at = info.head_seq, info.last_block, info.last_at
            if header is None and run_bulk:
                last = seq  # rows come in local order
                if oseq > head_seq:
                    head_seq = oseq
                events += 1
                if block > last_block:
                    last_block = block
                if at > last_at:
                    last_at = at
                lite = decode_lite(body)
                task_id = lite.task_id
                if task_id >= shared_floor:
                    miner = lite.miner
                    entry = (run_name, interned.setdefault(miner, miner), oseq, block, lite.passed)
                    found = verdicts.get(task_id)
                    if found is None:
                        verdicts[task_id] = [entry]
                    else:
                        found.append(entry)
                if task_id < task_floor:
                    skipped += 1  # an old task: past what the API serves
                else:
                    self._keep_verdict(seq, at, run_name, oseq, task_id, body)
            else:
                if events:
                    _count(info, events, head_seq, last_block, last_at)
                    events = 0
                if last > self.last_seq:
                    self.last_seq = last
                samples.total += skipped
                skipped = 0
                key, kind, v = self.log.row_header(seq) if header is None else split_header(header)
                self.apply(seq, at, Row(seq, name_of(oid), oseq, key, kind, v, block, body))
                last = self.last_seq
                run_oid = None  # `apply` may have added the origin's info
            if n % 50_000 == 0:
                samples.total += skipped
                skipped = 0
                self._bound()
                shared_floor, task_floor = shared.floor_task, self.task_floor
        if events:
            _count(info, events, head_seq, last_block, last_at)
        samples.total += skipped
        if last > self.last_seq:
            self.last_seq = last
        if last > shared.last_seq:
            shared.last_seq = last
        if n:
            self._bound()
            self._decision_cache.clear()
        return n

    def _bound(self) -> None:
        """Drop what is no longer served or decidable (see the module docstring)."""
        if len(self.tasks) > self.keep_tasks:
            floor = sorted(self.tasks)[-self.keep_tasks]
            for task_id in [t for t in self.tasks if t < floor]:
                del self.tasks[task_id]
            self.task_floor = max(self.task_floor, floor)
            self.samples.retain_from(self.task_floor)
        # The shared claims and verdicts: below the lookback floor of the oldest validator's
        # newest decision, no decision this API makes can read them.
        blocks = [self._latest[o][0] for o in self._folds if o in self._latest]
        if not blocks:
            return
        block = min(blocks)
        interval = max((a[2].interval for a in self.allowlists.values()), default=0)
        lookback = lookback_floor(block, interval, self.consensus.window.max_lookback_blocks) if interval > 0 else None
        if lookback is not None and lookback > self._shared.floor_task:
            self._shared.floor_task = lookback
            self._shared.claims[:] = [c for c in self._shared.claims if c[3] >= lookback]
            for task_id in [t for t in self._shared.verdicts if t < lookback]:
                del self._shared.verdicts[task_id]
        for fold in self._folds.values():
            fold.state.floor_task = max(fold.state.floor_task, self._shared.floor_task)
            fold.prune_observations(block)

    def _fold_for(self, origin: str) -> EpochFold:
        fold = self._folds.get(origin)
        if fold is None:
            state = EpochState(own=origin, miners=MinersState(own=origin))
            # Task claims and verdicts are everyone's: one copy, shared by every validator's fold.
            state.claims = self._shared.claims
            state.verdicts = self._shared.verdicts
            fold = self._folds[origin] = EpochFold(origin, state=state)
        return fold

    def apply(self, seq: int, at: int, row: Row) -> None:
        """Take one row (with its wall-clock stamp) into account."""
        self.last_seq = max(self.last_seq, seq)
        info = self.origins.get(row.origin)
        if info is None:
            info = self.origins[row.origin] = OriginInfo(origin=row.origin)
        info.head_seq = max(info.head_seq, row.origin_seq)
        info.events += 1
        info.last_block = max(info.last_block, row.block)
        info.last_at = max(info.last_at, at)
        kind = row.kind
        if row.origin == self.own:
            if kind in ("admin_acted", "miner_report_received"):
                self._apply_own(seq, at, row.key, decode_body(row.body, row.v))
            return
        if kind in SHARED_KINDS:
            self._shared_fold.apply(row)
        elif kind in OWN_KINDS:
            self._fold_for(row.origin).apply(row)
        if kind == "epoch_detail":
            part_of = (row.origin, int(row.key.split("/")[1]) if row.key.startswith("epoch/") else -1)
            self._parts[part_of] = self._parts.get(part_of, 0) + 1
            return
        if kind in ("anchor_committed", "epoch_held"):
            self._apply_anchor(row.origin, decode_body(row.body, row.v))
            return
        if kind not in ("task_opened", "miner_responded", "verdict_recorded", "miner_checked",
                        "allowlist_verified", "metagraph_observed", "epoch_scored"):
            return
        if kind in ("task_opened", "miner_responded", "verdict_recorded") and self._task_id(row) < self.task_floor:
            if kind == "verdict_recorded":
                self.samples.total += 1
            return  # an old task: past what the API serves
        body = decode_body(row.body, row.v)
        if isinstance(body, TaskOpened):
            rec = self._task(body.task_id, row.origin)
            rec.opened, rec.opened_at, rec.opened_block = body, at, row.block
        elif isinstance(body, MinerResponded):
            self._task(body.task_id, row.origin).responses[body.miner] = (body, at)
        elif isinstance(body, VerdictRecorded):
            rec = self._task(body.task_id, row.origin)
            held = rec.verdicts.get(body.miner)
            if held is None or row.origin_seq > held[2]:
                rec.verdicts[body.miner] = (body, at, row.origin_seq, seq)
            self.samples.append((at, seq, row.origin, body.task_id, body.miner))
        elif isinstance(body, MinerChecked):
            held_check = self.mirror_checks.setdefault(row.origin, {}).get(body.hotkey)
            if held_check is None or at >= held_check[0]:
                self.mirror_checks[row.origin][body.hotkey] = (at, body)
        elif isinstance(body, AllowlistVerified):
            held_allow = self.allowlists.get(row.origin)
            if held_allow is None or (row.block, row.origin_seq) > held_allow[:2]:
                self.allowlists[row.origin] = (row.block, row.origin_seq, body)
        elif isinstance(body, MetagraphObserved):
            if self.metagraph is None or (row.block, row.origin_seq) > self.metagraph[:2]:
                self.metagraph = (row.block, row.origin_seq, body)
        elif isinstance(body, EpochScored):
            if body.details and self._parts.pop((row.origin, body.epoch), 0) != len(body.details):
                return  # a part missing: not a decision the API can show
            item = (row.block, row.origin_seq, at, body)
            held_decision = self._latest.get(row.origin)
            if held_decision is None or (body.epoch, row.origin_seq) > (held_decision[3].epoch, held_decision[1]):
                self._latest[row.origin] = item
                if body.details:
                    self._unjoined.add(row.origin)
                else:
                    self._unjoined.discard(row.origin)
            history = self.decisions.setdefault(row.origin, [])
            # A split decision's lead is read from its detail when the lead history is asked for.
            history.append((row.block, row.origin_seq, at, _stripped(body, ()) if body.details else _lead_only(body)))
            if len(history) > self.keep_decisions:
                history.sort(key=lambda d: (d[3].epoch, d[1]))
                del history[: len(history) - self.keep_decisions]

    def _apply_anchor(self, origin: str, body: Any) -> None:
        # Bounded like the decisions: the newest `keep_decisions` epochs of anchors and holds.
        if isinstance(body, AnchorCommitted):
            mine = self.anchors.setdefault(origin, {})
            mine[body.epoch] = body
            for old in sorted(mine)[: max(0, len(mine) - self.keep_decisions)]:
                del mine[old]
        elif isinstance(body, EpochHeld):
            self.holds.setdefault(body.epoch, {}).setdefault(origin, body)  # the first reason of the epoch
            for old in sorted(self.holds)[: max(0, len(self.holds) - self.keep_decisions)]:
                del self.holds[old]

    def _keep_verdict(self, seq: int, at: int, origin: str, origin_seq: int, task_id: int, body: str | bytes) -> None:
        """The full record of a verdict on a task the API serves (its body decoded in full)."""
        verdict = _verdict_full.decode(body)  # a current-version verdict (the bulk path's rows)
        rec = self._task(task_id, origin)
        held = rec.verdicts.get(verdict.miner)
        if held is None or origin_seq > held[2]:
            rec.verdicts[verdict.miner] = (verdict, at, origin_seq, seq)
        self.samples.append((at, seq, origin, task_id, verdict.miner))

    @staticmethod
    def _task_id(row: Row) -> int:
        return _task_only.decode(row.body).task_id

    def _task(self, task_id: int, origin: str) -> TaskRecord:
        by_origin = self.tasks.setdefault(task_id, {})
        rec = by_origin.get(origin)
        if rec is None:
            rec = by_origin[origin] = TaskRecord(task_id=task_id, origin=origin, responses={}, verdicts={})
        return rec

    def _apply_own(self, seq: int, at: int, key: str, body: Any) -> None:
        if isinstance(body, MinerReportReceived):
            # A report's parts share the key prefix `report/<validator>/<digest>`; a new report
            # replaces the validator's previous one (the seed's rule).
            report_id = key.rsplit("/", 1)[0]
            if self._report_ids.get(body.validator) == report_id:
                held_at, miners = self.posted_reports[body.validator]
                miners.update({m.hotkey: m for m in body.miners})
                self.posted_reports[body.validator] = (max(held_at, at), miners)
            else:
                self._report_ids[body.validator] = report_id
                self.posted_reports[body.validator] = (at, {m.hotkey: m for m in body.miners})
            return
        if not isinstance(body, AdminActed):
            return
        self.admin_history.append((seq, at, body))
        if body.action == VALIDATOR_ADD:
            self.registry[body.target] = ValidatorEntry(hotkey=body.target, uid=body.uid,
                                                        stake_rao=max(0, body.stake_rao), added_by=body.admin, at=at)
        elif body.action == VALIDATOR_REMOVE:
            self.registry.pop(body.target, None)
        elif body.action == BLACKLIST_ADD:
            self.blacklist[body.target] = BlacklistEntry(hotkey=body.target, reason=body.reason or None,
                                                         added_by=body.admin, at=at)
        elif body.action == BLACKLIST_REMOVE:
            self.blacklist.pop(body.target, None)
        elif body.action == ROTATION_INTERVAL:
            self.rotation_interval = max(0, body.uid)

    # -- derived views -----------------------------------------------------------------------

    def validators(self) -> list[str]:
        """Who sampling is expected from: the reference's verified allowlist, else the registry."""
        ref = self.reference()
        if ref and ref in self.allowlists:
            return sorted(set(self.allowlists[ref][2].validators))
        return sorted(self.registry)

    def allowed_signers(self) -> frozenset[str]:
        """Hotkeys that may POST reports: the registry plus every verified allowlist."""
        allowed = set(self.registry)
        for _, _, allow in self.allowlists.values():
            allowed.update(allow.validators)
        return frozenset(allowed)

    def interval(self, default: int) -> int:
        """The rotation interval: the reference's allowlist, the admin's display value, the default."""
        ref = self.reference()
        if ref and ref in self.allowlists and self.allowlists[ref][2].interval > 0:
            return self.allowlists[ref][2].interval
        return self.rotation_interval or default

    def reference(self) -> str:
        """The validator whose view the leaderboard adopts (configured, else the freshest decider)."""
        if self.reference_setting:
            return self.reference_setting
        if self.decisions:
            return max(self.decisions, key=lambda o: (max(d[3].epoch for d in self.decisions[o]), _neg(o)))
        candidates = sorted(self.allowlists)
        return candidates[0] if candidates else ""

    def newest_decision(self, origin: str) -> tuple[int, int, int, EpochScored] | None:
        """A validator's newest `epoch_scored`, as its small body unless it was joined already:
        what the agreement views read (the signed winner, weights and window). Its detail is not
        read: that is `latest_decision`."""
        return self._latest.get(origin)

    def latest_decision(self, origin: str) -> tuple[int, int, int, EpochScored] | None:
        """A validator's newest `epoch_scored` (highest epoch, then latest in its chain), whole.

        Joined from the log when first asked for. A decision whose parts hash right but do not
        join (a signer's inconsistent detail) leaves the history, and the next newest is served.
        """
        while origin in self._unjoined:
            self._unjoined.discard(origin)
            block, seq, at, small = self._latest[origin]
            whole = self._joined(origin, small)
            if whole is not None:
                self._latest[origin] = (block, seq, at, whole)
                break
            history = self.decisions.get(origin, [])
            history[:] = [d for d in history if d[1] != seq]
            del self._latest[origin]
            if history:
                block, seq, at, stripped = max(history, key=lambda d: (d[3].epoch, d[1]))
                found = find(self.log, stripped.epoch, origin=origin, detail=False)
                if found is None or found.origin_seq != seq:
                    break
                self._latest[origin] = (block, seq, at, found.body)
                if found.body.details:
                    self._unjoined.add(origin)
        return self._latest.get(origin)

    def _detail_parts(self, origin: str, small: EpochScored) -> list[tuple[str, bytes]] | None:
        """Each of a decision's detail parts as stored (`decisions.stored_parts`); None if one is missing."""
        parts, missing = stored_parts(self.log, origin, small)
        return None if missing else parts

    def _joined(self, origin: str, small: EpochScored) -> EpochScored | None:
        """The decision with its aggregates: `join`ed, else read lean (the parts check out but a
        rate does not decode as one), else None."""
        parts = self._detail_parts(origin, small)
        if parts is None:
            return None
        try:
            return join(small, parts)
        except LogError:
            lean = join_lean(small, parts)
            return None if lean is None else msgspec.structs.replace(small, aggregates=lean[0].aggregates)

    def lead_decisions(self, origin: str) -> list[tuple[int, int, int, EpochScored]]:
        """The validator's decision history, each stripped to its winner's and best other
        eligible's aggregates (`_lead_only`); a split decision's lead is read from its detail
        once, on the first ask. An entry whose detail does not check out leaves the history."""
        history = self.decisions.get(origin, [])
        read = self._read_leads.get(origin, set())
        kept = []
        for block, seq, at, d in history:
            if d.details and seq not in read:
                parts = self._detail_parts(origin, d)
                heads = checked_heads(d, parts) if parts is not None else None
                if heads is not None:
                    d = _lead_of_heads(d, heads)
                else:
                    whole = self._joined(origin, d)
                    if whole is None:
                        continue
                    d = _lead_only(whole)
            kept.append((block, seq, at, d))
        history[:] = kept
        self._read_leads[origin] = {seq for _, seq, _, _ in kept}
        return list(kept)

    def head_block(self) -> int:
        """The newest chain block any validator has recorded an event at."""
        return max((i.last_block for o, i in self.origins.items() if o != self.own), default=0)

    def decision(self, reference: str | None = None) -> Decision | None:
        """The epoch decision the reference validator makes from the API's log (cached per log state)."""
        ref = reference if reference is not None else self.reference()
        if not ref or ref not in self._folds:
            return None
        key = (ref, self.last_seq)
        if key not in self._decision_cache:
            self._decision_cache[key] = self._decide(ref)
        return self._decision_cache[key]

    def _decide(self, ref: str) -> Decision:
        length = self.consensus.epoch.length
        latest = self.latest_decision(ref)
        recorded = latest[3] if latest else None
        if recorded is not None:
            epoch, netuid = recorded.epoch, recorded.netuid
        else:
            head = self.origins[ref].last_block if ref in self.origins else 0
            epoch = head // length
            miners_state = self._folds[ref].state.miners
            metas = miners_state.metagraphs if miners_state else []
            netuid = max(metas, key=lambda m: (m[1], m[0]))[2].netuid if metas else 0
        epoch_block = epoch * length
        fold = self._folds[ref]
        try:
            decided = fold.decide(epoch, epoch_block, netuid, self.consensus)
        except StatePruned:
            decided = self._decide_from_log(ref, epoch, epoch_block, netuid)
        reproduced = None
        past = short = 0
        if recorded is not None:
            reproduced = (decided.winner, decided.weights, decided.window) == (
                recorded.winner, recorded.weights, recorded.window)
            past, short = self._frontier_gap(recorded)
        return Decision(reference=ref, epoch=epoch, epoch_block=epoch_block, decision=decided,
                        recorded=recorded, reproduced=reproduced, past_frontier=past, short_of_frontier=short)

    def _frontier_gap(self, recorded: EpochScored) -> tuple[int, int]:
        """(events the API holds past `recorded`'s frontier, events of it the API does not hold),
        counted by origin_seq over every origin but the API's own."""
        read = {f.origin: f.origin_seq for f in recorded.frontier}
        past = short = 0
        for origin in sorted(self.origins):
            if origin == self.own:
                continue
            held, upto = self.origins[origin].head_seq, read.pop(origin, 0)
            past += max(0, held - upto)
            short += max(0, upto - held)
        return past, short + sum(read[o] for o in sorted(read) if o != self.own)

    def _decide_from_log(self, ref: str, epoch: int, epoch_block: int, netuid: int) -> EpochScored:
        """The rare decision the pruned fold cannot make: folded afresh from the log, then dropped."""
        from projections.epoch import KINDS

        fold = EpochFold(ref)
        for row in self.log.rows(kinds=KINDS, until_seq=self.last_seq):
            if row.origin != self.own:
                fold.apply(row)
        return fold.decide(epoch, epoch_block, netuid, self.consensus)

    def verdict_rows(self, origins: Iterable[str] | None = None) -> list[tuple[int, int, str, int, str]]:
        """Every recorded verdict as (at, seq, origin, task, miner), newest first."""
        wanted = None if origins is None else set(origins)
        rows = [s for s in self.samples if wanted is None or s[2] in wanted]
        rows.sort(key=lambda s: (-s[0], -s[1]))
        return rows


def _count(info: OriginInfo, events: int, head_seq: int, last_block: int, last_at: int) -> None:
    """Add a run of `events` rows, with their highest origin_seq, block and stamp, to `info`."""
    info.events += events
    info.head_seq = max(info.head_seq, head_seq)
    info.last_block = max(info.last_block, last_block)
    info.last_at = max(info.last_at, last_at)


class _TaskOnly(msgspec.Struct):
    task_id: int = -1


class _VerdictLite(msgspec.Struct):
    """What the shared fold reads of a verdict (`projections.epoch`'s light decoder)."""

    task_id: int
    miner: str
    passed: bool


_verdict_lite = msgspec.json.Decoder(_VerdictLite)
_verdict_full = msgspec.json.Decoder(VerdictRecorded)


_task_only = msgspec.json.Decoder(_TaskOnly)


def _neg(text: str) -> tuple[int, ...]:
    # max() with a key: prefer the lowest hotkey among equal epochs.
    return tuple(-ord(c) for c in text)
