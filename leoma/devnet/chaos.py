"""The adversarial devnet: validators under bad timing and bad actors, decisions fixed by anchors.

`run_chaos(directory, epochs=12, seed=7)` runs a subnet of four validators on the simulated
chain (manual clock, short epochs), each with its own event log, its own bucket (a local
directory, the real mirror: `MirrorOut` / `MirrorIn`), the real anchor step and the real weight
setter under the anchored rule (`[anchors] enabled`). Tasks and verdicts are appended by each
rotation's sampler on its turn (the decision is what is under test here, not the judge).

Faults, all drawn from `seed` (so a run is reproducible):

* every validator pulls each peer after a random delay of 0-2 mirror intervals;
* one validator's bucket is unreadable for a whole epoch;
* one validator is restarted in the middle of an epoch (its log closed and reopened, its
  mirror objects rebuilt);
* one validator skips a task it was entitled to, then publishes a backdated `task_opened`
  for it after the cutoff of a later epoch (anchored late);
* one validator anchors, for one epoch, a head its bucket does not serve.

`EpochReport` says per epoch who decided (with the digest of the decision's bytes) and who held
(with the recorded reason), and whether the backdated task counted anywhere. The rule checked
(`ChaosReport.problems`): every validator that decided an epoch holds byte-identical decisions,
every other one recorded why it held, and the backdated task counts for no one.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from leoma.adapters.chain import Chain
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.errors import StorageError
from leoma.log import decisions
from leoma.log.consensus import DEFAULT, Consensus, record_consensus, replace_leaf
from leoma.log.eventlog import EventLog
from leoma.log.events import (
    AllowlistVerified,
    EpochHeld,
    MetagraphObserved,
    MinerChecked,
    TaskOpened,
    VerdictRecorded,
    decode_body,
    encode_body,
)
from leoma.mirror import anchors
from leoma.mirror.inbound import MirrorIn, Peer
from leoma.mirror.out import MirrorOut
from leoma.services import weight_setter

__all__ = ["ChaosReport", "EpochReport", "run_chaos", "chaos_consensus"]

NETUID = 7
LENGTH = 30
INTERVAL = 5
MIRROR_INTERVAL = 2
"""Blocks between two pulls of a peer when the pull is not delayed."""
STEP = 2
"""Blocks between two rounds of every validator."""


def chaos_consensus() -> Consensus:
    """Short epochs, the anchored rule on."""
    c = DEFAULT
    for leaf, value in (("epoch.length", LENGTH), ("anchors.enabled", True), ("anchors.cutoff_margin", 6),
                        ("window.tasks", 12), ("epoch.burn_after_epochs_without_data", 2)):
        c = replace_leaf(c, leaf, value)
    return c


class _Flaky:
    """A bucket that can be made unreadable (reads raise `StorageError`); writes go through."""

    def __init__(self, store: DirectoryStore) -> None:
        self.store = store
        self.down = False

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        if self.down:
            raise StorageError(f"{key}: the bucket is unreachable")
        return await self.store.get(key, max_bytes=max_bytes)

    async def head(self, key: str) -> Any:
        if self.down:
            raise StorageError(f"{key}: the bucket is unreachable")
        return await self.store.head(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@dataclass
class EpochReport:
    epoch: int
    decided: dict[str, str] = field(default_factory=dict)
    """validator -> sha256 of its decision's canonical bytes."""
    held: dict[str, str] = field(default_factory=dict)
    """validator -> the reasons it recorded for holding."""
    winner: str = ""
    window: tuple[int, ...] = ()
    late: tuple[int, ...] = ()
    faults: list[str] = field(default_factory=list)


@dataclass
class ChaosReport:
    validators: list[str]
    epochs: list[EpochReport]
    backdated_task: int
    problems: list[str]
    buckets: dict[str, str] = field(default_factory=dict)
    """validator -> its bucket's URL (`file://`), for `leoma replay --from-bucket`."""
    chain: str = ""
    """The simulated chain, as `--network` takes it."""

    @property
    def ok(self) -> bool:
        return not self.problems


class _Validator:
    def __init__(self, root: Path, uri: str) -> None:
        self.wallet = keypair_from_uri(uri)
        self.hk = self.wallet.ss58_address
        self.dir = root / self.hk[:10]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = DirectoryStore(self.dir / "bucket")
        self.flaky = _Flaky(self.store)
        self.open()

    def open(self) -> None:
        self.log = EventLog(self.dir / "events.db", own=self.hk)

    def close(self) -> None:
        self.log.close()


