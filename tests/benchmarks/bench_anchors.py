"""Benchmark: what the anchored rule adds to a decision, on the real-size scoring log (issue 16).

    python tests/benchmarks/bench_anchors.py                          # 64 validators, 256 miners, ~1M events
    python tests/benchmarks/bench_anchors.py --validators 16 --tasks 400   # a quick small run
    python tests/benchmarks/bench_anchors.py --db PATH                # an existing realsize fixture

The log is `realsize.py`'s (built once, cached under the system temp dir), opened read-only:
nothing is written to it. Each figure is measured in a fresh child process, `--runs` times:

* `plain`: the cold decision as the weight setter makes it today (`weight_setter.fold_to` from
  no checkpoint, then `EpochFold.decide`): the baseline;
* `anchored`: the same epoch under `[anchors] enabled`: `services.anchored.decide_anchored`
  from no checkpoint, with one anchor per validator per past epoch (each validator's last event
  at or before each cutoff, as an honest validator anchors): the check that every anchored
  event is held, the per-origin fold of exactly the anchored events and the no-backdating rule;
* `read`: reading every validator's anchor at the cutoff block (`CommitmentOf` at a block,
  through the real SDK) from a simulated chain holding one anchor per validator, and `commit`:
  one anchor committed (`anchors.anchor_step`): the chain work the rule adds per epoch.

Target (issue 16): (anchored + read + commit) / plain <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realsize  # noqa: E402

PATHS = ("plain", "anchored", "chain")


def _consensus():  # type: ignore[no-untyped-def]
    from leoma.log.consensus import DEFAULT, replace_leaf

    return replace_leaf(DEFAULT, "anchors.enabled", True)


def _observations(log, vals: list[str], epoch: int, consensus):  # type: ignore[no-untyped-def]
    """One `AnchorsObserved` per epoch up to `epoch`: each validator's last event at or before each cutoff."""
    from leoma.log.events import AnchorEntry, AnchorsObserved

    length, margin = realsize.EPOCH_LEN, consensus.anchors.cutoff_margin
    names = log.origin_names()
    best: dict[tuple[str, int], int] = {}
    for oid, oseq, block in log.conn.execute("SELECT origin_id, origin_seq, block FROM events"):
        e = max(1, -(-(block + margin) // length))
        key = (names[oid], e)
        if best.get(key, 0) < oseq:
            best[key] = oseq
    out = []
    upto = {v: 0 for v in vals}
    for e in range(1, epoch + 1):
        cutoff = consensus.anchor_cutoff(e)
        entries = []
        for v in vals:
            upto[v] = max(upto[v], best.get((v, e), 0))
            pos = log.position(v, upto[v]) if upto[v] else None
            entries.append(AnchorEntry(origin=v, size=upto[v], head=pos[1], block=cutoff - 1) if pos
                           else AnchorEntry(origin=v))
        out.append(AnchorsObserved(epoch=e, cutoff_block=cutoff, validators=tuple(vals), anchors=tuple(entries)))
    return out


def measure(name: str, path: str, validators: int, miners: int, tasks: int) -> dict:
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import EventLog

    vals, _mins, own = realsize.names(validators, miners)
    epoch = realsize.last_epoch(tasks)
    epoch_block = epoch * realsize.EPOCH_LEN
    extra: dict = {}
    if name == "plain":
        from leoma.services import weight_setter

        log = EventLog(path, own=own, readonly=True)
        t = time.perf_counter()
        last = log.last_seq()
        frontier = log.frontier(until_seq=last)
        fold = weight_setter.fold_to(log, own, last, fresh=True)
        decision = fold.decide(epoch, epoch_block, realsize.NETUID, DEFAULT, frontier)
        seconds = time.perf_counter() - t
        extra.update(winner_uid=decision.winner_uid, window=len(decision.window))
    elif name == "anchored":
        from leoma.services.anchored import Held, decide_anchored

        consensus = _consensus()
        log = EventLog(path, own=own, readonly=True)
        history = _observations(log, vals, epoch, consensus)  # setup: what the log holds as anchors_observed
        t = time.perf_counter()
        decision = decide_anchored(log, epoch=epoch, epoch_block=epoch_block, netuid=realsize.NETUID,
                                   consensus=consensus, observed=history[-1], history=history, save=False, fresh=True)
        seconds = time.perf_counter() - t
        assert not isinstance(decision, Held), decision
        extra.update(winner_uid=decision.winner_uid, window=len(decision.window), late=len(decision.late_tasks))
    elif name == "chain":
        import asyncio

        seconds, extra = asyncio.run(_chain(vals))
    else:
        raise SystemExit(f"unknown path {name}")
    return {"name": name, "seconds": seconds, **extra}


async def _chain(vals: list[str]) -> tuple[float, dict]:
    """Read every validator's anchor at a cutoff from a simulated chain through the SDK; commit one."""
    from leoma.adapters.chain import Chain
    from leoma.adapters.signing import keypair_from_uri
    from leoma.adapters.simchain import SimChain
    from leoma.log.eventlog import EventLog
    from leoma.mirror import anchors

    consensus = _consensus()
    with tempfile.TemporaryDirectory() as tmp:
        wallets = [keypair_from_uri(f"//Bench{i}") for i in range(len(vals))]
        sim = SimChain.create(Path(tmp) / "chain.jsonl", owner=wallets[0].ss58_address, clock="manual",
                              start_block=1000, netuid=realsize.NETUID, tempo=realsize.EPOCH_LEN - 1)
        for w in wallets:
            sim.register(w.ss58_address, stake=10**12, validator_permit=True)
        async with Chain(f"sim:{sim.path}") as chain:
            for i, w in enumerate(wallets):
                await chain.set_commitment_fields(w, realsize.NETUID, [anchors.payload(1000 + i, f"{i:064x}")])
            cutoff = sim.head()
            t = time.perf_counter()
            read = [await anchors.read_anchor(chain, realsize.NETUID, w.ss58_address, cutoff) for w in wallets]
            reading = time.perf_counter() - t
            log = EventLog(Path(tmp) / "own.db", own=wallets[0].ss58_address)
            sim.advance_to(consensus.anchor_cutoff(anchors.anchor_epoch(sim.head(), consensus)) - 2)
            t = time.perf_counter()
            done = await anchors.anchor_step(log, chain, wallets[0], realsize.NETUID, consensus, published=(5, "ab" * 32))
            committing = time.perf_counter() - t
            log.close()
    assert all(a.size > 0 for a in read) and done is not None and done.kind_name() == "anchor_committed"
    return reading + committing, {"read_s": round(reading, 4), "commit_s": round(committing, 4), "anchors": len(read)}


def run_child(name: str, path: Path, args: argparse.Namespace) -> dict:
    return realsize.run_child(__file__, name, path, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=64)
    parser.add_argument("--miners", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=3840)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--db", help="an existing realsize fixture of this shape (default: build or reuse the cache)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.db, args.validators, args.miners, args.tasks)))
        return
    path = Path(args.db) if args.db else realsize.ensure(args.validators, args.miners, args.tasks)
    results: dict[str, list[dict]] = {}
    for _ in range(args.runs):
        for name in PATHS:
            results.setdefault(name, []).append(run_child(name, path, args))
    print(f"log: {path.name}, {path.stat().st_size / 1e6:.0f} MB, {args.validators} validators")
    print(f"{'run':>3} {'plain s':>8} {'anchored s':>10} {'chain s':>8} {'ratio':>6}  target <= 1.1")
    for i in range(args.runs):
        p, a, c = (results[n][i] for n in PATHS)
        ratio = (a["seconds"] + c["seconds"]) / p["seconds"]
        same = (p["winner_uid"], p["window"]) == (a["winner_uid"], a["window"])
        print(f"{i + 1:>3} {p['seconds']:8.3f} {a['seconds']:10.3f} {c['seconds']:8.3f} {ratio:6.3f}  "
              f"same winner and window: {same}; anchored alone {a['seconds'] / p['seconds']:.3f}x; "
              f"read {c['read_s']} s for {c['anchors']} anchors, commit {c['commit_s']} s; late {a['late']}")


if __name__ == "__main__":
    main()
