"""Benchmark: a simulated network for a simulated year, with the cost of each step as a curve.

    python tests/benchmarks/bench_network.py                      # 16 and 64 validators, 256 miners
    python tests/benchmarks/bench_network.py --validators 16 --epochs-per-month 1   # quick

Every validator has its own event log and a directory bucket. A task every rotation (interval
10 blocks): its rightful sampler appends `task_opened` and one verdict per miner to its own log
(the real `EventLog.append_many`) and publishes with the real `MirrorOut`. One validator, the
observer, imports every peer with the real `MirrorIn`, records its own allowlist, metagraph and
miner checks, and takes each epoch's decision with the real weight setter (`weight_setter.step`
on the simulated chain: decide from the checkpoint, append the decision, set and confirm).

The simulated year is compressed: 12 months of `--epochs-per-month` epochs of 180 blocks (18
tasks each), so the event rate is 257 events per task x 18 tasks per epoch (printed at start).
Before month 1 comes a warm-up of the consensus's lookback (`max_lookback_blocks` = 30,000
blocks: 168 epochs, ~780k events): the history a validator holds after its first four days. A
real month is ~1,200 epochs, so a real month 1 is far past that floor, and the fold's state is
bounded by it; a year compressed to 36 epochs without the warm-up would measure only the ramp
up to the floor (`--warmup-epochs 0` shows that ramp).
At the end of every month it prints, for the observer, the median over the month's epochs of:
the mirror sync that brought the epoch, an idle sync (nothing new: one checkpoint request per
peer, checked; the median of five), the weight-setter step, the owner API's incremental refresh
after it (one `ApiState` kept across the year) and `get-rank`; then `replay` of the newest
epoch, and the plainest baseline on the same log at that moment (`SELECT body` + msgspec decode). A steady loop's costs should stay
flat (within 1.5x) from month 1 to month 12.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

INTERVAL = 10
LENGTH = 180
NETUID = 1


def _hotkey(kind: str, i: int) -> str:
    return "5" + hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:47]


def plain_decode(path: str, newest: int | None = None) -> float:
    """`SELECT body` + msgspec decode of every event (or of the first `newest` rows only: the
    same rows, the same work, at every month)."""
    import msgspec

    from leoma.log.events import Payload

    decoder = msgspec.json.Decoder(Payload)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql, args = "SELECT body FROM events", ()
    if newest is not None:
        sql, args = "SELECT body FROM events WHERE seq <= ?", (newest,)
    t = time.perf_counter()
    for (body,) in conn.execute(sql, args):
        decoder.decode(body)
    conn.close()
    return time.perf_counter() - t


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def simulate(n_validators: int, miners_n: int, epochs_per_month: int, root: Path, warmup_epochs: int) -> None:
    from click.testing import CliRunner

    from leoma.adapters.chain import Chain
    from leoma.adapters.directory import DirectoryStore
    from leoma.adapters.signing import keypair_from_uri
    from leoma.adapters.simchain import SimChain
    from leoma.api.state import ApiState
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import Draft, EventLog
    from leoma.log.events import (
        AllowlistVerified,
        MetagraphObserved,
        MinerChecked,
        TaskOpened,
        VerdictRecorded,
    )
    from leoma.mirror.inbound import MirrorIn, Peer
    from leoma.mirror.out import MirrorOut
    from leoma.services import weight_setter
    from leoma_cmd.main import cli

    keys = sorted((keypair_from_uri(f"//Bench{i}") for i in range(n_validators)), key=lambda k: k.ss58_address)
    ring = [k.ss58_address for k in keys]
    observer = keys[0]
    miners = [_hotkey("m", i) for i in range(miners_n)]
    owner = _hotkey("o", 0)
    logs = {k.ss58_address: EventLog(root / f"{i}.db", own=k.ss58_address) for i, k in enumerate(keys)}
    stores = {k.ss58_address: DirectoryStore(root / f"bucket-{i}") for i, k in enumerate(keys)}
    outs = {k.ss58_address: MirrorOut(logs[k.ss58_address], stores[k.ss58_address], k, DEFAULT.digest) for k in keys}
    me = observer.ss58_address
    mine = logs[me]
    mirror_in = MirrorIn(mine, [Peer(h, stores[h]) for h in ring if h != me], DEFAULT.digest, consensus=DEFAULT,
                         max_segments_per_sync=100_000)
    sim = SimChain.create(root / "chain.jsonl", owner=owner, clock="manual", start_block=1, netuid=NETUID,
                          weights_rate_limit=1)
    sim.register(owner)
    sim.register(me, stake=10**12, validator_permit=True)
    uids = {m: sim.register(m) for m in miners}
    api_log = EventLog(root / "api.db", own=_hotkey("api", 0))
    api = ApiState(api_log, own=api_log.own or "", consensus=DEFAULT)
    api_mirror = MirrorIn(api_log, [Peer(h, stores[h]) for h in ring], DEFAULT.digest, consensus=DEFAULT,
                          max_segments_per_sync=100_000, allowlist_origins=lambda: (me,))
    aspects = {"first_frame_fidelity": 80, "prompt_adherence": 77, "motion_quality": 70}
    tasks_per_epoch = LENGTH // INTERVAL
    print(f"\n{n_validators} validators, {miners_n} miners: {epochs_per_month} epochs/month, {tasks_per_epoch} "
          f"tasks/epoch, {(miners_n + 1) * tasks_per_epoch * epochs_per_month:,} task events/month")
    print(f"{'month':>5} {'events':>9} {'load':>5} {'plain s':>8} {'unit s':>7} {'sync s':>7} {'idle s':>7} "
          f"{'step s':>7} {'rank s':>7} {'api s':>7} {'replay s':>8} {'step/plain':>10} {'replay/plain':>12}")
    unit_rows = (miners_n + 1) * tasks_per_epoch
    curve: list[dict[str, float]] = []
    mine.append_many([Draft("allowlist/0", 1, AllowlistVerified(owner_hotkey=owner, digest="d" * 64, interval=INTERVAL,
                                                                  validators=tuple(ring)))])
    async with Chain(f"sim:{sim.path}") as chain:  # the SDK's first import is not a step's cost
        await chain.head()
    epoch = 0

    def produce(epoch: int) -> None:
        """One epoch of the network's work: the observer's own observations, then a task every
        rotation by its rightful sampler, appended through each sampler's real log."""
        start = (epoch - 1) * LENGTH
        if (epoch - 1) % 5 == 0:
            mine.append_many([Draft(f"metagraph/{start}", start + 1, MetagraphObserved(
                netuid=NETUID, owner_hotkey=owner, hotkeys=(owner, me, *miners)))] + [
                Draft(f"miner/{m}/{start}", start + 1, MinerChecked(hotkey=m, uid=uids[m], commit_block=uids[m],
                                                                   valid=True, model_hash=f"h{m}", heartbeat=True))
                for m in miners])
        for task in range(start // INTERVAL, start // INTERVAL + tasks_per_epoch):
            sampler = ring[task % n_validators]
            block = task * INTERVAL + 1
            drafts = [Draft(f"task/{task}/opened", block, TaskOpened(
                task_id=task, interval=INTERVAL, sampler=sampler, block_hash="0x" + "ab" * 32,
                source_key=f"src/{task}.mp4", clip_start_ms=0, clip_ms=5000, prompt="A harbour at dusk.",
                prompt_model="gemini", prompt_version="describe/v1", miners=tuple(miners)))]
            drafts += [Draft(f"verdict/{task}/{m}", block + 4, VerdictRecorded(
                task_id=task, miner=m, passed=(task * 7 + i * 13) % 100 >= 40 + i % 30, overall=70,
                aspects=aspects, judge_model="gemini", prompt_version="evaluate/v1",
                reasoning="Motion is coherent; minor flicker near the end.")) for i, m in enumerate(miners)]
            logs[sampler].append_many(drafts)

    async def step() -> None:
        async with Chain(f"sim:{sim.path}") as chain:
            result = await weight_setter.step(log_=mine, chain=chain, wallet=observer, netuid=NETUID,
                                              consensus=DEFAULT)
        assert result.scored, result

    # Warm-up: the history a validator holds after its first days, before month 1. A real month
    # is ~1,200 epochs, so month 1 of a real year is far past the lookback floor; the fold's state
    # is bounded by that floor (`max_lookback_blocks`), and only past it is a steady loop steady.
    t0 = time.perf_counter()
    for _ in range(warmup_epochs):
        epoch += 1
        produce(epoch)
        for h in ring:
            await outs[h].push()
        await mirror_in.sync(block=epoch * LENGTH)
    if warmup_epochs:
        sim.advance_to(epoch * LENGTH + 3)
        t = time.perf_counter()
        await step()  # the cold decision over the warm-up's history, then warm steps from month 1
        cold_s = time.perf_counter() - t
        await outs[me].push()
        await api_mirror.sync()
        t = time.perf_counter()
        api.refresh()
        api.decision(me)
        api_cold_s = time.perf_counter() - t
        print(f"warm-up: {warmup_epochs} epochs ({epoch * LENGTH:,} blocks, lookback {DEFAULT.window.max_lookback_blocks:,}),"
              f" {mine.count():,} events in {time.perf_counter() - t0:.0f} s; cold step {cold_s:.2f} s, "
              f"API cold start {api_cold_s:.2f} s")
    for month in range(1, 13):
        syncs: list[float] = []
        idles: list[float] = []
        steps: list[float] = []
        apis: list[float] = []
        ranks: list[float] = []
        for _ in range(epochs_per_month):
            epoch += 1
            produce(epoch)
            for h in ring:
                await outs[h].push()
            t = time.perf_counter()
            await mirror_in.sync(block=epoch * LENGTH)
            sync_s = time.perf_counter() - t
            # An idle sync is a few milliseconds: the median of five, so one scheduling hiccup of
            # the shared machine is not read as growth.
            idle_runs = []
            for _ in range(5):
                t = time.perf_counter()
                idle = await mirror_in.sync(block=epoch * LENGTH)
                idle_runs.append(time.perf_counter() - t)
                assert all(r.imported == 0 and r.objects == 1 for r in idle), idle  # one small request per peer
            idle_s = _median(idle_runs)
            sim.advance_to(epoch * LENGTH + 3)
            t = time.perf_counter()
            await step()
            step_s = time.perf_counter() - t
            await outs[me].push()
            # the owner's API after each epoch (it polls), and `get-rank` on the new decision
            await api_mirror.sync()
            t = time.perf_counter()
            api.refresh()
            api.decision(me)
            apis.append(time.perf_counter() - t)
            for _ in range(3):  # a few milliseconds each: three a epoch, so a month's median has nine
                t = time.perf_counter()
                rank = CliRunner().invoke(cli, ["get-rank", "--json", "--db", mine.path])
                ranks.append(time.perf_counter() - t)
                assert rank.exit_code == 0, rank.output
            syncs.append(sync_s)
            idles.append(idle_s)
            steps.append(step_s)
        # month's end: `replay` of the newest epoch on the observer's log as it is now
        t = time.perf_counter()
        again = CliRunner().invoke(cli, ["replay", str(epoch), "--db", mine.path])
        replay_s = time.perf_counter() - t
        assert again.exit_code == 0, again.output
        rank_s, api_s = _median(ranks), _median(apis)
        plain_s = plain_decode(mine.path)
        # A baseline of constant work, measured now: the log's first two epochs of events, decoded
        # five times (the median). The machine is shared, so the curve is read over it too.
        unit_s = _median([plain_decode(mine.path, 2 * unit_rows) for _ in range(5)])
        import os

        load = os.getloadavg()[0]
        point = {"sync": _median(syncs), "idle": _median(idles), "step": _median(steps), "rank": rank_s,
                 "api": api_s, "replay": replay_s, "unit": unit_s, "plain": plain_s, "load": load}
        curve.append(point)
        print(f"{month:>5} {mine.count():>9,} {load:5.1f} {plain_s:8.3f} {unit_s:7.4f} {point['sync']:7.3f} "
              f"{point['idle']:7.3f} {point['step']:7.3f} {rank_s:7.3f} {api_s:7.3f} {replay_s:8.3f} "
              f"{point['step'] / plain_s:10.3f} {replay_s / plain_s:12.3f}")
    print("\nflatness, month 12 / month 1 (target <= 1.5x for every steady-loop cost; the sync, idle sync, "
          "step, get-rank and API refresh are each month's median; 'per unit' divides each cost by the "
          "same moment's unit baseline):")
    first, last = curve[0], curve[-1]
    for name in ("sync", "idle", "step", "rank", "api"):
        raw = last[name] / first[name]
        unit = (last[name] / last["unit"]) / (first[name] / first["unit"])
        ok = "ok" if min(raw, unit) <= 1.5 else "OVER"
        print(f"  {name:6} {first[name]:8.4f} s -> {last[name]:8.4f} s  raw {raw:5.2f}x  per unit {unit:5.2f}x  {ok}")
    print(f"  (replay EPOCH reads the history its decision read, by design: {first['replay']:.3f} s -> "
          f"{last['replay']:.3f} s, against a full plain decode {first['plain']:.3f} s -> {last['plain']:.3f} s)")
    for lg in [*logs.values(), api_log]:
        lg.close()
    for st in stores.values():
        await st.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, action="append", help="network sizes (default: 16 and 64)")
    parser.add_argument("--miners", type=int, default=256)
    parser.add_argument("--epochs-per-month", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="epochs of history before month 1 (default: the consensus's lookback, "
                             "max_lookback_blocks / epoch length, + 1; 0: none)")
    args = parser.parse_args()
    from leoma.log.consensus import DEFAULT

    warmup = args.warmup_epochs
    if warmup is None:
        warmup = -(-DEFAULT.window.max_lookback_blocks // LENGTH) + 1
    for n in args.validators or [16, 64]:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(simulate(n, args.miners, args.epochs_per_month, Path(tmp), warmup))


if __name__ == "__main__":
    sys.exit(main())
