"""The epoch decision: the one function the weight setter and `leoma replay` both call.

`score_epoch(rows, ...)` folds the log and decides; `EpochFold` is the same fold kept between
epochs (`apply` each new row, `decide` when an epoch boundary comes), with a state that msgspec
can store as a checkpoint. Folding once and deciding equals `score_epoch` on the same rows.

What the decision reads, all at or before `epoch_block` (the envelope's block; anything later
cannot influence it):

* the own origin's latest `allowlist_verified` (validators and interval), `metagraph_observed`,
  `commitment_observed` and `miner_checked` -- a validator's view of the miners is its own;
* every allowlisted origin's `task_opened`, `verdict_recorded` and `judge_failed`;
* the own origin's observations of seed-layout peers (`seed_task_observed`,
  `seed_verdict_observed`), read as those peers' tasks and verdicts (`projections.seedview`).

The consensus switches of the migration profile (`consensus-seed.toml`) pick the seed's rules
for the window (`settle`, `producers`), completeness (`completeness_tolerance`) and ranking
(`arithmetic`, `unpayable_winner`).

Every "latest" is chosen by `(block, origin_seq)` or per-origin `origin_seq`, never by arrival
order, so the same events in any order give the same decision.

The fold also reads the own origin's earlier `epoch_scored` events (only their epoch and winner):
the fail-closed rule (`projections.weights.kept_epoch`) is part of the decision, so replay
reproduces a hold as well as a burn.

State bounded by the window: after a decision, `prune(epoch_block)` forgets what no later
decision can read -- every task below the window's oldest task (when the window is full) or
below the lookback floor, and every version of an own observation superseded at that block.
A later decision that could reach below what was forgotten (an allowlist change shrank the
produced tasks, an earlier epoch) raises `StatePruned`; the caller then folds from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import repeat
from typing import Any, NamedTuple

import msgspec

from leoma.log.consensus import Consensus
from leoma.errors import StatePruned as StatePruned  # re-exported: callers import it from here
from leoma.log.events import (
    VERSIONS,
    AllowlistVerified,
    EpochScored,
    FrontierEntry,
    JudgeFailed,
    MinerAggregate,
    TaskOpened,
    ValidatorRate,
    VerdictRecorded,
    WeightEntry,
    decode_body,
)
from projections import seedview
from projections.miners import MinersState, MinersView
from projections.ranking import Standing, rank_order, seed_float_rate
from projections.scores import (
    MinerScore,
    Tally,
    Verdict,
    eligibility,
    required_distinct_validators,
)
from projections.weights import FULL_WEIGHT, NO_METAGRAPH, NO_VERDICTS, NO_WINDOW, NO_ALLOWLIST, kept_epoch, payout
from projections.window import (
    TaskClaim,
    Window,
    canonical_in_ring_order,
    canonical_tasks,
    lookback_floor,
    settled_window,
)

OWN_KINDS = ("allowlist_verified", "metagraph_observed", "commitment_observed", "miner_checked", "epoch_scored")
SHARED_KINDS = ("task_opened", "verdict_recorded", "judge_failed")
KINDS: tuple[str, ...] = OWN_KINDS + SHARED_KINDS + seedview.KINDS
"""Every kind the decision reads: pass it to `EventLog.rows(kinds=KINDS)`."""


# Light decoders for the bulk kinds: the typed body has prompts, reasoning and aspects that the
# decision never reads. Only used when the row is of the current schema version.
class _VerdictLite(msgspec.Struct):
    task_id: int
    miner: str
    passed: bool


class _JudgeLite(msgspec.Struct):
    task_id: int
    miner: str


class _TaskLite(msgspec.Struct):
    task_id: int


class _DecisionLite(msgspec.Struct):
    epoch: int
    winner: str = ""


_verdict_lite = msgspec.json.Decoder(_VerdictLite)
_judge_lite = msgspec.json.Decoder(_JudgeLite)
_task_lite = msgspec.json.Decoder(_TaskLite)
_decision_lite = msgspec.json.Decoder(_DecisionLite)


class EpochState(msgspec.Struct, kw_only=True):
    """Everything `EpochFold` keeps (every version, so any past epoch can still be decided)."""

    own: str
    last_seq: int = 0
    """The local `seq` of the newest applied row: resume with `rows(after=last_seq)`."""
    allowlists: list[tuple[int, int, AllowlistVerified]] = []
    miners: MinersState | None = None
    claims: list[tuple[str, int, int, int]] = []
    """`(origin, origin_seq, block, task_id)` of every `task_opened`."""
    verdicts: dict[int, list[tuple[str, str, int, int, bool | None]]] = {}
    """task_id -> `(origin, miner, origin_seq, block, passed)`; `passed` None = judge failed."""
    seed: seedview.SeedState = msgspec.field(default_factory=seedview.SeedState)
    """The own observations of seed-layout peers (`projections.seedview`)."""
    paid: list[int] = []
    """Epochs of the own earlier decisions that paid a winner (for the fail-closed rule)."""
    floor_task: int = 0
    """Tasks below this id were forgotten by `prune` (their claims and verdicts are dropped)."""
    floor_block: int = 0
    """`prune` ran for this epoch block: no decision for an earlier block can be made."""


class _RawRow(NamedTuple):
    seq: int
    origin: str
    origin_seq: int
    key: str
    kind: str
    v: int
    block: int
    body: Any


class _Checkpoint(msgspec.Struct, kw_only=True):
    """`EpochFold.dump`'s layout: the state without its bulk, and the bulk by name index."""

    state: EpochState
    names: list[str] = []
    verdicts: dict[int, list[tuple[int, int, int, int, int]]] = {}
    claims: list[tuple[int, int, int, int]] = []