async def run_chaos(directory: str | Path, *, epochs: int = 12, seed: int = 7,
                    on_epoch: Any = None) -> ChaosReport:
    """Run the adversarial devnet for `epochs` epochs in `directory`; see the module docstring."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    consensus = chaos_consensus()
    owner = keypair_from_uri("//ChaosOwner").ss58_address
    start = 30 * LENGTH
    sim = SimChain.create(root / "chain.jsonl", owner=owner, clock="manual", start_block=start, netuid=NETUID,
                          tempo=LENGTH - 1, weights_rate_limit=1)
    sim.register(owner)
    vals = sorted((_Validator(root, f"//Chaos{i}") for i in range(4)), key=lambda v: v.hk)
    for v in vals:
        sim.register(v.hk, stake=10**12, validator_permit=True)
    miners = [keypair_from_uri(f"//ChaosMiner{i}").ss58_address for i in range(3)]
    uids = {m: sim.register(m) for m in miners}
    hotkeys = [owner, *(v.hk for v in vals), *miners]
    ring = [v.hk for v in vals]
    first = start // LENGTH + 1
    last = first + epochs
    # the faults: who, and when
    slow_bucket, restarted, backdater, liar = vals[1], vals[2], vals[3], vals[0]
    down_epoch, restart_epoch, backdate_epoch, lie_epoch = first + 3, first + 5, first + 4, first + 7
    # a task early in the epoch before `backdate_epoch`, claimed after that epoch's cutoff: still
    # within reach of the next window, but first anchored long after its slot plus the grace
    backdated = next(t for t in range(((backdate_epoch - 1) * LENGTH) // INTERVAL + 1, 10**6)
                     if ring[t % len(ring)] == backdater.hk)
    pass_rate = {miners[0]: 90, miners[1]: 60, miners[2]: 30}
    for v in vals:
        record_consensus(v.log, consensus, block=start)
        v.log.append(AllowlistVerified(owner_hotkey=owner, digest="c" * 64, interval=INTERVAL,
                                       validators=tuple(ring)), key="allowlist/1", block=start + 1)
        v.log.append(MetagraphObserved(netuid=NETUID, owner_hotkey=owner, hotkeys=tuple(hotkeys)),
                     key="metagraph/1", block=start + 1)
        for i, m in enumerate(miners):
            v.log.append(MinerChecked(hotkey=m, uid=uids[m], commit_block=start - 100 + i, valid=True,
                                      model_hash=f"hash-{i}"), key=f"miner/{m}/1", block=start + 1)

    outs: dict[str, MirrorOut] = {}
    ins: dict[str, MirrorIn] = {}

    def wire(v: _Validator) -> None:
        outs[v.hk] = MirrorOut(v.log, v.store, v.wallet, consensus.digest, segment_size=64)
        ins[v.hk] = MirrorIn(v.log, [Peer(p.hk, p.flaky) for p in vals if p is not v], consensus.digest,
                             consensus=consensus)

    for v in vals:
        wire(v)
    next_pull = {(v.hk, p.hk): 0 for v in vals for p in vals if p is not v}
    produced_upto = start // INTERVAL
    reports: dict[int, EpochReport] = {e: EpochReport(epoch=e) for e in range(first, last)}
    reports[down_epoch].faults.append(f"{slow_bucket.hk[:10]}'s bucket unreadable")
    reports[restart_epoch].faults.append(f"{restarted.hk[:10]} restarted mid-epoch")
    reports[backdate_epoch].faults.append(f"{backdater.hk[:10]} publishes task {backdated} backdated")
    reports[lie_epoch].faults.append(f"{liar.hk[:10]} anchors a head its bucket does not serve")
    restarted_done = backdate_done = False

    async with Chain(f"sim:{sim.path}") as chain:
        block = sim.head()
        while block < last * LENGTH + LENGTH // 2:
            block = sim.advance_to(block + STEP)
            epoch_now = block // LENGTH
            # unreadable from just before the epoch's cutoff to its end: its peers cannot read
            # what it anchors for that epoch
            slow_bucket.flaky.down = consensus.anchor_cutoff(down_epoch) - STEP <= block < (down_epoch + 1) * LENGTH
            # each rotation's sampler opens its tasks on its turn, with its verdicts
            top = block // INTERVAL
            for t in range(produced_upto + 1, top + 1):
                sampler = next(v for v in vals if v.hk == ring[t % len(ring)])
                if t == backdated:
                    continue  # skipped now, claimed later
                _produce(sampler, t, miners, pass_rate, rng)
            produced_upto = max(produced_upto, top)
            if not backdate_done and block >= consensus.anchor_cutoff(backdate_epoch) + 1:
                _produce(backdater, backdated, miners, {m: 100 for m in miners}, rng)
                backdate_done = True
            if not restarted_done and block >= restart_epoch * LENGTH + LENGTH // 2:
                restarted.close()
                restarted.open()
                wire(restarted)
                restarted_done = True
            for v in vals:
                await outs[v.hk].push()
                for p in vals:
                    if p is v or block < next_pull[(v.hk, p.hk)]:
                        continue
                    await ins[v.hk].sync(only=p.hk, block=block)
                    next_pull[(v.hk, p.hk)] = block + MIRROR_INTERVAL * (1 + rng.randint(0, 2))
                published = None
                if v is liar and anchors.anchor_epoch(block, consensus) == lie_epoch:
                    size = v.log.head(v.hk).origin_seq
                    published = (size, hashlib.sha256(f"not served {size}".encode()).hexdigest())
                await anchors.anchor_step(v.log, chain, v.wallet, NETUID, consensus, published=published)
                await weight_setter.step(log_=v.log, chain=chain, wallet=v.wallet, netuid=NETUID, consensus=consensus)
            if on_epoch is not None and block % LENGTH < STEP and epoch_now - 1 in reports:
                on_epoch(_collect(reports[epoch_now - 1], vals, backdated))
            block = sim.head()

    problems: list[str] = []
    for e in range(first, last):
        r = _collect(reports[e], vals, backdated)
        if len(set(r.decided.values())) > 1:
            problems.append(f"epoch {e}: decisions differ: {r.decided}")
        for v in vals:
            if v.hk not in r.decided and v.hk not in r.held:
                problems.append(f"epoch {e}: {v.hk[:10]} neither decided nor recorded a hold")
        if backdated in r.window:
            problems.append(f"epoch {e}: the backdated task {backdated} counted")
    for v in vals:
        v.close()
    return ChaosReport(validators=ring, epochs=[reports[e] for e in range(first, last)], backdated_task=backdated,
                       problems=problems, buckets={v.hk: (v.dir / "bucket").as_uri() for v in vals},
                       chain=f"sim:{sim.path}")


def _produce(v: _Validator, task: int, miners: list[str], pass_rate: dict[str, int], rng: random.Random) -> None:
    block = task * INTERVAL + 1
    v.log.append(TaskOpened(task_id=task, interval=INTERVAL, sampler=v.hk, block_hash="0x" + "cd" * 32,
                            source_key="clips/chaos.mp4", clip_start_ms=0, clip_ms=5000, prompt="a prompt",
                            prompt_model="stand-in", prompt_version="describe/v1", miners=tuple(miners)),
                 key=f"task/{task}", block=block)
    for m in miners:
        passed = rng.randrange(100) < pass_rate[m]
        v.log.append(VerdictRecorded(task_id=task, miner=m, passed=passed, overall=80 if passed else 40,
                                     judge_model="stand-in", prompt_version="evaluate/v1"),
                     key=f"verdict/{task}/{m}", block=block + 1)


def _collect(r: EpochReport, vals: list[_Validator], backdated: int) -> EpochReport:
    r.decided, r.held = {}, {}
    for v in vals:
        found = decisions.find(v.log, r.epoch, origin=v.hk)
        if found is not None:
            r.decided[v.hk] = hashlib.sha256(encode_body(found.body)).hexdigest()
            r.winner, r.window = found.body.winner, found.body.window
            r.late = tuple(t.task_id for t in found.body.late_tasks)
            continue
        reasons = []
        for row in v.log.rows(kinds=["epoch_held"], origin=v.hk):
            body = decode_body(row.body, row.v)
            if isinstance(body, EpochHeld) and body.epoch == r.epoch:
                reasons.append(f"{body.reason} {body.peer[:10]}".strip())
        if reasons:
            r.held[v.hk] = "; ".join(sorted(set(reasons)))
    return r


def report_json(report: ChaosReport) -> Any:
    """The report as plain data."""
    return msgspec.to_builtins({"ok": report.ok, "validators": report.validators, "chain": report.chain,
                                "buckets": report.buckets,
                                "backdated_task": report.backdated_task, "problems": report.problems,
                                "epochs": [vars(e) for e in report.epochs]})


def main(directory: str, epochs: int = 12, seed: int = 7) -> ChaosReport:
    """Run and return the report (for `leoma devnet --chaos`)."""
    return asyncio.run(run_chaos(directory, epochs=epochs, seed=seed))