def _burn_weights(consensus: Consensus) -> tuple[WeightEntry, ...]:
    return (WeightEntry(uid=consensus.ranking.burn_uid, weight=FULL_WEIGHT),)


def _frontier(frontier: Iterable[FrontierEntry] | Mapping[str, Any]) -> tuple[FrontierEntry, ...]:
    if isinstance(frontier, Mapping):
        entries = [FrontierEntry(origin=o, origin_seq=int(h[0]), hash=str(h[1])) for o, h in frontier.items()]
    else:
        entries = list(frontier)
    return tuple(sorted(entries, key=lambda f: f.origin))


class _Column(NamedTuple):
    """One validator's window counts in miner order (`EpochFold._uniform_scores`)."""

    miners: tuple[str, ...]
    common: int
    """The common denominator `weighted` is over (0: not computed yet)."""
    rates: list[ValidatorRate]
    passed: list[int]
    evaluated: list[int]
    weighted: list[int]
    """passed * common / evaluated, per miner: the exact sum's numerators."""


class EpochFold:
    """The epoch decision's fold, applied event by event."""

    KINDS = KINDS

    def __init__(self, own: str, *, state: EpochState | None = None) -> None:
        self.state = state if state is not None else EpochState(own=own, miners=MinersState(own=own))
        if self.state.miners is None:
            self.state.miners = MinersState(own=self.state.own)
        self._miners = MinersView(self.state.own, state=self.state.miners)
        self._names: dict[str, str] = {}
        # Transient (not checkpointed): task_id -> (entries seen, newest block, resolved verdicts).
        self._resolved: dict[int, tuple[int, int, list[Verdict]]] = {}
        self._tallied: dict[int, tuple[int, str | None, int, list[tuple[str, bool]]]] = {}
        # Transient: the per-sampler counts of the last window tallied, and what each task added
        # to them (its sampler and resolved verdicts), so the next window only adds and removes
        # the tasks that differ (`window_tally`).
        self._counts: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        self._counted: dict[int, tuple[str, list[tuple[str, bool]]]] = {}
        # Transient: per sampler, its counts as columns in miner order (`_uniform_scores`), and the
        # samplers whose counts changed since their columns were made.
        self._columns: dict[str, _Column] = {}
        self._touched: set[str] = set()
        self.applied = 0
        """How many rows `apply_raw` has taken (a count for reports; not part of the state)."""
        self._decided: tuple[tuple[int, str, tuple[str, ...], int], Window] | None = None
        """The last decision's window, with its block, consensus, validators and interval (`prune`)."""
        self.admit: Callable[[str, int, int, int], bool] | None = None
        """The anchored rule's no-backdating check, `(origin, origin_seq, block, task_id) -> counts`
        (`projections.anchors.admit`); None under the current rule: every claim counts."""

    @property
    def own(self) -> str:
        return self.state.own

    def apply(self, row: Any) -> None:
        """Take one log `Row` into account (kinds the decision does not read are skipped)."""
        kind = row.kind
        s = self.state
        if row.seq > s.last_seq:
            s.last_seq = row.seq
        if kind == "verdict_recorded" or kind == "judge_failed":
            lite: _VerdictLite | _JudgeLite | VerdictRecorded | JudgeFailed
            if row.v == VERSIONS[kind]:
                lite = (_verdict_lite if kind == "verdict_recorded" else _judge_lite).decode(row.body)
            else:
                body = decode_body(row.body, row.v)
                assert isinstance(body, (VerdictRecorded, JudgeFailed))
                lite = body
            if lite.task_id < s.floor_task:
                return  # can never count again
            names = self._names
            # A million verdicts name a few hundred hotkeys: keep one string object per name.
            origin = names.setdefault(row.origin, row.origin)
            miner = names.setdefault(lite.miner, lite.miner)
            entry = (origin, miner, row.origin_seq, row.block, lite.passed if isinstance(lite, (_VerdictLite, VerdictRecorded)) else None)
            found = s.verdicts.get(lite.task_id)
            if found is None:
                s.verdicts[lite.task_id] = [entry]
            else:
                found.append(entry)
        elif kind == "task_opened":
            if row.v == VERSIONS[kind]:
                task_id = _task_lite.decode(row.body).task_id
            else:
                body = decode_body(row.body, row.v)
                assert isinstance(body, TaskOpened)
                task_id = body.task_id
            if task_id < s.floor_task:
                return
            s.claims.append((self._names.setdefault(row.origin, row.origin), row.origin_seq, row.block, task_id))
        elif kind == "epoch_scored":
            if row.origin == s.own:
                decided = _decision_lite.decode(row.body)
                if decided.winner and decided.epoch not in s.paid:
                    s.paid.append(decided.epoch)
                    s.paid.sort()
        elif kind in seedview.KINDS:
            if row.origin == s.own:  # a validator's view of a seed peer is its own
                seedview.apply(s.seed, row.origin_seq, decode_body(row.body, row.v), floor=s.floor_task)
        elif kind in OWN_KINDS and row.origin == s.own:
            body = decode_body(row.body, row.v)
            if isinstance(body, AllowlistVerified):
                s.allowlists.append((row.origin_seq, row.block, body))
            else:
                self._miners.apply_body(row.origin_seq, row.block, body)

    def apply_raw(self, rows: Iterable[tuple[int, int, int, str, int, int, Any]], names: Mapping[int, str]) -> EpochFold:
        """`apply` for `(seq, origin_id, origin_seq, kind, v, block, body)` tuples (`EventLog.raw_rows`).

        The same fold; the bulk kind (current-version verdicts) is taken inline, without a `Row`
        per event, because a cold decision reads a million of them.
        """
        s = self.state
        verdicts = s.verdicts
        floor = s.floor_task
        interned = self._names
        decode = _verdict_lite.decode
        current = VERSIONS["verdict_recorded"]
        origin_of = {oid: interned.setdefault(name, name) for oid, name in names.items()}
        last = s.last_seq
        n = 0
        for seq, oid, oseq, kind, v, block, body in rows:
            n += 1
            if seq > last:
                last = seq
            if kind == "verdict_recorded" and v == current:
                lite = decode(body)
                task_id = lite.task_id
                if task_id < floor:
                    continue
                miner = lite.miner
                entry = (origin_of[oid], interned.setdefault(miner, miner), oseq, block, lite.passed)
                found = verdicts.get(task_id)
                if found is None:
                    verdicts[task_id] = [entry]
                else:
                    found.append(entry)
            else:
                self.apply(_RawRow(seq, origin_of[oid], oseq, "", kind, v, block, body))
        s.last_seq = max(s.last_seq, last)
        self.applied += n
        return self

    def apply_many(self, rows: Iterable[Any]) -> EpochFold:
        """Apply every row of `rows`; returns self."""
        for row in rows:
            self.apply(row)
        return self

    # -- checkpoints -------------------------------------------------------------------------

    def dump(self) -> bytes:
        """The fold's state as msgpack bytes (a projection checkpoint).

        Claims and verdicts name each hotkey by its index in one table: a window of verdicts
        is a few hundred names and tens of thousands of small integer tuples.
        """
        s = self.state
        names = sorted({e[0] for es in s.verdicts.values() for e in es} | {e[1] for es in s.verdicts.values() for e in es}
                       | {c[0] for c in s.claims})
        ix = {name: i for i, name in enumerate(names)}
        code = {False: 0, True: 1, None: 2}
        verdicts = {t: [(ix[o], ix[m], seq, b, code[p]) for (o, m, seq, b, p) in entries]
                    for t, entries in s.verdicts.items()}
        claims = [(ix[o], seq, b, t) for (o, seq, b, t) in s.claims]
        rest = msgspec.structs.replace(s, verdicts={}, claims=[])
        return msgspec.msgpack.encode(_Checkpoint(state=rest, names=names, verdicts=verdicts, claims=claims))

    @classmethod
    def load(cls, data: bytes) -> EpochFold:
        """A fold restored from `dump()` bytes."""
        packed = msgspec.msgpack.decode(data, type=_Checkpoint)
        names = packed.names
        state = packed.state
        passed = (False, True, None)
        state.verdicts = {t: [(names[o], names[m], seq, b, passed[p]) for (o, m, seq, b, p) in entries]
                          for t, entries in packed.verdicts.items()}
        state.claims = [(names[o], seq, b, t) for (o, seq, b, t) in packed.claims]
        fold = cls(state.own, state=state)
        fold._names = {n: n for n in names}
        return fold

    def prune(self, epoch_block: int, consensus: Consensus, *, after_decide: bool = False) -> None:
        """Forget what no decision at `epoch_block` or later can read (see the module docstring).

        Call it after deciding at `epoch_block`: the window that decision used tells which
        tasks can still count. `after_decide` says nothing was applied since `decide` for this
        block and consensus, so its window is reused rather than computed again.
        """
        s = self.state
        allow = self.allowlist_at(epoch_block)
        if allow is None or allow.interval <= 0 or not allow.validators:
            return
        validators = tuple(sorted(set(allow.validators)))
        w = consensus.window
        held, self._decided = self._decided, None
        if after_decide and held is not None and held[0] == (epoch_block, consensus.digest, validators, allow.interval):
            window = held[1]
        else:
            window = self.window_at(epoch_block, validators, allow.interval, consensus)
        floor = lookback_floor(epoch_block, allow.interval, w.max_lookback_blocks)
        floor = -1 if floor is None else floor
        if window.tasks and len(window.tasks) >= w.tasks:
            floor = max(floor, window.tasks[0])
        if floor > s.floor_task:
            s.floor_task = floor
            # In place: the owner's API shares these two between the validators' folds.
            s.claims[:] = [c for c in s.claims if c[3] >= floor]
            for task_id in [t for t in s.verdicts if t < floor]:
                del s.verdicts[task_id]
            for task_id in [t for t in self._resolved if t < floor]:
                del self._resolved[task_id]
            for task_id in [t for t in self._tallied if t < floor]:
                del self._tallied[task_id]
            seedview.prune(s.seed, floor)
        self.prune_observations(epoch_block)
        epoch = epoch_block // max(1, consensus.epoch.length)
        older = [e for e in s.paid if e < epoch]
        s.paid = ([older[-1]] if older else []) + [e for e in s.paid if e >= epoch]

    def prune_observations(self, epoch_block: int) -> None:
        """Forget own observations (allowlists, metagraphs, commitments, checks) superseded at
        `epoch_block`; decisions for earlier blocks are refused from now on (`StatePruned`)."""
        s = self.state
        s.floor_block = max(s.floor_block, epoch_block)
        in_force = max((a for a in s.allowlists if a[1] <= epoch_block), key=lambda a: a[:2], default=None)
        s.allowlists = [a for a in s.allowlists if a[1] > epoch_block or a is in_force]
        self._miners.prune(epoch_block)

    # -- the decision ------------------------------------------------------------------------

    def allowlist_at(self, epoch_block: int) -> AllowlistVerified | None:
        """The own latest verified allowlist at or before `epoch_block`."""
        best = None
        for item in self.state.allowlists:
            if item[1] <= epoch_block and (best is None or item[:2] > best[:2]):
                best = item
        return best[2] if best is not None else None

    def claims_at(self, epoch_block: int) -> list[TaskClaim]:
        """Every `task_opened` claim recorded at or before `epoch_block`."""
        admit = self.admit
        return [TaskClaim(o, t, b) for (o, seq, b, t) in self.state.claims
                if b <= epoch_block and (admit is None or admit(o, seq, b, t))]

    def refused_claims(self, epoch_block: int) -> list[tuple[str, int, int, int]]:
        """`(origin, origin_seq, block, task_id)` of the claims at or before `epoch_block` that the
        anchored rule refuses (none under the current rule), by task then origin."""
        admit = self.admit
        if admit is None:
            return []
        return sorted(((o, seq, b, t) for (o, seq, b, t) in self.state.claims
                       if b <= epoch_block and not admit(o, seq, b, t)), key=lambda c: (c[3], c[0], c[1]))

    def window_at(self, epoch_block: int, validators: Sequence[str], interval: int, consensus: Consensus) -> Window:
        """The settled window at `epoch_block`, under the consensus's window rules.

        Seed-layout peers' observed tasks are claims like any (`projections.seedview`). The
        migration switches: `settle="produced"` counts only tasks with a verdict file (a seed
        file observed, or a verdict by the claimer) and drops the newest produced ones;
        `producers="ring-order"` takes the first producer in failover order.
        """
        w = consensus.window
        grace = consensus.grace_blocks(interval)
        claims = self.claims_at(epoch_block) + seedview.claims(self.state.seed, epoch_block, validators, interval, grace)
        if w.settle == "produced":
            claims = self._produced(claims, epoch_block)
        if w.producers == "ring-order":
            canonical = canonical_in_ring_order(claims, validators)
        else:
            canonical = canonical_tasks(claims, validators, interval, grace)
        return settled_window(canonical, epoch_block, interval, w.tasks, w.settle_margin, w.max_lookback_blocks,
                              settle=w.settle)

    def _produced(self, claims: list[TaskClaim], epoch_block: int) -> list[TaskClaim]:
        """The claims with a verdict file: a seed file observed, or a verdict by the claimer by `epoch_block`."""
        seed = seedview.latest_files(self.state.seed)
        return [c for c in claims if (c.origin, c.task_id) in seed or any(
            e[0] == c.origin and e[3] <= epoch_block and e[4] is not None for e in self.state.verdicts.get(c.task_id, ()))]

    def window_verdicts(self, window: Iterable[int], epoch_block: int) -> list[Verdict]:
        """Each origin's latest word on each `(task, miner)` of the window (judge failures dropped)."""
        out: list[Verdict] = []
        for task_id in sorted(window):
            entries = self.state.verdicts.get(task_id, ())
            cached = self._resolved.get(task_id)
            # A task whose entries did not change and are all at or before the block resolves
            # the same way for any later epoch: the warm path reuses it.
            if cached is not None and cached[0] == len(entries) and cached[1] <= epoch_block:
                out.extend(cached[2])
                continue
            latest: dict[tuple[str, str], tuple[int, bool | None]] = {}
            newest = -1
            for origin, miner, seq, block, passed in entries:
                if block > epoch_block:
                    continue
                newest = max(newest, block)
                held = latest.get((origin, miner))
                if held is None or seq > held[0]:
                    latest[(origin, miner)] = (seq, passed)
            # tally counts one verdict per (task, miner) and origin, so no order is needed here.
            resolved = [Verdict(origin, task_id, miner, passed)
                        for (origin, miner), (_seq, passed) in latest.items() if passed is not None]
            if all(e[3] <= epoch_block for e in entries):
                self._resolved[task_id] = (len(entries), newest, resolved)
            out.extend(resolved)
        return out

    def window_tally(self, window: Sequence[int], samplers: Mapping[int, str], epoch_block: int) -> Tally:
        """`tally(window_verdicts(...))` in one pass, without the report of ignored verdicts.

        Per window task only its canonical sampler's entries count; of those, the latest
        (`origin_seq`) word on each miner at or before the block, a judge failure dropping it.
        A task's resolution is cached while its entries and sampler do not change.
        """
        existing: list[int] = []
        contributions: dict[int, tuple[str, list[tuple[str, bool]]]] = {}
        seeded = seedview.resolved(self.state.seed, window, samplers)
        for task_id in sorted(window):
            sampler = samplers.get(task_id)
            entries = self.state.verdicts.get(task_id, ())
            cached = self._tallied.get(task_id)
            if task_id in seeded:  # a seed-layout peer's task: the verdicts of its latest file
                resolved = seeded[task_id]
            elif cached is not None and cached[0] == len(entries) and cached[1] == sampler and cached[2] <= epoch_block:
                resolved = cached[3]
            else:
                latest: dict[str, tuple[int, bool | None]] = {}
                newest = -1
                later = False
                for origin, miner, seq, block, passed in entries:
                    if block > epoch_block:
                        later = True
                        continue
                    if origin != sampler:
                        continue
                    if block > newest:
                        newest = block
                    held = latest.get(miner)
                    if held is None or seq > held[0]:
                        latest[miner] = (seq, passed)
                resolved = [(miner, p) for miner, (_seq, p) in latest.items() if p is not None]
                if not later:
                    self._tallied[task_id] = (len(entries), sampler, newest, resolved)
            if not resolved or sampler is None:
                continue
            existing.append(task_id)
            contributions[task_id] = (sampler, resolved)
        per_sampler = self._recount(contributions)
        columns = self._columns
        for validator in self._touched:
            columns.pop(validator, None)
        self._touched.clear()
        validators = [v for v in sorted(per_sampler) if per_sampler[v][0]]
        if validators:
            first = per_sampler[validators[0]][0].keys()
            if all(per_sampler[v][0].keys() == first for v in validators):
                return Tally(scores=self._uniform_scores(per_sampler, validators, len(existing)),
                             existing_tasks=tuple(existing))
        # Per miner, its rates in validator order, and `score_of` of them computed inline: a
        # decision at real size scores hundreds of miners over tens of validators. A validator's
        # equal counts share one (frozen) `ValidatorRate`; the exact sum of passed/evaluated is
        # taken per distinct `evaluated` (the same rational as summing rate by rate).
        by_miner: dict[str, list[ValidatorRate]] = {}
        for validator in sorted(per_sampler):
            evaluated, passed_ = per_sampler[validator]
            if not evaluated:
                continue
            passed_of = passed_.get
            made: dict[tuple[int, int], ValidatorRate] = {}
            for miner, n in evaluated.items():
                p = passed_of(miner, 0)
                rate = made.get((p, n))
                if rate is None:
                    rate = made[(p, n)] = ValidatorRate(validator=validator, passed=p, evaluated=n)
                found = by_miner.get(miner)
                if found is None:
                    by_miner[miner] = [rate]
                else:
                    found.append(rate)
        scores: dict[str, MinerScore] = {}
        existing_n = len(existing)
        for miner in sorted(by_miner):
            rates = by_miner[miner]
            by_den: dict[int, int] = {}
            passed_sum = evaluated_sum = counted_n = 0
            for r in rates:
                p, e = r.passed, r.evaluated
                passed_sum += p
                evaluated_sum += e
                if e > 0:
                    by_den[e] = by_den.get(e, 0) + p
                    counted_n += 1
            num, den = 0, 1
            for e in sorted(by_den):
                num, den = num * e + by_den[e] * den, den * e
            scores[miner] = MinerScore(
                hotkey=miner, rates=tuple(rates), passed=passed_sum, evaluated=evaluated_sum, tasks=evaluated_sum,
                avg_rate=Fraction(num, den * counted_n) if counted_n else Fraction(0),
                completeness=Fraction(evaluated_sum, existing_n) if existing_n else Fraction(0),
            )
        return Tally(scores=scores, existing_tasks=tuple(existing))

    def _uniform_scores(self, per_sampler: Mapping[str, tuple[dict[str, int], dict[str, int]]],
                        validators: list[str], existing_n: int) -> dict[str, MinerScore]:
        """`window_tally`'s scores when every validator evaluated the same miners (the usual
        window): each validator's counts as columns in miner order, kept while its counts do not
        change (`_touched`), then transposed per miner. The exact sum of passed/evaluated is taken
        over one common denominator, the lcm of every `evaluated` (the same rational)."""
        miners = tuple(sorted(per_sampler[validators[0]][0]))
        common = math.lcm(*{n for v in validators for n in per_sampler[v][0].values()})
        columns = self._columns
        cols = []
        for validator in validators:
            held = columns.get(validator)
            if held is None or held.miners != miners:
                evaluated, passed_ = per_sampler[validator]
                ps = list(map(passed_.get, miners, repeat(0)))
                counts = set(evaluated.values())
                if len(counts) == 1:  # the usual column: this validator evaluated each miner as often
                    n = counts.pop()
                    by_p = {p: ValidatorRate(validator=validator, passed=p, evaluated=n) for p in set(ps)}
                    held = _Column(miners, 0, list(map(by_p.__getitem__, ps)), ps, [n] * len(ps), [])
                else:
                    pns = list(zip(ps, map(evaluated.__getitem__, miners)))
                    made = {pn: ValidatorRate(validator=validator, passed=pn[0], evaluated=pn[1]) for pn in set(pns)}
                    held = _Column(miners, 0, list(map(made.__getitem__, pns)), ps, [pn[1] for pn in pns], [])
            if held.common != common:  # passed * common / evaluated, for the exact sum
                ns = held.evaluated
                if ns and min(ns) == max(ns):
                    weighted = list(map((common // ns[0]).__mul__, held.passed))
                else:
                    weighted = [p * (common // n) for p, n in zip(held.passed, ns)]
                held = held._replace(common=common, weighted=weighted)
            columns[validator] = held
            cols.append(held)
        rates_of = list(zip(*[c.rates for c in cols]))
        passed_of_miner = list(map(sum, zip(*[c.passed for c in cols])))
        evaluated_of_miner = list(map(sum, zip(*[c.evaluated for c in cols])))
        weighted_of_miner = list(map(sum, zip(*[c.weighted for c in cols])))
        denominator = common * len(cols)
        scores: dict[str, MinerScore] = {}
        for i, miner in enumerate(miners):
            evaluated_sum = evaluated_of_miner[i]
            scores[miner] = MinerScore(
                hotkey=miner, rates=rates_of[i], passed=passed_of_miner[i], evaluated=evaluated_sum,
                tasks=evaluated_sum, avg_rate=Fraction(weighted_of_miner[i], denominator),
                completeness=Fraction(evaluated_sum, existing_n) if existing_n else Fraction(0),
            )
        return scores

    def _recount(self, contributions: dict[int, tuple[str, list[tuple[str, bool]]]]
                 ) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
        """Per sampler, each miner's evaluated and passed counts over `contributions` (task ->
        (sampler, resolved verdicts)): the last window's counts, minus the tasks that left or
        changed, plus the tasks that came or changed. Equal to counting afresh; a window that
        slides by a few tasks costs those tasks."""
        counts, counted, touched = self._counts, self._counted, self._touched

        def add(sampler: str, resolved: list[tuple[str, bool]], step: int) -> None:
            acc = counts.get(sampler)
            if acc is None:
                acc = counts[sampler] = ({}, {})
            touched.add(sampler)
            evaluated, passed_ = acc
            for miner, p in resolved:
                n = evaluated.get(miner, 0) + step
                if n:
                    evaluated[miner] = n
                else:
                    del evaluated[miner]
                if p:
                    n = passed_.get(miner, 0) + step
                    if n:
                        passed_[miner] = n
                    else:
                        del passed_[miner]

        for task_id in [t for t in counted if t not in contributions]:
            sampler, resolved = counted.pop(task_id)
            add(sampler, resolved, -1)
        for task_id, (sampler, resolved) in contributions.items():
            held = counted.get(task_id)
            if held is not None:
                if held[0] == sampler and held[1] is resolved:
                    continue
                add(held[0], held[1], -1)
            add(sampler, resolved, 1)
            counted[task_id] = (sampler, resolved)
        for sampler in [v for v, (evaluated, _) in counts.items() if not evaluated]:
            del counts[sampler]
        return counts

    def decide(
        self,
        epoch: int,
        epoch_block: int,
        netuid: int,
        consensus: Consensus,
        frontier: Iterable[FrontierEntry] | Mapping[str, Any] = (),
    ) -> EpochScored:
        """The decision for `epoch` from every applied event recorded at or before `epoch_block`."""
        if epoch_block < self.state.floor_block:
            raise StatePruned(f"this fold was pruned at block {self.state.floor_block}: it cannot decide "
                              f"block {epoch_block}")
        base: dict[str, Any] = dict(
            epoch=epoch, netuid=netuid, consensus_digest=consensus.digest, frontier=_frontier(frontier),
        )
        burn_uid = consensus.ranking.burn_uid

        def burned(reason: str, **more: Any) -> EpochScored:
            keeps = kept_epoch(epoch, reason, self.state.paid, consensus.epoch.burn_after_epochs_without_data)
            return EpochScored(**base, **more, winner_uid=burn_uid, weights=_burn_weights(consensus),
                               burn_reason=reason, keeps_epoch=keeps)

        allow = self.allowlist_at(epoch_block)
        if allow is None or allow.interval <= 0 or not allow.validators:
            return burned(NO_ALLOWLIST)
        validators = tuple(sorted(set(allow.validators)))
        interval = allow.interval
        base.update(validators=validators, interval=interval)
        w = consensus.window
        window = self.window_at(epoch_block, validators, interval, consensus)
        self._decided = ((epoch_block, consensus.digest, validators, interval), window)
        if self.state.floor_task > 0 and len(window.tasks) < w.tasks:
            floor = lookback_floor(epoch_block, interval, w.max_lookback_blocks)
            if floor is None or floor < self.state.floor_task:
                raise StatePruned(f"the window of block {epoch_block} could reach below task "
                                  f"{self.state.floor_task}, which this fold forgot")
        if not window.tasks:
            return burned(NO_WINDOW)
        base.update(window=window.tasks, active=window.active)
        counted = self.window_tally(window.tasks, window.samplers, epoch_block)
        if counted.verdicts == 0:
            return burned(NO_VERDICTS)
        miners = self._miners.snapshot(epoch_block, netuid=netuid)
        if not miners.has_metagraph:
            return burned(NO_METAGRAPH)

        min_distinct = required_distinct_validators(len(window.active), consensus.min_distinct_ratio)
        # Migration profile: rank every miner with verdicts (the seed's rule); payout burns an unpayable winner.
        rank_invalid = consensus.ranking.unpayable_winner == "burn"
        arithmetic = consensus.ranking.arithmetic
        rows: dict[str, tuple[MinerScore | None, bool, str]] = {}
        standings: list[Standing] = []
        # Parsed once per decision, not per miner (each read of the property parses its text).
        completeness, tolerance = consensus.completeness, consensus.completeness_tolerance
        # `MinersSnapshot.is_valid` and `reason`, over a set (`valid` is a sorted tuple): a
        # decision asks them several times for each of hundreds of miners.
        valid_set = frozenset(miners.valid)
        reasons_of = miners.reasons

        def is_valid(hotkey: str) -> bool:
            return hotkey in valid_set

        def reason_of(hotkey: str) -> str:
            return "" if hotkey in valid_set else reasons_of.get(hotkey, "not_checked")

        for hotkey in sorted(set(counted.scores) | set(miners.checked)):
            score = counted.scores.get(hotkey)
            if score is None:
                why = "no verdicts in the window" if is_valid(hotkey) else f"invalid: {reason_of(hotkey)}"
                rows[hotkey] = (None, False, why)
                continue
            ok, reason = eligibility(
                score, valid=rank_invalid or is_valid(hotkey), invalid_reason=reason_of(hotkey),
                completeness_threshold=completeness, min_distinct=min_distinct,
                completeness_tolerance=tolerance,
            )
            if ok and not is_valid(hotkey):
                reason = f"invalid: {reason_of(hotkey)} (ranked, as the seed ranks; never paid)"
            rows[hotkey] = (score, ok, reason)
            if ok:
                float_rate = seed_float_rate([(r.passed, r.evaluated) for r in score.rates]) if arithmetic == "float" else None
                standings.append(Standing(hotkey=hotkey, rate=score.avg_rate, passed=score.passed,
                                          commit_block=miners.commit_block.get(hotkey), float_rate=float_rate))
        order = rank_order(standings, consensus.dominance_threshold, arithmetic)
        rank = {hotkey: i + 1 for i, hotkey in enumerate(order)}
        paid = payout(order[:1] if rank_invalid else order, miners.uid_by_hotkey,
                      lambda h: "" if is_valid(h) else f"invalid: {reason_of(h)}", burn_uid=burn_uid)

        aggregates = []
        for hotkey in sorted(rows, key=lambda h: (rank.get(h, len(rank) + 1), h)):
            score, ok, reason = rows[hotkey]
            common: dict[str, Any] = dict(hotkey=hotkey, uid=miners.uid_by_hotkey.get(hotkey, -1),
                          commit_block=miners.commit_block.get(hotkey, -1), eligible=ok, reason=reason,
                          rank=rank.get(hotkey, 0))
            if score is None:
                aggregates.append(MinerAggregate(**common))
            else:
                aggregates.append(MinerAggregate(
                    **common, rates=score.rates, passed=score.passed, evaluated=score.evaluated,
                    tasks=score.tasks, avg_rate=str(score.avg_rate), completeness=str(score.completeness),
                ))
        base["aggregates"] = tuple(aggregates)
        if not paid.winner:
            return burned(paid.burn_reason)
        return EpochScored(**base, winner=paid.winner, winner_uid=paid.winner_uid, weights=paid.weights)


def score_epoch(
    rows: Iterable[Any],
    *,
    own: str,
    epoch: int,
    epoch_block: int,
    netuid: int,
    consensus: Consensus,
    frontier: Iterable[FrontierEntry] | Mapping[str, Any] = (),
) -> EpochScored:
    """Fold `rows` (log `Row`s of any origins, in any order) and decide epoch `epoch`.

    `frontier` is what the caller read (each origin's last `origin_seq` and hash); rows carry
    no hash, so it is passed in and recorded as given, sorted by origin.
    """
    return EpochFold(own).apply_many(rows).decide(epoch, epoch_block, netuid, consensus, frontier)
